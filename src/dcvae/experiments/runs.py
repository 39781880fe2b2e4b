"""Runs of a multi-run experiment (probe, ablate, sweep-negatives): train a configuration into a folder unless that
folder already holds the finished run, resuming it if it was interrupted, so a grid can be stopped and started again.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..config import VARIANTS, Config
from ..errors import UserError
from ..training.run_dir import read_summary

# What `train` itself puts in a run folder before its first checkpoint: a folder holding only these (and no
# checkpoint) is a run that was stopped before it saved anything, and may be started again from scratch.
_RUN_FILES = ("config.json", "metrics.jsonl", "tensorboard", "images", "checkpoints", "summary.json")


def parse_ints(text: str, option: str) -> list[int]:
    """"16,32,64" -> [16, 32, 64]; UserError naming `option` for anything that is not a positive integer."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} expects comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"{option} needs positive integers, got {text!r}")
    return values


def parse_variants(text: str, option: str = "--variants") -> list[str]:
    """"vae,dcvae" -> ["vae", "dcvae"] (validated against config.VARIANTS, repeats dropped, order kept)."""
    variants = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    for v in variants:
        if v not in VARIANTS:
            raise UserError(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    if not variants:
        raise UserError(f"{option} names no variant; choose from {', '.join(VARIANTS)}")
    return variants


def finished_iterations(run_dir: Path) -> int | None:
    """The iteration count in run_dir/summary.json (written when training ends), or None if there is none."""
    try:
        return int(read_summary(run_dir)["iterations"])
    except (KeyError, TypeError, ValueError):
        return None


def _check_same_run(cfg: Config, run_dir: Path) -> None:
    """Refuse to reuse or resume a folder that holds a run of another model, objective or data set: its numbers
    would be silently reported as this configuration's."""
    path = run_dir / "config.json"
    try:
        saved: dict[str, Any] = Config.completed(json.loads(path.read_text()))
    except (OSError, ValueError, AttributeError, UserError):
        return                  # no readable config: train() decides (it refuses or starts the run)
    diff = cfg.differences(saved)
    if diff:
        raise UserError(f"{run_dir} holds a run of a different configuration (folder vs now: {diff}); "
                        "choose another --out or delete that run folder")


def train_or_reuse(cfg: Config, run_dir: str | Path, progress: bool = True, label: str = "train") -> Path:
    """Make run_dir hold `cfg` trained for cfg.train.iterations generator iterations; return run_dir.

    A finished run (summary.json with at least that many iterations) is reused untouched; an interrupted one is
    resumed from its newest checkpoint (bit-for-bit the uninterrupted run); one stopped before its first checkpoint
    is started again; a folder holding another configuration is refused with a UserError. `label` prefixes the one
    line printed when training starts.
    """
    from ..training import train
    from ..training.checkpoint import list_checkpoints

    cfg.validate()
    run_dir = Path(run_dir)
    if run_dir.exists():
        _check_same_run(cfg, run_dir)
    done = finished_iterations(run_dir)
    if done is not None and done >= cfg.train.iterations:
        return run_dir
    resume = bool(list_checkpoints(run_dir / "checkpoints"))
    if not resume and (run_dir / "config.json").exists():
        extra = sorted(p.name for p in run_dir.iterdir() if p.name not in _RUN_FILES
                       and not p.name.startswith("config.resume-"))
        if extra:
            raise UserError(f"{run_dir} holds a run without a checkpoint and other files ({', '.join(extra)}); "
                            "move them away or choose another --out")
        # Stopped before its first checkpoint: nothing to resume, and train() refuses a folder with a config.
        shutil.rmtree(run_dir)
    print(f"{label}: training {run_dir.name} ({'resuming' if resume else 'new'})", flush=True)
    train(cfg, run_dir, resume=True if resume else None, progress=progress)
    return run_dir
