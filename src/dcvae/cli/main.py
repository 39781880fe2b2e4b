"""The `dcvae` command. Each subcommand only builds a configuration or loads a checkpoint, then calls the library."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from ..errors import UserError


def _config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="named experiment: cifar10, stl10, mnist, fashion32")
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
            raise UserError("say what to train: --preset NAME (cifar10, stl10, mnist, fashion32) or --config FILE")
        cfg = _resolve(args)
        run_dir = Path(args.out) if args.out else Path("runs") / f"{args.preset or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
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


def _load(args: argparse.Namespace):
    from ..model import load
    return load(args.checkpoint, decoder=args.decoder, device=args.device)


def _output_path(path: str, overwrite: bool) -> Path:
    out = Path(path)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
    if out.suffix.lower() not in (".png", ".gif"):
        raise UserError(f"--out must end in .png (or .gif where offered), got {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def cmd_sample(args: argparse.Namespace) -> int:
    import torch
    from ..training.run_dir import write_image_grid

    out = _output_path(args.out, args.overwrite)
    model = _load(args)
    images = model.sample(args.n, truncation=args.truncation,
                          generator=torch.Generator(device=model.device).manual_seed(args.seed))
    write_image_grid(images, out, nrow=args.nrow)
    print(f"wrote {args.n} samples to {out}")
    return 0


def _input_images(model, args: argparse.Namespace, count: int):
    """Images from --images (files or a folder) or from the model's data set (--split), [N, C, 32, 32]."""
    import torch
    from ..config import DataConfig
    from ..data import build_dataset

    m = model.config.model
    if args.images:
        paths = [Path(p) for p in args.images]
        if len(paths) == 1 and paths[0].is_dir():
            data = DataConfig(dataset="folder", root=str(paths[0]))
            dataset = build_dataset(data, m.image_channels, m.resolution)
            return torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))])
        from ..data.datasets import load_image
        return torch.stack([load_image(p, m.image_channels, m.resolution) for p in paths])
    data = model.config.data
    dataset = build_dataset(data, m.image_channels, m.resolution, split=args.split)
    return torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))])


def cmd_reconstruct(args: argparse.Namespace) -> int:
    import torch
    from ..training.run_dir import write_image_grid

    out = _output_path(args.out, args.overwrite)
    model = _load(args)
    x = _input_images(model, args, args.n)
    rec = model.reconstruct(x)
    write_image_grid(torch.stack([x.to(rec.device), rec], dim=1).flatten(0, 1), out, nrow=2 * args.per_row)
    print(f"wrote {len(x)} inputs and reconstructions (side by side) to {out}")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from ..training.run_dir import write_image_grid

    out = _output_path(args.out, args.overwrite)
    model = _load(args)
    x = _input_images(model, args, 2 * args.pairs)
    if len(x) < 2 or len(x) % 2:
        raise UserError(f"interpolation needs pairs of images; got {len(x)}")
    a, b = x[0::2], x[1::2]
    frames = model.interpolate(a, b, steps=args.steps)          # [pairs, steps, C, H, W]
    write_image_grid(frames.flatten(0, 1), out, nrow=args.steps)
    print(f"wrote {len(a)} interpolation(s) of {args.steps} steps to {out}")
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

    def checkpoint_args(p: argparse.ArgumentParser, default_out: str) -> None:
        p.add_argument("checkpoint", help="run folder or checkpoint folder")
        p.add_argument("--out", default=default_out, help=f"PNG to write (default {default_out})")
        p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
        p.add_argument("--decoder", choices=("ema", "live"), default="ema", help="EMA (default) or live decoder")
        p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")

    def image_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--images", nargs="+", metavar="PATH", help="image files or one folder (default: data set)")
        p.add_argument("--split", default="test", help="data-set split when --images is not given (default test)")

    p = sub.add_parser("sample", help="random samples from the prior, as a PNG grid")
    checkpoint_args(p, "samples.png")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--nrow", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=None, help="clip z to [-t, t] (the authors' FID uses 1)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("reconstruct", help="inputs and their reconstructions, as a PNG grid")
    checkpoint_args(p, "reconstructions.png")
    image_args(p)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--per-row", type=int, default=8, help="input/reconstruction pairs per row")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("interpolate", help="linear blends between pairs of images, as a PNG grid")
    checkpoint_args(p, "interpolation.png")
    image_args(p)
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.set_defaults(func=cmd_interpolate)

    from . import evaluate, probe
    evaluate.add_parser(sub)
    probe.add_parser(sub)
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


if __name__ == "__main__":
    sys.exit(main())
