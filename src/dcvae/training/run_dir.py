"""The run folder: config.json, metrics.jsonl, tensorboard/, images/, checkpoints/, summary.json."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..errors import UserError
from ..files import atomic_output, atomic_write_text


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """run_dir/summary.json (written when training ends) as a dict; None if missing or unreadable."""
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def prepare_run_dir(run_dir: Path, cfg: Config, resuming: bool) -> None:
    """Create the run folder and write config.json. Call after `preflight.preflight`, which refuses a folder that
    holds another run, cannot be written or lacks the space."""
    existing = run_dir / "config.json"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:   # the file system changed since the preflight
        raise UserError(f"cannot create output folder {run_dir}: {e.strerror}; choose another --out") from None
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
    from torchvision.utils import make_grid, save_image   # here: torchvision's import costs ~3 s (torch._dynamo)

    path.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(images.detach().float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1), padding=2)
    with atomic_output(path) as tmp:
        save_image(grid, tmp, format="png")
    return grid
