"""Where in spatial frequency the images' power lies: real test images against each model's samples and
reconstructions, as the share of a set's power in three bands and its power per band over the real images'.

Table 1's question "why are DC-VAE's samples scored worse than VAE/GAN's?" has a guess in docs/results.md: the
instance loss on D's features rewards fine texture, and the decoder carries it into samples as high-frequency detail
that real images do not have. This measures it. For every set, each image (in [-1, 1]) minus its own mean is
Fourier-transformed and its power |F(u, v)|^2 / (H W)^2 averaged over images and channels (by Parseval, summed
over all (u, v) it is the mean pixel variance); (u, v) are split by radius r in cycles per pixel into low (r < 1/8), mid
(1/8 <= r < 1/4) and high (r >= 1/4, up to the corners' sqrt(2)/2) bands. Samples: z ~ N(0, I) untruncated, the
EMA decoder (--prior fitted: z from the Gaussian fitted to the aggregate posterior of the first --prior-fit-n
training images, as `dcvae evaluate --prior fitted`); reconstructions: the posterior mean of the first N test images
decoded. Prints JSON to stdout and a markdown table to stderr.

    .venv/bin/python scripts/spectra.py vaegan=RUN/vaegan dcvae=RUN/dcvae [--n 1000] [--seed 0]
        [--prior fitted --prior-fit-n 10000] > spectra.json
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from dcvae.data import build_dataset
from dcvae.errors import UserError
from dcvae.latent import fit_aggregate_posterior
from dcvae.model import load

# band edges in cycles per pixel; the last band runs to the corners of the spectrum (radius sqrt(2)/2)
BANDS = {"low": (0.0, 0.125), "mid": (0.125, 0.25), "high": (0.25, 1.0)}


def power_spectrum(images: torch.Tensor) -> torch.Tensor:
    """images [N, C, H, W] -> the mean power spectrum [H, W] of the images less their per-image, per-channel mean:
    |FFT2|^2 / (H W)^2, averaged over N and C, computed in float64 (by Parseval its sum is the images' pixel variance,
    averaged over N and C)."""
    x = images.double()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    h, w = x.shape[-2:]
    return (torch.fft.fft2(x).abs().square() / (h * w) ** 2).mean(dim=(0, 1))


def band_powers(spectrum: torch.Tensor) -> dict[str, float]:
    """spectrum [H, W] (as `power_spectrum` returns) -> {band: summed power}, the bands of BANDS by radius in cycles
    per pixel (numpy's fftfreq convention: a frequency of H/2 counts as -1/2)."""
    h, w = spectrum.shape
    fy = torch.fft.fftfreq(h, dtype=torch.float64).view(h, 1)
    fx = torch.fft.fftfreq(w, dtype=torch.float64).view(1, w)
    radius = (fy.square() + fx.square()).sqrt()
    return {name: float(spectrum[(radius >= lo) & (radius < hi)].sum()) for name, (lo, hi) in BANDS.items()}


def describe(spectrum: torch.Tensor, reference: dict[str, float] | None) -> dict[str, float]:
    """Total power, each band's share of it and, given the real images' band powers, each band's power over theirs."""
    bands = band_powers(spectrum)
    total = sum(bands.values())
    row = {"power": round(total, 6), **{f"{b}_share": round(p / total, 5) for b, p in bands.items()}}
    if reference is not None:
        row.update({f"{b}_vs_real": round(p / reference[b], 4) for b, p in bands.items()})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN", help="a name and a run or checkpoint folder")
    parser.add_argument("--n", type=int, default=1000, help="images per set (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples' z (default 0)")
    parser.add_argument("--prior", choices=("standard", "fitted"), default="standard",
                        help="z of the samples: N(0, I) (default) or the aggregate posterior's fitted Gaussian")
    parser.add_argument("--prior-fit-n", type=int, default=None,
                        help="training images the fitted prior is estimated from (default: all)")
    args = parser.parse_args()
    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}")
    if args.prior_fit_n is not None and args.prior != "fitted":
        raise UserError("--prior-fit-n sets the images of the fitted prior; add --prior fitted")
    models = {}
    for item in args.runs:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise UserError(f"{item!r} is not NAME=RUN; e.g. dcvae=runs/t1/dcvae")
        models[name] = load(path)
    first = next(iter(models.values()))
    m, d = first.config.model, first.config.data
    test_set = build_dataset(d, m.image_channels, m.resolution, split="test")
    if args.n > len(test_set):
        raise UserError(f"--n {args.n} is more than the {len(test_set)} test images of {d.dataset}")
    real = torch.stack([test_set[i][0] for i in range(args.n)])
    real_spectrum = power_spectrum(real)
    reference = band_powers(real_spectrum)
    train_set = build_dataset(d, m.image_channels, m.resolution, split="train") if args.prior == "fitted" else None
    result = {"n": args.n, "seed": args.seed, "prior": args.prior, "prior_fit_n": args.prior_fit_n,
              "bands_cycles_per_pixel": BANDS, "data": d.dataset,
              "real_test_images": describe(real_spectrum, None), "models": {}}
    for name, model in models.items():
        if (model.config.data.dataset, model.config.model.resolution) != (d.dataset, m.resolution):
            raise UserError(f"{name} was trained on another data set or resolution than {next(iter(models))}; "
                            "compare runs of one data set")
        prior = None if train_set is None else fit_aggregate_posterior(model, train_set, args.prior_fit_n)
        generator = torch.Generator().manual_seed(args.seed)
        samples = torch.cat([model.sample(min(250, args.n - i), generator=generator, prior=prior)
                             for i in range(0, args.n, 250)])
        recs = torch.cat([model.reconstruct(real[i:i + 250]) for i in range(0, args.n, 250)])
        result["models"][name] = {"checkpoint": str(model.checkpoint), "iteration": model.iteration,
                                  "samples": describe(power_spectrum(samples), reference),
                                  "reconstructions": describe(power_spectrum(recs), reference)}
    print(json.dumps(result, indent=1))
    lines = ["| images | pixel variance | low / mid / high share | low / mid / high power over the real images' |",
             "|---|---|---|---|"]
    rows = [("real test images", result["real_test_images"])] + [
        (f"{name} {kind}", entry[kind]) for name, entry in result["models"].items()
        for kind in ("samples", "reconstructions")]
    for label, row in rows:
        shares = " / ".join(f"{row[f'{b}_share']:.3f}" for b in BANDS)
        ratios = " / ".join(f"{row.get(f'{b}_vs_real', 1.0):.2f}" for b in BANDS)
        lines.append(f"| {label} | {row['power']:.4f} | {shares} | {ratios} |")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except UserError as error:   # a missing checkpoint, a bad NAME=RUN, --n beyond the test set, ...
        sys.exit(f"error: {error}")
