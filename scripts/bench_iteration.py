"""Time one generator iteration (d_steps D steps, then the E/G and contrastive steps) of a preset on this machine,
count its FLOPs with torch's FLOP counter, and measure the fp32 matmul peak in the same run.

    .venv/bin/python scripts/bench_iteration.py [--preset cifar10] [--iterations 1] [--batch-size B]
        [--device cpu|cuda] [--precision fp32,bf16] [--json out.json]

Inputs are random images of the preset's shape: the figure is the model's compute, not data loading. A progressive
preset is timed at its final resolution, fully grown. Peak memory: the process's peak resident set on a CPU (it
includes Python and the libraries), torch's peak allocation on a GPU. Each precision is measured in its own
process (so that each has its own peak), one after the other within this one run.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
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


def measure(preset_name: str, batch_size: int | None, iterations: int, device: str, precision: str) -> dict:
    """Time `iterations` generator iterations of a preset (after one warm-up), count one iteration's FLOPs and
    measure the matmul peak of the same precision."""
    from accelerate import Accelerator
    cfg = preset(preset_name)
    m, t = cfg.model, cfg.train
    if batch_size:
        t.sample_batch_size = t.sample_batch_size * batch_size // t.batch_size
        t.batch_size = batch_size
        cfg.growth.batch_sizes = []
    bf16 = precision == "bf16"
    batch = cfg.batch_sizes()[-1]
    n_images = batch * (t.d_steps + 1) * (iterations + 2)
    data = TensorDataset(torch.rand(n_images, m.image_channels, m.resolution, m.resolution) * 2 - 1,
                         torch.zeros(n_images, dtype=torch.long))
    gpu = device.startswith("cuda")
    # Accelerate's bf16 autocast runs on a CPU as well (the training command keeps float32 there)
    trainer = Trainer(cfg, Accelerator(cpu=not gpu, mixed_precision="bf16" if bf16 else "no"), dataset=data)
    trainer.images_seen = trainer.schedule.images_to_full_growth()    # a progressive network at full size

    peak = matmul_peak(device=device, dtype=torch.bfloat16 if bf16 else torch.float32)
    trainer.run_iteration()   # warm-up: allocator, first-call overheads
    start = time.perf_counter()
    for _ in range(iterations):
        trainer.run_iteration()
    seconds = (time.perf_counter() - start) / iterations
    with FlopCounterMode(display=False) as counter:
        trainer.run_iteration()
    flops = counter.get_total_flops()
    peak_memory = (torch.cuda.max_memory_allocated() if gpu
                   else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    batch = trainer.phase.batch_size
    return {
        "preset": preset_name, "variant": cfg.objective.variant,
        "resolution": trainer.phase.resolution if trainer.schedule.progressive else m.resolution,
        "d_steps": t.d_steps, "batch_size": batch, "sample_batch_size": round(t.sample_batch_size * batch / t.batch_size),
        "device": device, "precision": precision, "seconds_per_iteration": round(seconds, 2),
        "real_images_per_s": round(t.d_steps * batch / seconds, 2), "peak_memory_gib": round(peak_memory / 2**30, 2),
        "tflop_per_iteration": round(flops / 1e12, 3), "achieved_gflop_s": round(flops / seconds / 1e9, 1),
        "matmul_peak_gflop_s": round(peak, 1), "utilisation": round(flops / seconds / 1e9 / peak, 3),
        "floor_seconds": round(flops / 1e9 / peak, 1),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cifar10")
    parser.add_argument("--iterations", type=int, default=1, help="timed iterations (after one warm-up iteration)")
    parser.add_argument("--batch-size", type=int, help="real images per D step (default: the preset's; the prior "
                                                           "samples of the G step keep the preset's ratio)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="fp32", help="comma-separated: fp32, bf16 (autocast)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if not precisions or set(precisions) - {"fp32", "bf16"}:
        parser.error(f"--precision takes fp32 and/or bf16, got {args.precision!r}")

    results = []
    spawn = multiprocessing.get_context("spawn")
    for precision in precisions:
        with spawn.Pool(1) as pool:
            results.append(pool.apply(measure, (args.preset, args.batch_size, args.iterations, args.device, precision)))
        print(json.dumps(results[-1], indent=2), flush=True)
    if len(results) > 1:
        base = results[0]["seconds_per_iteration"]
        for r in results[1:]:
            print(f"{r['precision']} / {results[0]['precision']}: {base / r['seconds_per_iteration']:.2f}x faster")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results if len(results) > 1 else results[0], f, indent=2)


if __name__ == "__main__":
    main()
