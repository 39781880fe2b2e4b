"""`dcvae bench`: the speed of training and inference on this machine, measured in one run.

Each training measurement runs in its own spawned process, one after the other, so that each has its own peak
memory and none inherits another's caches or threads; each also measures the matmul peak of its precision, so that
its model FLOP utilisation (counted FLOPs / seconds / peak) is a ratio taken in one process. Inputs are random
images of the preset's shape: the figures are the model's compute, not data loading. A progressive preset is
timed fully grown.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import platform
import resource
import time
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import UserError


@dataclass(frozen=True)
class Case:
    """One training measurement: a preset's generator iteration on `device` at `precision`."""
    name: str
    preset: str
    batch_size: int | None = None      # real images per D step; None: the preset's
    precision: str = "fp32"            # fp32 | bf16 (autocast)
    reference: bool = False            # the released code's path: its D step (reconstruction not detached) in
                                       # NCHW, resampling and convolving separately; same updates
    channels_last: bool = True         # memory layout of networks and batches (ignored by the reference path)
    fold_resampling: bool = True       # train.fold_resampling (ignored by the reference path)
    compile: bool = False              # torch.compile the networks (the untimed warm-up iterations compile)
    cuda_graphs: bool = False          # compile in "reduce-overhead" mode: CUDA graphs (on a GPU)
    device: str = "cpu"

    @property
    def warmup_iterations(self) -> int:
        """Untimed iterations first: one (caches, allocator); compiled, three (compilation, then CUDA graph trees
        run once eagerly and record on the next call before they replay)."""
        return 3 if self.compile or self.cuda_graphs else 1


def _synchronizer(device: str):
    """What waits for the device's queued work: a no-op on the CPU, where every call has finished on return."""
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def matmul_peak(device: str = "cpu", dtype: torch.dtype = torch.float32, seconds: float = 3.0, n: int | None = None
                ) -> float:
    """Sustained GFLOP/s of an n x n matmul of `dtype` on `device` (n: 2048 on a CPU, 8192 on a GPU, where a
    smaller product leaves the tensor cores partly idle)."""
    n = n or (8192 if device.startswith("cuda") else 2048)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = _synchronizer(device)
    a @ b
    sync()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    sync()
    return 2 * n ** 3 * count / (time.perf_counter() - start) / 1e9


