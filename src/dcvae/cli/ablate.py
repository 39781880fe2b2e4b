"""`dcvae ablate` (paper Table 1 and Figure 3) and `dcvae sweep-negatives` (paper Figure 7): train a set of runs
(reused when finished, resumed when interrupted), evaluate them, and write the table / figures."""
from __future__ import annotations

import argparse
from pathlib import Path

# Written out rather than imported so that building the parser does not import torch (every command builds it).
VARIANT_NAMES = ("vae", "vaegan", "vae-contrastive", "dcvae")


def _config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="mnist",
                   help="preset shared by every run (default mnist; the paper's Table 1 is --preset cifar10)")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file with model/objective/data/train sections")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override a setting for every run, e.g. --set train.iterations=3000 (repeatable)")


def add_parser(subparsers) -> None:
    """Add the `ablate` and `sweep-negatives` subcommands to the `dcvae` parser's subparsers."""
    p = subparsers.add_parser(
        "ablate", help="Table 1 / Figure 3: train VAE, VAE/GAN, VAE-Contrastive and DC-VAE alike, evaluate, compare",
        description="Train one run per variant into OUT/<variant>/ (finished runs are reused, interrupted ones "
                    "resumed), evaluate each (sampling and reconstruction FID/KID/IS, pixel and perceptual "
                    "distance), and write OUT/table1.md, OUT/table1.json and OUT/figure3.png.")
    p.add_argument("--out", required=True, help="folder for the runs and the results")
    _config_arguments(p)
    p.add_argument("--variants", default=",".join(VARIANT_NAMES),
                   help=f"comma-separated variants (default all four: {','.join(VARIANT_NAMES)})")
    p.add_argument("--n", type=int, default=50_000,
                   help="generated images for FID/KID/IS, and reconstructions (default 50000, as the paper)")
    p.add_argument("--n-real", type=int, default=None, help="reference images (default: the whole train split)")
    p.add_argument("--n-recon", type=int, default=None, help="reconstructed test images (default: --n)")
    p.add_argument("--truncation", type=float, default=None,
                   help="clip z to [-t, t] when sampling (the authors' FID code uses 1; default none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the metrics' and the figure's draws (default 0)")
    p.add_argument("--batch-size", type=int, default=64, help="evaluation batch size (default 64)")
    p.add_argument("--figure-images", type=int, default=6, help="images per row of figure3.png (default 6)")
    p.add_argument("--inception", metavar="PATH", help="Inception TorchScript (NVIDIA's file gives IS as well)")
    p.add_argument("--vgg", metavar="PATH", help="VGG-16 weights for the perceptual distance")
    p.add_argument("--device", default="cpu", help="evaluation device: cpu, cuda, cuda:1 ...")
    p.add_argument("--overwrite", action="store_true", help="replace existing table1.{md,json} and figure3.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_ablate)

    p = subparsers.add_parser(
        "sweep-negatives", help="Figure 7: DC-VAE pixel reconstruction error against the number of negatives",
        description="Train a DC-VAE per queue size (and trial) into OUT/queue<K>/ (and OUT/queue<K>-trial<t>/; "
                    "finished runs are reused, interrupted ones resumed), measure each one's pixel reconstruction "
                    "error on the test split (as Table 1's pixel distance), and write OUT/negatives.json and "
                    "OUT/negatives.png (mean over trials, with a 95% confidence interval from two trials on).")
    p.add_argument("--out", required=True, help="folder for the runs and the results")
    _config_arguments(p)
    p.add_argument("--queue-sizes", default="256,1024,4096,8096",
                   help="comma-separated numbers of negatives (objective.queue_size; default 256,1024,4096,8096)")
    p.add_argument("--trials", type=int, default=1,
                   help="independently trained models per queue size, seeds train.seed + 0, 1, ... (default 1)")
    p.add_argument("--n", type=int, default=None, help="test images reconstructed (default: the whole test split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the posterior samples (default 0)")
    p.add_argument("--batch-size", type=int, default=64, help="evaluation batch size (default 64)")
    p.add_argument("--device", default="cpu", help="evaluation device: cpu, cuda, cuda:1 ...")
    p.add_argument("--overwrite", action="store_true", help="replace existing negatives.{json,png}")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_sweep_negatives)


def _base_config(args: argparse.Namespace):
    from ..config import parse_set_arguments, resolve
    return resolve(args.preset, args.config, parse_set_arguments(args.overrides))


def run_ablate(args: argparse.Namespace) -> int:
    from ..experiments.ablation import TABLE1_FILES, check_outputs, run_ablation
    from ..experiments.runs import parse_variants

    out = Path(args.out)
    check_outputs(out, TABLE1_FILES, args.overwrite)      # before anything else: nothing is trained to be refused
    variants = parse_variants(args.variants)
    result = run_ablation(_base_config(args), out, variants, n_generated=args.n, n_real=args.n_real,
                          n_recon=args.n_recon, seed=args.seed, truncation=args.truncation,
                          batch_size=args.batch_size, device=args.device, inception_path=args.inception,
                          vgg_path=args.vgg, figure_images=args.figure_images, overwrite=args.overwrite,
                          progress=not args.no_progress)
    print(result["markdown"])
    print(f"wrote {', '.join(result['files'])}")
    return 0


def run_sweep_negatives(args: argparse.Namespace) -> int:
    from ..experiments.ablation import check_outputs
    from ..experiments.negatives import NEGATIVES_FILES, sweep_negatives
    from ..experiments.runs import parse_ints

    out = Path(args.out)
    check_outputs(out, NEGATIVES_FILES, args.overwrite)
    sizes = parse_ints(args.queue_sizes, "--queue-sizes")
    result = sweep_negatives(_base_config(args), out, sizes, trials=args.trials, n=args.n, seed=args.seed,
                             batch_size=args.batch_size, device=args.device, overwrite=args.overwrite,
                             progress=not args.no_progress)
    for row in result["rows"]:
        spread = f" ± {row['ci95']:.2f} (95% CI, {len(row['trials'])} trials)" if row["ci95"] is not None else ""
        print(f"queue {row['queue_size']}: pixel error {row['pixel']:.2f}{spread}")
    for pair in result["paired"]:
        test = f"; paired t = {pair['t']:.2f}, p = {pair['p']:.2f}" if pair["t"] is not None else ""
        print(f"queue {pair['queue_sizes'][0]} minus queue {pair['queue_sizes'][1]}, paired by seed: "
              f"{pair['mean']:.2f} ± {pair['ci95']:.2f} (95% CI, {len(pair['differences'])} pairs{test})")
    print(f"wrote {out / 'negatives.json'} and {out / 'negatives.png'}")
    return 0
