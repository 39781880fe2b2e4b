"""Checks before training: everything that would otherwise fail minutes or days into a run, or after the run folder
was half set up, is reported first, with nothing written.

`preflight()` checks, in this order: that a resumed checkpoint has the same model, objective and data settings, the
output path (not a file, creatable, writable: tested by writing and removing a probe file), what the folder already
holds (another run, or parts of one), the weight files of periodic evaluation, the free disk space against an
estimate of what the run will write, and last the data: the data set is built and its first and last items are read.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..config import FIXED_SECTIONS, Config
from ..data import build_dataset
from ..errors import UserError
from ..networks import build_networks
from . import checkpoint as ckpt

# What a run folder holds besides config.json (see run_dir.py): any of these without a config.json is a run whose
# config was lost, and a new run would mix its files with them (and its checkpoint rotation would delete theirs).
_RUN_ENTRIES = ("checkpoints", "metrics.jsonl", "summary.json", "tensorboard", "images")
_PROBE_NAME = ".dcvae-preflight-probe"


def preflight(cfg: Config, run_dir: str | Path, resume_from: Path | None = None, *, resuming: bool | None = None,
              main: bool = True, processes: int = 1) -> Dataset:
    """Check that training `cfg` into `run_dir` can start and run to the end; return the data set, built and read.

    `resume_from` is the (verified) checkpoint a resumed run continues from, None for a new run; `resuming`
    (default: whether there is a `resume_from`) is also true for a run stopped before its first checkpoint, which
    starts again in its own folder. `main`: this
    process writes the run folder (rank 0); only it checks the folder, the disk and the metric weights, while every
    process builds the data set and reads its first and last items, as every process will read data. `processes`
    is the number of processes sharing each global batch. Raises `UserError` naming the problem and the fix; on
    return and on error the file system is as it was.
    """
    run_dir = Path(run_dir)
    if resume_from is not None:
        _check_checkpoint_config(cfg, resume_from)
    if main:
        _check_output_folder(run_dir)
        _check_existing_run(cfg, run_dir, resuming=resume_from is not None if resuming is None else resuming)
        if cfg.train.eval_every:
            # Imported here: the metric code is only needed by runs that evaluate while training.
            from ..metrics.evaluate import preflight as metrics_preflight
            metrics_preflight(cfg.train.eval_metrics)
        _check_disk_space(cfg, run_dir)
    return _read_data(cfg, processes)


# -- the output folder ---------------------------------------------------------------------------------------------
def _existing_ancestor(path: Path) -> Path:
    """`path` itself if it exists, else the nearest parent that does (where the folder would be created)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_output_folder(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"output path {run_dir} exists and is not a folder; choose another --out")
    target = _existing_ancestor(run_dir)
    if not target.is_dir():
        raise UserError(f"cannot create output folder {run_dir}: {target} is a file, not a folder; "
                        "choose another --out")
    where = (f"output folder {run_dir}" if target == run_dir.absolute() else
             f"cannot create output folder {run_dir}: its parent {target}")
    try:
        _write_probe(target)
    except OSError as e:
        reason = "is on a read-only file system" if e.errno == errno.EROFS else \
            "is not writable" if e.errno in (errno.EACCES, errno.EPERM) else f"cannot be written ({e.strerror})"
        raise UserError(f"{where} {reason}; choose another --out (nothing was written)") from None


def _write_probe(folder: Path) -> None:
    """Create, write and remove a file in `folder`: the only reliable test of writability (os.access says yes to
    root, and knows nothing of read-only mounts or quotas). The folder's times are put back, so that a refused
    start leaves it exactly as it was."""
    before = folder.stat()
    probe = folder / f"{_PROBE_NAME}-{os.getpid()}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, b"dcvae")
        finally:
            os.close(fd)
    finally:
        probe.unlink(missing_ok=True)
        try:
            os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))
        except OSError:
            pass   # not the folder's owner: its modification time moves, its contents do not


def _read_config(path: Path, fix: str) -> dict[str, Any]:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} cannot be read ({type(e).__name__}: {e}); {fix}") from None
    if not isinstance(saved, dict):
        raise UserError(f"{path} is not a dcvae configuration (not a JSON object); {fix}")
    return saved


def _completed(saved: dict[str, Any], path: Path) -> dict[str, Any]:
    try:
        return Config.completed(saved)
    except UserError as e:
        raise UserError(f"{path} is not a configuration this version of dcvae can read ({e})") from None


def _check_existing_run(cfg: Config, run_dir: Path, resuming: bool) -> None:
    if not run_dir.is_dir():
        return
    config = run_dir / "config.json"
    if not config.exists():
        parts = sorted(name for name in _RUN_ENTRIES if (run_dir / name).exists())
        if parts and not resuming:
            raise UserError(f"{run_dir} holds parts of a run ({', '.join(parts)}) but no config.json; choose "
                            "another --out, or restore its config.json and continue it with --resume "
                            "(nothing was changed)")
        return
    saved = _completed(_read_config(config, "choose another --out, or restore that file (nothing was changed)"),
                       config)
    fixed = cfg.differences(saved)
    if resuming:
        if fixed:
            raise UserError(f"cannot continue the run in {run_dir}: it holds a run of another model, objective or "
                            f"data configuration (folder vs now: {fixed}); choose another --out (nothing was changed)")
        return
    if fixed:
        raise UserError(f"{run_dir} already holds a run of another configuration (folder vs now: {fixed}); choose "
                        "another --out (--resume continues a run only with its own model, objective and data "
                        "settings; nothing was changed)")
    changed = cfg.differences(saved, ("train",))
    raise UserError(f"{run_dir} already holds a run{f' (train settings differ: {changed})' if changed else ''}; "
                    "continue it with --resume (--set train.KEY=VALUE changes train settings) or choose another "
                    "--out (nothing was changed)")


