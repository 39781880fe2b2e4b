"""Time the Frechet distance's two exact paths in one run (the figures of docs/design.md, "Frechet distance"):
a reference of 3,000 and N generated 2048-d features (Inception's pool3 size), random with a full-rank reference
covariance; the low-rank path (N x N) against the D x D path, and the reference's square root the latter needs.

    .venv/bin/python scripts/bench_frechet.py [--n 8,1000,2048] [--seed 0]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from dcvae.metrics.distances import covariance_sqrt, feature_statistics, frechet_distance

D = 2048


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", default="8,1000,2048", help="comma-separated numbers of generated images (<= 2048)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    mu1, sigma1 = feature_statistics(rng.normal(size=(3000, D)) @ (rng.normal(size=(D, D)) / 40))
    started = time.perf_counter()
    root1 = covariance_sqrt(sigma1)
    root_s = time.perf_counter() - started
    print(f"reference square root (D x D eigendecomposition, once per reference): {root_s:.2f} s")
    print("| N | D x D path (s) | low-rank path (s) | speed-up (with the root) | relative difference |")
    print("|---|---|---|---|---|")
    for n in (int(v) for v in args.n.split(",")):
        features = np.abs(rng.normal(size=(n, D)))
        mu2, sigma2 = feature_statistics(features)
        factor = (features - mu2) / np.sqrt(n - 1)
        started = time.perf_counter()
        full = frechet_distance(mu1, sigma1, mu2, sigma2, root1=root1)
        full_s = time.perf_counter() - started
        started = time.perf_counter()
        low = frechet_distance(mu1, sigma1, mu2, sigma2, factor2=factor)
        low_s = time.perf_counter() - started
        print(f"| {n} | {full_s:.2f} | {low_s:.3f} | {full_s / low_s:.1f}x ({(full_s + root_s) / low_s:.1f}x) | "
              f"{abs(full - low) / abs(low):.1e} |")


if __name__ == "__main__":
    main()
