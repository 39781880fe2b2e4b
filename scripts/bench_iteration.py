"""Time one generator iteration (d_steps D steps, then the E/G and contrastive steps) of a preset on this machine,
count its FLOPs with torch's FLOP counter, and measure the fp32 matmul peak in the same run.

    .venv/bin/python scripts/bench_iteration.py [--preset cifar10] [--iterations 1] [--batch-size B]
        [--device cpu|cuda] [--bf16] [--json out.json]

Inputs are random images of the preset's shape: the figure is the model's compute, not data loading. A progressive
preset is timed at its final resolution, fully grown. Peak memory: the process's peak resident set on a CPU (it
includes Python and the libraries), torch's peak allocation on a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import torch
from torch.utils.data import TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from dcvae.config import preset
from dcvae.training.loop import Trainer


def matmul_peak(seconds: float = 3.0, n: int = 2048, device: str = "cpu",
                dtype: torch.dtype = torch.float32) -> float:
    """Sustained GFLOP/s of an n x n matmul."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    sync()
    return 2 * n ** 3 * count / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cifar10")
    parser.add_argument("--iterations", type=int, default=1, help="timed iterations (after one warm-up D step)")
    parser.add_argument("--batch-size", type=int, help="real images per D step (default: the preset's; the prior "
                                                           "samples of the G step keep the preset's ratio)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()

    from accelerate import Accelerator
    cfg = preset(args.preset)
    m, t = cfg.model, cfg.train
    if args.batch_size:
        t.sample_batch_size = t.sample_batch_size * args.batch_size // t.batch_size
        t.batch_size = args.batch_size
        cfg.growth.batch_sizes = []
    cfg.train.mixed_precision = "bf16" if args.bf16 else "no"
    batch = cfg.batch_sizes()[-1]
    n_images = batch * (t.d_steps + 1) * (args.iterations + 2)
    data = TensorDataset(torch.rand(n_images, m.image_channels, m.resolution, m.resolution) * 2 - 1,
                         torch.zeros(n_images, dtype=torch.long))
    gpu = args.device.startswith("cuda")
    trainer = Trainer(cfg, Accelerator(cpu=not gpu, mixed_precision=cfg.train.mixed_precision), dataset=data)
    trainer.images_seen = trainer.schedule.images_to_full_growth()    # a progressive network at full size

    peak = matmul_peak(device=args.device, dtype=torch.bfloat16 if args.bf16 else torch.float32)
    trainer.run_iteration()   # warm-up: allocator, first-call overheads
    start = time.perf_counter()
    for _ in range(args.iterations):
        trainer.run_iteration()
    seconds = (time.perf_counter() - start) / args.iterations
    with FlopCounterMode(display=False) as counter:
        trainer.run_iteration()
    flops = counter.get_total_flops()
    peak_memory = (torch.cuda.max_memory_allocated() if gpu
                   else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    result = {
        "preset": args.preset, "variant": cfg.objective.variant, "resolution": trainer.phase.resolution
        if trainer.schedule.progressive else m.resolution, "d_steps": t.d_steps, "batch_size": trainer.phase.batch_size,
        "sample_batch_size": round(t.sample_batch_size * trainer.phase.batch_size / t.batch_size),
        "device": args.device, "bf16": args.bf16, "seconds_per_iteration": round(seconds, 2),
        "real_images_per_s": round(t.d_steps * trainer.phase.batch_size / seconds, 2),
        "peak_memory_gib": round(peak_memory / 2**30, 2),
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
