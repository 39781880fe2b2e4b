"""Time one generator iteration of a preset (the command behind the figures of docs/results.md dated before
`dcvae bench` existed; `dcvae bench` measures every case in one run and is the command to use now).

    .venv/bin/python scripts/bench_iteration.py [--preset cifar10] [--iterations 1] [--batch-size B]
        [--device cpu|cuda] [--precision fp32,bf16] [--json out.json]
"""
from __future__ import annotations

import argparse
import json

from dcvae.experiments.bench import Case, run_cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cifar10")
    parser.add_argument("--iterations", type=int, default=1, help="timed iterations (after one warm-up iteration)")
    parser.add_argument("--batch-size", type=int, help="real images per D step (default: the preset's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="fp32", help="comma-separated: fp32, bf16 (autocast)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    cases = [Case(f"{args.preset} {p}", args.preset, args.batch_size, p, device=args.device) for p in precisions]
    results = run_cases(cases, args.iterations)
    print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    if len(results) > 1:
        base = results[0]["seconds_per_iteration"]
        for r in results[1:]:
            print(f"{r['precision']} / {results[0]['precision']}: {base / r['seconds_per_iteration']:.2f}x faster")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results if len(results) > 1 else results[0], f, indent=2)


if __name__ == "__main__":
    main()