def _peak_memory(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # kB on Linux: the whole process


def measure_iteration(case: Case, iterations: int = 1) -> dict[str, Any]:
    """Time `iterations` generator iterations (after one warm-up), count one iteration's FLOPs with torch's FLOP
    counter, and measure the matmul peak of the case's precision; returns the figures as a dict."""
    from accelerate import Accelerator
    from torch.utils.data import TensorDataset
    from torch.utils.flop_counter import FlopCounterMode

    from ..config import preset
    from ..training.loop import Trainer

    cfg = preset(case.preset)
    m, t = cfg.model, cfg.train
    if case.batch_size:
        t.sample_batch_size = max(1, t.sample_batch_size * case.batch_size // t.batch_size)
        t.batch_size = case.batch_size
        cfg.growth.batch_sizes = []
    t.released_d_step = case.reference
    t.channels_last = case.channels_last and not case.reference
    t.fold_resampling = case.fold_resampling and not case.reference
    t.compile, t.cuda_graphs = case.compile, case.cuda_graphs
    batch = cfg.batch_sizes()[-1]
    n = batch * (t.d_steps + 1) * (iterations + case.warmup_iterations + 2)
    data = TensorDataset(torch.rand(n, m.image_channels, m.resolution, m.resolution) * 2 - 1,
                         torch.zeros(n, dtype=torch.long))
    bf16 = case.precision == "bf16"
    accelerator = Accelerator(cpu=not case.device.startswith("cuda"))
    trainer = Trainer(cfg, accelerator, dataset=data, bf16=bf16)
    trainer.images_seen = trainer.schedule.images_to_full_growth()

    peak = matmul_peak(case.device, torch.bfloat16 if bf16 else torch.float32)
    for _ in range(case.warmup_iterations):
        trainer.run_iteration()
    start = time.perf_counter()
    for _ in range(iterations):
        trainer.run_iteration()       # ends with a device synchronisation (the finiteness check)
    seconds = (time.perf_counter() - start) / iterations
    # The FLOPs are the math's, whatever runs it: counted on an eager twin when the networks are compiled (the
    # counter's dispatch mode and compiled graphs do not mix).
    counted = trainer
    if trainer.compiled:
        t.compile = t.cuda_graphs = False
        counted = Trainer(cfg, accelerator, dataset=data, bf16=bf16)
        counted.images_seen = trainer.images_seen
    with FlopCounterMode(display=False) as counter:
        counted.run_iteration()
    flops = counter.get_total_flops()
    batch = trainer.phase.batch_size
    steps = t.d_steps if trainer.terms.gan else 1
    return {
        "case": case.name, "preset": case.preset, "device": case.device, "precision": case.precision,
        "update_path": "released (D step with the reconstruction's graph, plain resampling)" if case.reference
                       else "default",
        "memory_format": "channels_last" if t.channels_last else "NCHW", "fold_resampling": t.fold_resampling,
        "compiled": trainer.compiled,
        "cuda_graphs": trainer.cuda_graphs,
        "resolution": trainer.phase.resolution if trainer.schedule.progressive else m.resolution,
        "d_steps": t.d_steps, "batch_size": batch,
        "seconds_per_iteration": round(seconds, 3), "real_images_per_s": round(steps * batch / seconds, 2),
        "tflop_per_iteration": round(flops / 1e12, 4), "achieved_gflop_s": round(flops / seconds / 1e9, 1),
        "matmul_peak_gflop_s": round(peak, 1), "utilisation": round(flops / seconds / 1e9 / peak, 3),
        "floor_seconds": round(flops / 1e9 / peak, 3), "peak_memory_gib": round(_peak_memory(case.device) / 2**30, 2),
        "threads": torch.get_num_threads(),
    }


def measure_inference(device: str = "cpu", batch_size: int = 64, inception: str | None = None) -> list[dict]:
    """Images/s of sampling (decoder) and encoding at paper width (cifar10 preset), of the compact MNIST networks
    (both in their presets' layout: channels_last), and of Inception pool3 features (when its weights are found)."""
    from ..config import preset
    from ..metrics.networks import InceptionFeatures
    from ..networks import build_networks, memory_format

    rows = []
    for name in ("cifar10", "mnist"):
        cfg = preset(name)
        nets = build_networks(cfg.model)
        layout = memory_format(cfg.train.channels_last)     # as training and dcvae.load lay them out
        decoder = nets.decoder.to(device, memory_format=layout).eval()
        encoder = nets.encoder.to(device, memory_format=layout).eval()
        z = torch.randn(batch_size, cfg.model.latent_dim, device=device)
        x = (torch.rand(batch_size, cfg.model.image_channels, 32, 32, device=device) * 2 - 1).contiguous(
            memory_format=layout)
        for what, run in (("sample", lambda: decoder(z)), ("encode", lambda: encoder(x))):
            rows.append({"case": f"{what} ({name} networks)", "images_per_s": round(_throughput(run, batch_size,
                                                                                                 device), 1)})
    try:
        features = InceptionFeatures(inception, device=device)
    except UserError as e:
        rows.append({"case": "Inception pool3 features", "skipped": str(e)})
    else:
        x = torch.rand(32, 3, 32, 32, device=device) * 2 - 1
        rows.append({"case": "Inception pool3 features (32x32 input, resized to 299)",
                     "images_per_s": round(_throughput(lambda: features(x), 32, device, seconds=10.0), 1)})
    return rows


@torch.no_grad()
def _throughput(run, batch: int, device: str, seconds: float = 3.0) -> float:
    sync = _synchronizer(device)
    run()
    sync()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or count < 2:
        run()
        count += 1
    sync()
    return count * batch / (time.perf_counter() - start)


def _in_own_process(function, *args) -> Any:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def run_cases(cases: list[Case], iterations: int, log=print) -> list[dict[str, Any]]:
    """Each case in its own process, in order; a case that runs out of memory is retried at half its batch, and
    the row says so."""
    rows = []
    for case in cases:
        log(f"bench: {case.name} ...")
        while True:
            try:
                rows.append(_in_own_process(measure_iteration, case, iterations))
                break
            except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as e:
                if "memory" not in str(e).lower() and not isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)):
                    raise
                batch = case.batch_size or _preset_batch(case.preset)
                if batch <= 1:
                    raise UserError(f"{case.name}: one image per batch does not fit in memory on {case.device}")
                log(f"bench: {case.name}: batch {batch} does not fit in memory; falling back to {batch // 2}")
                case = dataclasses.replace(case, name=f"{case.name} (batch {batch // 2}: {batch} did not fit)",
                                           batch_size=batch // 2)
        log(f"bench: {case.name}: {rows[-1]['seconds_per_iteration']} s / iteration")
    return rows


def _preset_batch(name: str) -> int:
    from ..config import preset
    return preset(name).batch_sizes()[-1]


def machine() -> dict[str, Any]:
    return {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "date": time.strftime("%Y-%m-%d %H:%M")}


def _default_twin(released: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The default-path row measured with the released-path row's settings (preset, device, precision, batch,
    compilation) in the default layout and resampling, else in any; None if the run has none."""
    same = ("preset", "device", "precision", "batch_size", "compiled", "cuda_graphs")
    twins = [r for r in rows if r["update_path"] == "default" and all(r[k] == released[k] for k in same)]
    twins.sort(key=lambda r: (r["memory_format"] != "channels_last", not r["fold_resampling"]))
    return twins[0] if twins else None


AUTHORS_SECONDS_PER_ITERATION = 91.9   # the released code, paper width, this machine kind (reference-implementation.md)


def markdown(rows: list[dict[str, Any]], inference: list[dict[str, Any]]) -> str:
    """The results as markdown tables, with the same-run ratio of the default to the released update path."""
    lines = ["| case | s / iteration | real images / s | TFLOP / iteration | achieved GFLOP/s | matmul peak | "
             "utilisation | floor s | peak memory GiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['seconds_per_iteration']} | {r['real_images_per_s']} | "
                     f"{r['tflop_per_iteration']} | {r['achieved_gflop_s']} | {r['matmul_peak_gflop_s']} | "
                     f"{100 * r['utilisation']:.1f} % | {r['floor_seconds']} | {r['peak_memory_gib']} |")
    for ref in (r for r in rows if r["update_path"] != "default"):
        fast = _default_twin(ref, rows)
        if fast:
            lines.append(f"\nSame run, {fast['case']}: the default path (graph-free D step, channels_last, "
                         f"folded resampling) is {ref['seconds_per_iteration'] / fast['seconds_per_iteration']:.2f}x "
                         "faster than the released code's path (D step with a graph, NCHW, plain resampling) "
                         "and takes "
                         f"{fast['seconds_per_iteration'] / fast['floor_seconds']:.2f}x its floor (authors' "
                         f"measurement on the CPU machine kind: {AUTHORS_SECONDS_PER_ITERATION} s / iteration at "
                         "paper width, not this run).")
    if inference:
        lines += ["", "| inference | images / s |", "|---|---|"]
        lines += [f"| {r['case']} | {r.get('images_per_s', 'skipped: ' + r.get('skipped', ''))} |" for r in inference]
    return "\n".join(lines)
