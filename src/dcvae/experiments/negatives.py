"""Paper Figure 7 (appendix A.3): pixel reconstruction error on the test split against the number of negatives.

`sweep_negatives` trains (or reuses, or resumes) one DC-VAE per queue size in <out>/queue<K>/, measures each one's
pixel error with `metrics.evaluate.evaluate(metrics=["pixel"])` (so the number is Table 1's "pixel", by the same
code), and writes <out>/negatives.json and <out>/negatives.png.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from ..config import Config, apply_overrides, clone
from ..errors import UserError
from ..files import atomic_output, atomic_write_text
from ..training.run_dir import read_summary
from .ablation import check_outputs
from .runs import train_or_reuse

NEGATIVES_FILES = ("negatives.json", "negatives.png")
DEFAULT_QUEUE_SIZES = (256, 1024, 4096, 8096)


def queue_configs(base: Config, queue_sizes: Sequence[int]) -> dict[int, Config]:
    """{K: `base` as a dcvae run with objective.queue_size = K} for each distinct K, ascending, all validated
    before anything is trained. A queue must hold at least one batch (the newest keys enter it whole)."""
    sizes = sorted(set(queue_sizes))
    if not sizes:
        raise UserError("--queue-sizes names no queue size; e.g. --queue-sizes 256,1024,4096,8096")
    batch = base.train.batch_size
    small = [k for k in sizes if k < batch]
    if small:
        verb = "is" if len(small) == 1 else "are"
        raise UserError(f"--queue-sizes {', '.join(map(str, small))} {verb} smaller than the batch "
                        f"(train.batch_size={batch}); each queue must hold at least one batch of keys: use queue "
                        f"sizes of at least {batch} or lower train.batch_size")
    return {k: apply_overrides(clone(base), {"objective.variant": "dcvae", "objective.queue_size": k}).validate()
            for k in sizes}


def plot_negatives(table: dict[int, float], path: str | Path, title: str = "") -> Path:
    """Line plot of pixel error (y) against the number of negatives (x, log scale) as a PNG at `path`, written
    atomically. table: {queue size: pixel error}."""
    import matplotlib
    matplotlib.use("Agg")            # no display here, and none wanted: the figure only goes to a file
    import matplotlib.pyplot as plt

    sizes = sorted(table)
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    try:
        ax.plot(sizes, [table[k] for k in sizes], marker="o")
        ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(k) for k in sizes])
        ax.minorticks_off()
        ax.set_xlabel("number of negatives (queue size)")
        ax.set_ylabel("pixel reconstruction error (test)")
        if title:
            ax.set_title(title, fontsize=9)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        path = Path(path)
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path


def sweep_negatives(base: Config, out: str | Path, queue_sizes: Sequence[int] = DEFAULT_QUEUE_SIZES,
                    n: int | None = None, seed: int = 0, batch_size: int = 64, device: str = "cpu",
                    overwrite: bool = False, progress: bool = True) -> dict:
    """Train a DC-VAE per queue size into out/queue<K>/, measure the pixel reconstruction error of each on n test
    images (None: the whole test split; z sampled from q(z|x), EMA decoder, as Table 1's "pixel"), write
    out/negatives.json and out/negatives.png. Returns {"table": {"K": pixel error}, "rows", "protocol",
    "evaluations", "training", ...}. Existing results are refused before anything is trained unless `overwrite`."""
    from ..data import build_dataset
    from ..metrics.evaluate import evaluate

    out = Path(out)
    check_outputs(out, NEGATIVES_FILES, overwrite)
    configs = queue_configs(base, queue_sizes)
    if n is not None and n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    if n is None:
        m = base.model
        split = None if base.data.dataset == "folder" else "test"
        n = len(build_dataset(base.data, m.image_channels, m.resolution, split=split))
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    runs = {k: train_or_reuse(cfg, out / f"queue{k}", progress=progress, label="sweep-negatives")
            for k, cfg in configs.items()}
    trained = time.time()
    evaluations, table = {}, {}
    for k, run_dir in runs.items():
        result = evaluate(run_dir, metrics=["pixel"], n_generated=n, n_recon=n, seed=seed, batch_size=batch_size,
                          device=device, progress=progress)
        evaluations[str(k)], table[k] = result, result["metrics"]["pixel"]
        if progress:
            print(f"sweep-negatives: queue {k}: pixel error {table[k]:.3f}", flush=True)
    first = next(iter(evaluations.values()))["protocol"]
    protocol = {"metric": "pixel", "definition": first["pixel"], "reconstruction": first["reconstruction"],
                "decoder": first["decoder"], "n": n, "seed": seed,
                "runs": "objective.variant=dcvae, objective.queue_size=K, every other setting shared",
                "evaluate": "dcvae.metrics.evaluate.evaluate(metrics=['pixel']); each run's protocol is in "
                            "evaluations"}
    result = {"table": {str(k): v for k, v in table.items()},
              "rows": [{"queue_size": k, "pixel": v, "run": str(runs[k])} for k, v in table.items()],
              "protocol": protocol, "evaluations": evaluations,
              "training": {str(k): read_summary(r) for k, r in runs.items()},
              "date": time.strftime("%Y-%m-%d"),
              "seconds": {"training": round(trained - started, 1), "evaluation": round(time.time() - trained, 1)}}
    plot_negatives(table, out / "negatives.png",
                   title=f"{base.data.dataset}, {n} test images, {base.train.iterations} iterations")
    atomic_write_text(out / "negatives.json", json.dumps(result, indent=2) + "\n")
    return result
