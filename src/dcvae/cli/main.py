"""The `dcvae` command. Each subcommand only builds a configuration or loads a checkpoint, then calls the library."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from ..config import PRESETS
from ..errors import UserError


def _config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help=f"named experiment: {', '.join(PRESETS)}")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file with model/objective/data/train sections")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override one setting, e.g. --set train.lr=1e-4 (repeatable)")


def _resolve(args: argparse.Namespace):
    from ..config import parse_set_arguments, resolve
    return resolve(args.preset, args.config, parse_set_arguments(args.overrides))


def cmd_train(args: argparse.Namespace) -> int:
    from ..config import Config, apply_overrides, parse_set_arguments
    from ..training import train

    if args.resume is not None:
        if args.out is None and args.resume is True:
            raise UserError("--resume without a path needs --out RUN_DIR (the run to continue)")
        run_dir = Path(args.out) if args.out else _run_dir_of(Path(args.resume))
        config_path = run_dir / "config.json"
        if not config_path.is_file():
            raise UserError(f"{run_dir} holds no run to resume (no config.json); start one with dcvae train --out")
        if args.preset or args.config:
            raise UserError("--resume continues the run's own config.json; drop --preset/--config "
                            "(use --set train.KEY=VALUE for what may change)")
        cfg = Config.from_dict(json.loads(config_path.read_text()))
        apply_overrides(cfg, parse_set_arguments(args.overrides))
        cfg.validate()
    else:
        if not (args.preset or args.config):
            raise UserError(f"say what to train: --preset NAME ({', '.join(PRESETS)}) or --config FILE")
        cfg = _resolve(args)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(args.out) if args.out else Path("runs") / f"{args.preset or 'run'}-{stamp}"
    if args.dry_run:
        print(cfg.to_json())
        return 0
    summary = train(cfg, run_dir, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:   # under torchrun / accelerate launch only rank 0 reports
        print(json.dumps(summary, indent=2))
        print(f"run folder: {run_dir}")
    return 0


def _run_dir_of(checkpoint: Path) -> Path:
    """checkpoints/iter-N -> the run folder; a run folder stays itself."""
    if (checkpoint / "config.json").is_file() and (checkpoint / "checkpoints").is_dir():
        return checkpoint
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent
    return checkpoint


def cmd_info(args: argparse.Namespace) -> int:
    from ..networks import build_networks, count_parameters

    cfg = _resolve(args)
    nets = build_networks(cfg.model)
    info = {"params": {name: count_parameters(getattr(nets, name)) for name in ("encoder", "decoder", "discriminator")},
            "config": cfg.to_dict()}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for name, n in info["params"].items():
            print(f"{name:>14}: {n:,} parameters")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcvae", description="DC-VAE: train, inspect and use models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (new run, or --resume)")
    _config_arguments(p)
    p.add_argument("--out", help="run folder (default runs/PRESET-TIMESTAMP)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                   help="continue the run in --out from its newest valid checkpoint, or from PATH")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("info", help="parameter counts and resolved config")
    _config_arguments(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    from . import ablate, bench, evaluate, images, probe, serve
    images.add_parsers(sub)
    evaluate.add_parser(sub)
    probe.add_parser(sub)
    ablate.add_parser(sub)   # ablate and sweep-negatives
    serve.add_parser(sub)
    bench.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(name)s: %(message)s")
    try:
        return args.func(args)
    except UserError as e:
        print(f"dcvae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dcvae: interrupted", file=sys.stderr)
        return 130
    finally:
        if "torch.distributed" in sys.modules:      # only a command that imported torch can have joined a group
            from ..training.distributed import leave_process_group
            leave_process_group()


if __name__ == "__main__":
    sys.exit(main())
