"""The run folder: config.json, metrics.jsonl, tensorboard/, images/, checkpoints/, summary.json."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from ..config import Config
from ..errors import UserError
from ..files import atomic_output, atomic_write_text


def prepare_run_dir(run_dir: Path, cfg: Config, resuming: bool) -> None:
    """Create the run folder and write config.json; refuse to start a new run over an existing one."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"output path {run_dir} exists and is not a folder; choose another --out")
    existing = run_dir / "config.json"
    if existing.exists() and not resuming:
        raise UserError(f"{run_dir} already holds a run; continue it with --resume or choose another --out "
                        "(nothing was changed)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {run_dir}: {e.strerror}; choose another --out") from None
    if not os.access(run_dir, os.W_OK):
        raise UserError(f"output folder {run_dir} is not writable; choose another --out")
    if resuming and existing.exists():
        previous = json.loads(existing.read_text())
        if previous != cfg.to_dict():
            # Keep every config the run has had: the first one stays, later ones are numbered.
            n = len(list(run_dir.glob("config.resume-*.json"))) + 1
            atomic_write_text(run_dir / f"config.resume-{n}.json", cfg.to_json())
        return
    atomic_write_text(existing, cfg.to_json())


def write_image_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> torch.Tensor:
    """images [N, C, H, W] in [-1, 1] -> a PNG grid at `path`; returns the grid [3, H', W'] in [0, 1]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(images.detach().float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1), padding=2)
    with atomic_output(path) as tmp:
        save_image(grid, tmp, format="png")
    return grid
