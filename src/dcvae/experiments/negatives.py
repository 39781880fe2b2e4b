"""Paper Figure 7 (appendix A.3): pixel reconstruction error on the test split against the number of negatives.

`sweep_negatives` trains (or reuses, or resumes) one DC-VAE per queue size and trial in <out>/queue<K>/ (trial 0)
and <out>/queue<K>-trial<t>/, measures each one's pixel error with `metrics.evaluate.evaluate(metrics=["pixel"])` (so
the number is Table 1's "pixel", by the same code), and writes <out>/negatives.json and <out>/negatives.png: the mean
over trials per queue size, with a 95% confidence interval once there are two trials or more. Trial t of every queue
size shares its seed, so with two trials or more each smaller queue is also compared with the largest one paired by
seed, which removes the seed's share of the spread from the comparison the figure is about.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from ..config import Config, apply_overrides, clone
from ..errors import UserError
from ..files import atomic_output, atomic_write_text
from ..metrics.probe import confidence_interval
from ..training.run_dir import read_summary
from .ablation import check_outputs
from .runs import train_or_reuse

NEGATIVES_FILES = ("negatives.json", "negatives.png")
DEFAULT_QUEUE_SIZES = (256, 1024, 4096, 8096)


def trial_folder(queue_size: int, trial: int) -> str:
    """Run folder name of one (queue size, trial): queue<K> for trial 0 (the single-trial sweep's layout), then
    queue<K>-trial<t>."""
    return f"queue{queue_size}" if trial == 0 else f"queue{queue_size}-trial{trial}"


def queue_configs(base: Config, queue_sizes: Sequence[int], trials: int = 1) -> dict[int, list[Config]]:
    """{K: [`base` as a dcvae run with objective.queue_size = K and train.seed = base seed + t, for t < trials]}
    for each distinct K, ascending, all validated before anything is trained. A queue must hold at least one batch
    (the newest keys enter it whole)."""
    sizes = sorted(set(queue_sizes))
    if not sizes:
        raise UserError("--queue-sizes names no queue size; e.g. --queue-sizes 256,1024,4096,8096")
    if trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    batch = base.train.batch_size
    small = [k for k in sizes if k < batch]
    if small:
        verb = "is" if len(small) == 1 else "are"
        raise UserError(f"--queue-sizes {', '.join(map(str, small))} {verb} smaller than the batch "
                        f"(train.batch_size={batch}); each queue must hold at least one batch of keys: use queue "
                        f"sizes of at least {batch} or lower train.batch_size")
    seed = base.train.seed
    return {k: [apply_overrides(clone(base), {"objective.variant": "dcvae", "objective.queue_size": k,
                                              "train.seed": seed + t}).validate() for t in range(trials)]
            for k in sizes}


def paired_difference(smaller: Sequence[float], larger: Sequence[float], level: float = 0.95) -> dict:
    """Paired comparison of two queue sizes' errors, trial by trial (trial t of both shares its seed).

    -> {"differences": smaller[t] - larger[t] for each t (positive: the larger queue has the lower error), "mean",
    "ci95": half-width of the Student-t interval of the mean difference, "t": mean / (s / sqrt(n)), "p": its
    two-sided p-value on n - 1 degrees of freedom}; ci95, t and p are None below two pairs, t and p also when every
    difference is the same (s = 0).
    """
    from scipy import stats

    if len(smaller) != len(larger):
        raise ValueError(f"paired comparison needs as many trials on each side, got {len(smaller)} and {len(larger)}")
    differences = [a - b for a, b in zip(smaller, larger)]
    ci = confidence_interval(differences, level)
    result = {"differences": differences, "mean": ci.mean, "ci95": None, "t": None, "p": None}
    if ci.n < 2:
        return result
    result["ci95"] = ci.half_width
    if ci.standard_error > 0:
        t = ci.mean / ci.standard_error
        result["t"], result["p"] = t, float(2 * stats.t.sf(abs(t), ci.n - 1))
    return result


def plot_negatives(trials: dict[int, list[float]], path: str | Path, title: str = "") -> Path:
    """Line plot of the mean pixel error (y) against the number of negatives (x, log scale) as a PNG at `path`,
    written atomically; with two trials or more per queue size, each trial as a dot and the 95% confidence interval
    as an error bar. trials: {queue size: [pixel error of each trial]}."""
    import matplotlib
    matplotlib.use("Agg")            # no display here, and none wanted: the figure only goes to a file
    import matplotlib.pyplot as plt

    sizes = sorted(trials)
    intervals = [confidence_interval(trials[k]) for k in sizes]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    try:
        several = any(ci.n > 1 for ci in intervals)
        ax.errorbar(sizes, [ci.mean for ci in intervals], marker="o", capsize=3,
                    yerr=[ci.half_width if ci.n > 1 else 0.0 for ci in intervals] if several else None)
        if several:
            ax.plot([k for k in sizes for _ in trials[k]], [v for k in sizes for v in trials[k]], ".",
                    color="gray", alpha=0.6)
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
                    trials: int = 1, n: int | None = None, seed: int = 0, batch_size: int = 64, device: str = "cpu",
                    overwrite: bool = False, progress: bool = True) -> dict:
    """Train `trials` DC-VAEs per queue size (seeds train.seed + t) into out/queue<K>/ and out/queue<K>-trial<t>/,
    measure the pixel reconstruction error of each on n test images (None: the whole test split; z sampled from
    q(z|x) with seed `seed`, EMA decoder, as Table 1's "pixel"), write out/negatives.json and out/negatives.png.
    Returns {"table": {"K": mean pixel error over trials}, "rows": [{"queue_size", "pixel", "trials", "ci95",
    "runs"}], "paired": [{"queue_sizes": [K, largest K], ...`paired_difference`} for each smaller K, with two trials
    or more; else empty], "protocol", "evaluations" and "training" (by run folder name), ...}. Existing results are
    refused before anything is trained unless `overwrite`."""
    from ..data import build_dataset
    from ..metrics.evaluate import evaluate

    out = Path(out)
    check_outputs(out, NEGATIVES_FILES, overwrite)
    configs = queue_configs(base, queue_sizes, trials)
    if n is not None and n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    if n is None:
        m = base.model
        split = None if base.data.dataset == "folder" else "test"
        n = len(build_dataset(base.data, m.image_channels, m.resolution, split=split))
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    # Trial by trial, so that a sweep stopped part-way holds whole curves of the first trials.
    runs = {(k, t): out / trial_folder(k, t) for t in range(trials) for k in configs}
    for (k, t), run_dir in runs.items():
        train_or_reuse(configs[k][t], run_dir, progress=progress, label="sweep-negatives")
    trained = time.time()
    evaluations, pixels = {}, {k: [] for k in configs}
    for (k, t), run_dir in sorted(runs.items()):
        result = evaluate(run_dir, metrics=["pixel"], n_generated=n, n_recon=n, seed=seed, batch_size=batch_size,
                          device=device, progress=progress)
        evaluations[run_dir.name] = result
        pixels[k].append(result["metrics"]["pixel"])
        if progress:
            print(f"sweep-negatives: {run_dir.name}: pixel error {pixels[k][-1]:.3f}", flush=True)
    intervals = {k: confidence_interval(v) for k, v in pixels.items()}
    largest = max(pixels)
    first = next(iter(evaluations.values()))["protocol"]
    protocol = {"metric": "pixel", "definition": first["pixel"], "reconstruction": first["reconstruction"],
                "decoder": first["decoder"], "n": n, "seed": seed, "trials": trials,
                "runs": "objective.variant=dcvae, objective.queue_size=K, train.seed=base seed + trial, every other "
                        "setting shared",
                "interval": "95% Student-t confidence interval over trials (independently trained models); "
                            "null with one trial",
                "paired": "error of queue K minus error of the largest queue, trial by trial (same train.seed); "
                          "mean, 95% Student-t interval, paired t and two-sided p; only with two trials or more",
                "evaluate": "dcvae.metrics.evaluate.evaluate(metrics=['pixel']); each run's protocol is in "
                            "evaluations"}
    result = {"table": {str(k): ci.mean for k, ci in intervals.items()},
              "rows": [{"queue_size": k, "pixel": ci.mean, "trials": pixels[k],
                        "ci95": ci.half_width if ci.n > 1 else None,
                        "runs": [str(runs[k, t]) for t in range(trials)]} for k, ci in intervals.items()],
              "paired": [{"queue_sizes": [k, largest], **paired_difference(pixels[k], pixels[largest])}
                         for k in pixels if k != largest] if trials > 1 else [],
              "protocol": protocol, "evaluations": evaluations,
              "training": {run_dir.name: read_summary(run_dir) for run_dir in runs.values()},
              "date": time.strftime("%Y-%m-%d"),
              "seconds": {"training": round(trained - started, 1), "evaluation": round(time.time() - trained, 1)}}
    plot_negatives(pixels, out / "negatives.png",
                   title=f"{base.data.dataset}, {n} test images, {base.train.iterations} iterations"
                         + (f", {trials} trials" if trials > 1 else ""))
    atomic_write_text(out / "negatives.json", json.dumps(result, indent=2) + "\n")
    return result
