"""Checkpoints: inference weights as safetensors + config JSON, and the full training state for exact resume.

A checkpoint is a folder `checkpoints/iter-0001000/` holding
    model.safetensors    encoder.*, decoder.*, decoder_ema.*, discriminator.* (loadable for inference alone)
    config.json          the resolved configuration
    training_state.pt    optimisers, queues, momentum discriminator, counters, every RNG state, data position
                         (plain tensors and containers: loads with torch.load(weights_only=True))
    manifest.json        format version, iteration and the SHA-256 of each file above, written last
It is written into a temporary folder, each file fsynced, then renamed into place in one step, so a reader never
sees half a checkpoint; `checkpoints/latest` names the newest one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import UserError
from ..files import atomic_write_text, fsync_dir

FORMAT_VERSION = 1
MODEL_FILE, CONFIG_FILE, STATE_FILE, MANIFEST_FILE = ("model.safetensors", "config.json", "training_state.pt",
                                                      "manifest.json")
log = logging.getLogger("dcvae.checkpoint")


def _dcvae_version() -> str:
    from .. import __version__
    return __version__


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_checkpoint(checkpoints_dir: Path, iteration: int, weights: dict[str, torch.Tensor], config: dict[str, Any],
                    training_state: dict[str, Any] | None, keep: int) -> Path:
    """Write a checkpoint atomically, point `latest` at it, and delete all but the newest `keep`."""
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    name = f"iter-{iteration:07d}"
    final = checkpoints_dir / name
    # One writer per run (rank 0), so any temporary folder here is the remains of a writer that was killed.
    for stale in checkpoints_dir.glob(".tmp-iter-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = checkpoints_dir / f".tmp-{name}-{os.getpid()}"
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / MODEL_FILE),
              metadata={"format": str(FORMAT_VERSION)})
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    files = [MODEL_FILE, CONFIG_FILE]
    if training_state is not None:
        torch.save(training_state, tmp / STATE_FILE)
        files.append(STATE_FILE)
    for f in files:
        _fsync_file(tmp / f)
    manifest = {"format": FORMAT_VERSION, "dcvae_version": _dcvae_version(), "iteration": iteration,
                "sha256": {f: _sha256(tmp / f) for f in files}}
    atomic_write_text(tmp / MANIFEST_FILE, json.dumps(manifest, indent=2))
    if final.exists():  # same iteration saved again (e.g. the final save right after a periodic one)
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_dir(checkpoints_dir)
    atomic_write_text(checkpoints_dir / "latest", name + "\n")
    for old in list_checkpoints(checkpoints_dir)[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    for partial in checkpoints_dir.glob("iter-*"):   # a deletion above that a kill interrupted
        if not (partial / MANIFEST_FILE).is_file():
            shutil.rmtree(partial, ignore_errors=True)
    return final


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    if not checkpoints_dir.is_dir():
        return []
    return sorted(p for p in checkpoints_dir.iterdir() if p.is_dir() and p.name.startswith("iter-")
                  and (p / MANIFEST_FILE).is_file())


def verify_checkpoint(path: Path, need_state: bool = False) -> dict[str, Any]:
    """Check the manifest and every file's SHA-256; return the manifest or raise UserError saying what is wrong."""
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise UserError(f"{path} is not a dcvae checkpoint (no {MANIFEST_FILE}); pass a checkpoint folder "
                        "(checkpoints/iter-NNNNNNN) or a run folder")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"checkpoint {path} has an unreadable manifest ({e}); use another checkpoint") from None
    if manifest.get("format") != FORMAT_VERSION:
        writer = manifest.get("dcvae_version", "an unknown version")
        raise UserError(f"checkpoint {path} was written by dcvae {writer} in checkpoint format "
                        f"{manifest.get('format')}; this dcvae ({_dcvae_version()}) reads format {FORMAT_VERSION}. "
                        f"Load it with dcvae {writer}, or export its weights there")
    for name, digest in manifest["sha256"].items():
        file = path / name
        if not file.is_file() or _sha256(file) != digest:
            raise UserError(f"checkpoint {path} is corrupt: {name} is missing or does not match its checksum; "
                            "use an earlier checkpoint")
    if need_state and STATE_FILE not in manifest["sha256"]:
        raise UserError(f"checkpoint {path} holds weights only, no training state; it cannot be resumed")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a checkpoint folder already checked by `resolve_checkpoint` (no hashing again)."""
    return json.loads((Path(folder) / MANIFEST_FILE).read_text())


def resolve_checkpoint(path: str | Path, need_state: bool = False) -> Path:
    """A checkpoint folder, a run folder (its newest valid checkpoint) or a checkpoints/ folder -> a verified folder.

    When the newest checkpoint of a run is corrupt, falls back to the previous valid one and says so.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint path {path} does not exist")
    if (path / MANIFEST_FILE).is_file():
        verify_checkpoint(path, need_state)
        return path
    checkpoints_dir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    candidates = list_checkpoints(checkpoints_dir)
    if not candidates:
        raise UserError(f"{path} holds no checkpoint (looked for checkpoints/iter-*/{MANIFEST_FILE})")
    for candidate in reversed(candidates):
        try:
            verify_checkpoint(candidate, need_state)
        except UserError as e:
            log.warning("skipping %s: %s", candidate.name, e)
            continue
        if candidate != candidates[-1]:
            log.warning("newest checkpoint %s is not usable; falling back to %s", candidates[-1].name, candidate.name)
        return candidate
    raise UserError(f"every checkpoint in {checkpoints_dir} is corrupt or incomplete; nothing to load")


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path / MODEL_FILE))
    except (SafetensorError, OSError) as e:
        raise UserError(f"cannot read {path / MODEL_FILE}: {e}; use another checkpoint") from None


def load_config_dict(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {path / CONFIG_FILE}: {e}") from None


def load_training_state(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The training state; `weights_only=True`, so a file that would run code on load is refused."""
    try:
        return torch.load(path / STATE_FILE, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 — torch raises UnpicklingError, RuntimeError, EOFError...
        raise UserError(f"refusing or unable to load {path / STATE_FILE}: {str(e).splitlines()[0]}. "
                        "Training state must be plain tensors (torch.load weights_only=True); "
                        "use a checkpoint written by dcvae") from None


def load_module_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], prefix: str, source: Path) -> None:
    """Load `prefix.*` tensors into `module`, explaining any mismatch instead of a shape traceback."""
    own = module.state_dict()
    theirs = {k[len(prefix) + 1:]: v for k, v in weights.items() if k.startswith(prefix + ".")}
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    shapes = [f"{k}: checkpoint {tuple(theirs[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in theirs and theirs[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        details = "; ".join(filter(None, [
            f"missing {len(missing)} tensors (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})" if unexpected else "",
            f"{len(shapes)} shape mismatches (e.g. {shapes[0]})" if shapes else ""]))
        raise UserError(f"the {prefix} weights in {source} do not fit this architecture: {details}. "
                        "The checkpoint was written for another model configuration; load it with its own config.json")
    module.load_state_dict(theirs)
