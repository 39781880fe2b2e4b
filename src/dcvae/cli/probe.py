"""`dcvae probe`: paper Table 6 — train (or reuse) models at several latent sizes and trials, probe each linearly."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import UserError

# Written out rather than imported so that building the parser does not import torch; a test checks them, and the
# default (the first), against dcvae.metrics.probe.SCALINGS and DEFAULT_SCALING.
SCALING_NAMES = ("whitened", "standardised")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("probe", help="Table 6: linear-probe error of the latent mean, per latent size")
    p.add_argument("--out", required=True, help="folder for the trained runs and table6.{md,json}")
    p.add_argument("--preset", default="mnist", help="preset of the trained models (default mnist)")
    p.add_argument("--variants", default="dcvae,vae", help="comma-separated variants (default dcvae,vae)")
    p.add_argument("--latent-dims", default="16,32,64", help="comma-separated latent sizes (default 16,32,64)")
    p.add_argument("--trials", type=int, default=5,
                   help="independently trained models per cell, seeds train.seed + 0, 1, ... (default 5)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override a training setting for every run, e.g. --set train.iterations=3000")
    p.add_argument("--runs", nargs="+", metavar="RUN", help="probe these trained runs instead of training")
    p.add_argument("--train-images", type=int, help="fit the classifier on the first N training images (default all)")
    p.add_argument("--test-images", type=int, help="test on the first N test images (default all)")
    p.add_argument("--scaling", choices=SCALING_NAMES, default=SCALING_NAMES[0],
                   help="input of the linear classifier: mu whitened by the train split's PCA (default), or "
                        "standardised per feature (the probe's default before 2026-12-04)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _train_grid(args: argparse.Namespace, out: Path) -> dict[tuple[str, int], list[str]]:
    """Train every (variant, latent size, trial) run that is not finished yet; finished ones are reused and
    interrupted ones resumed, so the command can be stopped and started again."""
    from ..config import apply_overrides, parse_set_arguments, resolve
    from ..experiments.runs import parse_ints, parse_variants, train_or_reuse

    variants = parse_variants(args.variants)
    if args.trials < 1:
        raise UserError(f"--trials must be at least 1, got {args.trials}")
    overrides = parse_set_arguments(args.overrides)
    runs: dict[tuple[str, int], list[str]] = {}
    for variant in variants:
        for dim in parse_ints(args.latent_dims, "--latent-dims"):
            for trial in range(args.trials):
                cfg = resolve(args.preset, None, overrides)
                apply_overrides(cfg, {"objective.variant": variant, "model.latent_dim": dim,
                                      "train.seed": cfg.train.seed + trial})
                run_dir = train_or_reuse(cfg, out / f"{variant}-z{dim}-trial{trial}", progress=not args.no_progress,
                                         label="probe")
                runs.setdefault((variant, dim), []).append(str(run_dir))
    return runs


def run(args: argparse.Namespace) -> int:
    from ..metrics.probe import table6
    from ..model import load
    from ..files import atomic_write_text

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.runs:
        runs: dict[tuple[str, int], list[str]] = {}
        for folder in args.runs:
            cfg = load(folder).config
            runs.setdefault((cfg.objective.variant, cfg.model.latent_dim), []).append(folder)
    else:
        runs = _train_grid(args, out)
    started = time.time()
    result = table6(runs, progress=not args.no_progress, train_images=args.train_images,
                    test_images=args.test_images, scaling=args.scaling)
    result["probe_seconds"] = round(time.time() - started, 1)
    result["date"] = time.strftime("%Y-%m-%d")
    atomic_write_text(out / "table6.json", json.dumps(result, indent=2))
    atomic_write_text(out / "table6.md", result["markdown"] + "\n")
    print(result["markdown"])
    print(f"wrote {out / 'table6.md'} and {out / 'table6.json'}")
    return 0
