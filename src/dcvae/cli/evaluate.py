"""`dcvae evaluate`: FID / KID / IS (sampling and reconstruction), pixel and perceptual distances, perceptual path
length and the linear-probe error of a checkpoint."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UserError


# Written out rather than imported so that building the parser does not import torch (every command builds it);
# tests check them against dcvae.metrics.evaluate.METRICS / DEFAULT_METRICS and networks.RESIZERS.
METRIC_NAMES = ("fid", "kid", "is", "recon_fid", "pixel", "perceptual", "recon_kid", "recon_is", "lpips", "ppl_z",
                "ppl_encoded", "ppl_z_end", "ppl_encoded_end", "probe_error")
DEFAULT_METRIC_NAMES = ("fid", "kid", "is", "recon_fid", "pixel", "perceptual")
RESIZER_NAMES = ("bilinear", "bicubic", "nearest")


def add_parser(subparsers) -> None:
    """Add the `evaluate` subcommand to the `dcvae` parser's subparsers."""
    p = subparsers.add_parser(
        "evaluate", help="FID, KID, IS, reconstruction FID, pixel and perceptual distances, with the protocol",
        description="Evaluate a checkpoint. Weights are looked up offline first (--inception/--vgg/--lpips, then "
                    "DCVAE_INCEPTION/DCVAE_VGG16/DCVAE_LPIPS, then $DCVAE_CACHE/weights, then installed packages); "
                    "reference statistics are cached in $DCVAE_CACHE/stats (default ~/.cache/dcvae).")
    p.add_argument("checkpoint", help="run folder (its newest checkpoint) or checkpoint folder")
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated, from: {', '.join(METRIC_NAMES)}, or all (default "
                        f"{','.join(DEFAULT_METRIC_NAMES)}; "
                        "by default IS is left out with a note when the Inception weights have no classifier)")
    p.add_argument("--n", type=int, default=50_000,
                   help="generated images, and latent pairs for ppl_z (default 50000, as the paper)")
    p.add_argument("--n-real", type=int, default=None, help="reference images (default: the whole split)")
    p.add_argument("--n-recon", type=int, default=None,
                   help="reconstructions, cycling over the test split, and image pairs for ppl_encoded "
                        "(default: --n)")
    p.add_argument("--split", default="train", help="reference split for FID/KID (default train, as the paper)")
    p.add_argument("--recon-split", default="test", help="split that is reconstructed (default test)")
    p.add_argument("--recon-z", choices=("sample", "mean"), default="sample",
                   help="z for reconstructions: sampled from q(z|x) (default, as the authors) or its mean")
    p.add_argument("--truncation", type=float, default=None,
                   help="clip z to [-t, t] when sampling (the authors' FID code uses 1; default none)")
    p.add_argument("--prior", choices=("standard", "fitted"), default="standard",
                   help="z for fid/kid/is: N(0, I) (default, the paper's) or a Gaussian fitted to the encoder's "
                        "aggregate posterior on the train split (a deviation; recorded in the protocol)")
    p.add_argument("--prior-fit-n", type=int, default=None,
                   help="train images the fitted prior is estimated from (default: all)")
    p.add_argument("--decoder", choices=("ema", "live"), default="ema", help="EMA (default) or live decoder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--resizer", choices=RESIZER_NAMES, default="bilinear",
                   help="resize to 299x299 for Inception (default bilinear, torch F.interpolate, no antialias)")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--is-splits", type=int, default=10)
    p.add_argument("--inception", metavar="PATH", help="Inception TorchScript (else $DCVAE_INCEPTION, cache, ...)")
    p.add_argument("--vgg", metavar="PATH", help="VGG-16 weights (else $DCVAE_VGG16, cache, ...)")
    p.add_argument("--lpips", metavar="PATH", help="LPIPS VGG heads (else $DCVAE_LPIPS, cache, ...)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--out", help="JSON file to write the result to (refused if it exists, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-cache", action="store_true", help="recompute reference statistics, do not cache them")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..metrics.evaluate import evaluate, parse_metrics

    metrics = parse_metrics(args.metrics) if args.metrics is not None else None
    if args.out and Path(args.out).exists() and not args.overwrite:
        raise UserError(f"{args.out} already exists; choose another --out or pass --overwrite")
    result = evaluate(
        args.checkpoint, metrics=metrics, n_generated=args.n, n_real=args.n_real, reference_split=args.split,
        decoder=args.decoder, truncation=args.truncation, seed=args.seed, batch_size=args.batch_size,
        device=args.device, inception_path=args.inception, vgg_path=args.vgg, lpips_path=args.lpips,
        progress=not args.no_progress, out=args.out, overwrite=args.overwrite, n_recon=args.n_recon,
        recon_split=args.recon_split, recon_z=args.recon_z, resizer=args.resizer, kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size, is_splits=args.is_splits, use_cache=not args.no_cache,
        prior=args.prior, prior_fit_n=args.prior_fit_n)
    print(json.dumps(result, indent=2))
    if args.out:
        print(f"wrote {args.out}")
    return 0
