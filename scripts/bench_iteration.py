"""Time one generator iteration (d_steps D steps, then the E/G and contrastive steps) of a preset on this machine,
count its FLOPs with torch's FLOP counter, and measure the fp32 matmul peak in the same run.

    .venv/bin/python scripts/bench_iteration.py [--preset cifar10] [--iterations 1] [--json out.json]

Inputs are random images of the preset's shape: the figure is the model's compute, not data loading.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from torch.utils.data import TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from dcvae.config import preset
from dcvae.training.loop import Trainer


def matmul_peak(seconds: float = 3.0, n: int = 2048) -> float:
    """Sustained fp32 GFLOP/s of an n x n matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n ** 3 * count / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cifar10")
    parser.add_argument("--iterations", type=int, default=1, help="timed iterations (after one warm-up D step)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()

    from accelerate import Accelerator
    cfg = preset(args.preset)
    m, t = cfg.model, cfg.train
    n_images = t.batch_size * (t.d_steps + 1) * (args.iterations + 2)
    data = TensorDataset(torch.rand(n_images, m.image_channels, 32, 32) * 2 - 1, torch.zeros(n_images, dtype=torch.long))
    trainer = Trainer(cfg, Accelerator(cpu=True), dataset=data)

    peak = matmul_peak()
    trainer.run_iteration()   # warm-up: allocator, first-call overheads
    start = time.perf_counter()
    for _ in range(args.iterations):
        trainer.run_iteration()
    seconds = (time.perf_counter() - start) / args.iterations
    with FlopCounterMode(display=False) as counter:
        trainer.run_iteration()
    flops = counter.get_total_flops()
    result = {
        "preset": args.preset, "variant": cfg.objective.variant, "d_steps": t.d_steps, "batch_size": t.batch_size,
        "sample_batch_size": t.sample_batch_size, "seconds_per_iteration": round(seconds, 2),
        "real_images_per_s": round(t.d_steps * t.batch_size / seconds, 2),
        "tflop_per_iteration": round(flops / 1e12, 3), "achieved_gflop_s": round(flops / seconds / 1e9, 1),
        "matmul_peak_gflop_s": round(peak, 1), "utilisation": round(flops / seconds / 1e9 / peak, 3),
        "floor_seconds": round(flops / 1e9 / peak, 1),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