def _check_checkpoint_config(cfg: Config, checkpoint: Path) -> None:
    saved = _completed(ckpt.load_config_dict(checkpoint), checkpoint / ckpt.CONFIG_FILE)
    for section in FIXED_SECTIONS:
        diff = cfg.differences(saved, (section,))
        if diff:
            raise UserError(f"cannot resume {checkpoint} with a different {section} configuration "
                            f"(checkpoint vs now: {diff}); only train.* settings may change on resume")


# -- disk space ----------------------------------------------------------------------------------------------------
def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _checkpoint_bytes(cfg: Config) -> int:
    """The size of one checkpoint, from the networks of `cfg`: model.safetensors holds encoder, decoder, EMA
    decoder and discriminator; training_state.pt the two Adam moments of every parameter, the momentum
    discriminator and the negative queues. Small entries (RNG states, counters, JSON) are left to the margin."""
    # Building the networks draws their initial weights from the global generator; the run's own draws must not
    # depend on whether a preflight ran.
    with torch.random.fork_rng(devices=[]):
        nets = build_networks(cfg.model)
    enc, dec, dis = (_tensor_bytes(m.state_dict().values()) for m in (nets.encoder, nets.decoder, nets.discriminator))
    params = _tensor_bytes(p for m in (nets.encoder, nets.decoder, nets.discriminator) for p in m.parameters())
    o, float_bytes = cfg.objective, 4
    queues = o.queue_size * cfg.model.contrastive_dim * len(o.contrastive_layers) * float_bytes
    if o.patch_layer:
        channels = nets.discriminator.trunk.block_shapes[int(o.patch_layer[1:]) - 1][0]
        queues += o.patch_queue_size * channels * float_bytes
    return enc + 2 * dec + dis + 2 * params + dis + queues


def _log_bytes(cfg: Config) -> int:
    """An upper bound on what the logs of a whole run take: per logged iteration a metrics.jsonl line and its
    TensorBoard scalars (~2 KB); per image iteration two grids (80 images) as uncompressed 8-bit pixels, once as
    PNG and once in TensorBoard (PNG is never larger than that by more than its headers)."""
    t, m = cfg.train, cfg.model
    side = m.resolution + 2   # make_grid pads every image by 2
    per_image_write = 2 * 80 * 3 * side * side
    return (t.iterations // t.log_every + 1) * 2048 + (t.iterations // t.image_every + 1) * per_image_write


def _size(n: float) -> str:
    return f"{n / 2**20:.1f} MB" if n < 2**30 else f"{n / 2**30:.2f} GB"


def _check_disk_space(cfg: Config, run_dir: Path) -> None:
    """Checkpoint rotation deletes the oldest checkpoint only after the new one is complete, so a run holds up to
    keep_checkpoints + 1 of them at once; a resumed run already holds some."""
    keep = cfg.train.keep_checkpoints
    each = _checkpoint_bytes(cfg)
    held = len(ckpt.list_checkpoints(run_dir / "checkpoints"))
    count = max(1, keep + 1 - held)
    margin = 1.1   # RNG states, manifests, file-system blocks
    needed = int((count * each + _log_bytes(cfg)) * margin) + (16 << 20)
    where = _existing_ancestor(run_dir)
    free = shutil.disk_usage(where).free
    if free < needed:
        raise UserError(f"not enough disk space for {run_dir}: the run will write about {_size(needed)} "
                        f"({count} checkpoint{'s' if count > 1 else ''} of {_size(each)} with "
                        f"train.keep_checkpoints={keep}, plus logs and images) and {_size(free)} are free on the "
                        f"file system of {where}; free some space, lower train.keep_checkpoints or choose another "
                        "--out (nothing was written)")


# -- data ----------------------------------------------------------------------------------------------------------
def _read_data(cfg: Config, processes: int) -> Dataset:
    dataset = build_dataset(cfg.data, cfg.model.image_channels, cfg.model.resolution)
    n, batch = len(dataset), max(cfg.batch_sizes()) * processes
    # The data stream refuses this too, but only once the run folder is set up (or the growth reaches that batch).
    if n < batch:
        knob = "growth.batch_sizes" if len(cfg.batch_sizes()) > 1 else "train.batch_size"
        raise UserError(f"the data set has {n} images, fewer than one batch of {batch}; add images or lower {knob}")
    # A data set is read lazily: a missing or corrupt file (a truncated STL-10 binary, an unreadable image) would
    # otherwise surface at the first batch that reaches it. The first and last items cover both ends of the files.
    for index in sorted({0, n - 1}):
        try:
            dataset[index]
        except UserError:
            raise
        except Exception as e:   # readers raise almost any exception type on a damaged file
            reason = " ".join(f"{type(e).__name__}: {e}".split())
            raise UserError(f"cannot read item {index} of the data ({dataset.description.split(';')[0]}): {reason}; "
                            "repair or replace the data under data.root") from None
    return dataset
