"""Paper Table 1 and Figure 3: the four objectives (VAE, VAE/GAN, VAE-Contrastive, DC-VAE) trained on the same
backbone and data, each evaluated with `metrics.evaluate.evaluate`, and shown side by side.

`run_ablation` trains (or reuses, or resumes) one run per variant in <out>/<variant>/, evaluates each, and writes
<out>/table1.md, <out>/table1.json and <out>/figure3.png. Each run's evaluation is also kept beside it
(<out>/<variant>/table1-evaluation.json) with the settings it was computed with, and reused when those match, so an
interrupted command does not recompute minutes of FID.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import VARIANTS, Config, apply_overrides, clone
from ..errors import UserError
from ..files import atomic_output, atomic_write_text
from ..metrics.probe import VARIANT_NAMES      # the paper's row names; config.VARIANTS is in Table 1's row order
from ..training.run_dir import read_summary
from .runs import train_or_reuse

TABLE1_FILES = ("table1.md", "table1.json", "figure3.png")
EVALUATION_FILE = "table1-evaluation.json"
HEADER = ("| Method | Sampling FID ↓ / KID ↓ / IS ↑ | Reconstruction FID ↓ / KID ↓ / IS ↑ | Pixel ↓ | "
          "Perceptual ↓ |")
# Figure 3 layout, in pixels: a left margin for the row names, the band above each block for its variant name, the
# white gap between blocks (the blocks' own padding is black, so the gaps are what separates them).
FIGURE_LEFT, FIGURE_LABEL, FIGURE_GAP, FIGURE_PAD = 40, 18, 10, 2
FIGURE_ROWS = ("input", "recon", "sample")


def variant_config(base: Config, variant: str) -> Config:
    """`base` with objective.variant set (a copy, validated): everything else, backbone and data included, is shared
    by the four runs of the ablation."""
    if variant not in VARIANTS:
        raise UserError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    return apply_overrides(clone(base), {"objective.variant": variant}).validate()


def train_variants(base: Config, out: str | Path, variants: Sequence[str] = VARIANTS, progress: bool = True
                   ) -> dict[str, Path]:
    """Train (or reuse a finished, or resume an interrupted) run of each variant into out/<variant>/ -> {variant:
    run folder}, in paper order."""
    out = Path(out)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise UserError(f"unknown variant(s) {', '.join(map(repr, unknown)) or '(none given)'}; choose from "
                        f"{', '.join(VARIANTS)}")
    configs = {v: variant_config(base, v) for v in VARIANTS if v in variants}   # all validated before training
    return {v: train_or_reuse(cfg, out / v, progress=progress, label="ablate") for v, cfg in configs.items()}


def inception_metrics(inception_path: str | Path | None = None, device: str = "cpu"
                      ) -> tuple[list[str], dict[str, str], str]:
    """The Table 1 metric names `evaluate` can compute with these Inception weights, the reason for each one it
    cannot ({name: reason}), and the weights' SHA-256."""
    from ..metrics.networks import InceptionFeatures

    inception = InceptionFeatures(inception_path, device=device)
    if inception.can_classify:
        return (["fid", "kid", "is", "recon_fid", "recon_kid", "recon_is", "pixel", "perceptual"], {},
                inception.weights.sha256)
    reason = (f"the Inception weights ({inception.weights.path}) hold no classifier layer, which the Inception "
              "Score needs; put NVIDIA's inception-2015-12-05.pt in the dcvae cache or pass --inception")
    return (["fid", "kid", "recon_fid", "recon_kid", "pixel", "perceptual"], {"is": reason, "recon_is": reason},
            inception.weights.sha256)


def evaluate_run(run_dir: str | Path, request: dict[str, Any], progress: bool = True,
                 inception_path: str | Path | None = None, vgg_path: str | Path | None = None,
                 kid_subsets: int = 100) -> dict:
    """`evaluate` of run_dir's newest checkpoint with the settings in `request` (metrics, n_generated, n_real,
    n_recon, seed, truncation, batch_size, device and the weights' digests), or the stored result of an earlier call
    with the same request on the same checkpoint. Returns evaluate's result dict."""
    from ..metrics.evaluate import evaluate
    from ..training.checkpoint import read_manifest, resolve_checkpoint

    run_dir = Path(run_dir)
    folder = resolve_checkpoint(run_dir)
    # The manifest holds the checkpoint's file digests: a retrained or resumed run never matches an old result.
    # The resolved path: the same run named from another folder, or through a link, is the same checkpoint.
    key = {**request, "checkpoint": str(folder.resolve()), "manifest": read_manifest(folder),
           "kid_subsets": kid_subsets}
    stored = run_dir / EVALUATION_FILE
    try:
        previous = json.loads(stored.read_text())
        if previous.get("request") == key:
            return previous["result"]
    except (OSError, ValueError, AttributeError):
        pass
    result = evaluate(folder, metrics=request["metrics"], n_generated=request["n_generated"],
                      n_real=request["n_real"], n_recon=request["n_recon"], seed=request["seed"],
                      truncation=request["truncation"], batch_size=request["batch_size"], device=request["device"],
                      inception_path=inception_path, vgg_path=vgg_path, kid_subsets=kid_subsets, progress=progress)
    atomic_write_text(stored, json.dumps({"request": key, "result": result}, indent=2) + "\n")
    return result


def _cell(value: float | None, digits: int) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if math.isfinite(value) else "NaN"


def table1_markdown(rows: dict[str, dict[str, Any]], notes: Sequence[str] = ()) -> str:
    """rows: {variant: {"metrics": {name: value}}} in paper order -> Table 1 as Markdown (metrics a row lacks show
    "n/a"), followed by `notes` as lines below a blank line."""
    lines = [HEADER, "|---|---|---|---|---|"]
    for variant, row in rows.items():
        m = row["metrics"]
        sampling = " / ".join((_cell(m.get("fid"), 1), _cell(m.get("kid"), 4), _cell(m.get("is"), 2)))
        recon = " / ".join((_cell(m.get("recon_fid"), 1), _cell(m.get("recon_kid"), 4), _cell(m.get("recon_is"), 2)))
        lines.append(f"| {VARIANT_NAMES.get(variant, variant)} | {sampling} | {recon} | {_cell(m.get('pixel'), 1)} | "
                     f"{_cell(m.get('perceptual'), 2)} |")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def table1(runs: dict[str, Path], n_generated: int = 50_000, n_real: int | None = None, n_recon: int | None = None,
           seed: int = 0, truncation: float | None = None, batch_size: int = 64, device: str = "cpu",
           inception_path: str | Path | None = None, vgg_path: str | Path | None = None, kid_subsets: int = 100,
           progress: bool = True) -> dict:
    """Evaluate every run of `runs` ({variant: run folder}) with the same protocol and aggregate them as Table 1.

    Returns {"rows": {variant: {"name", "run", "metrics": {name: finite float}, "unavailable": {name: reason}}},
    "markdown", "notes", "protocol", "evaluations": {variant: evaluate's whole result}, "training": {variant:
    summary.json}}. A metric that is not finite (a diverged run) is left out of "metrics" and named in "unavailable",
    so that the JSON holds numbers only.
    """
    from ..metrics.weights import resolve_weights

    metrics, unavailable, inception_sha = inception_metrics(inception_path, device)
    n_recon = n_generated if n_recon is None else n_recon
    request = {"metrics": metrics, "n_generated": n_generated, "n_real": n_real, "n_recon": n_recon, "seed": seed,
               "truncation": truncation, "batch_size": batch_size, "device": str(device), "decoder": "ema",
               "inception_sha256": inception_sha, "vgg_sha256": resolve_weights("vgg16", vgg_path).sha256}
    rows: dict[str, dict[str, Any]] = {}
    evaluations, training = {}, {}
    for variant in (v for v in VARIANTS if v in runs):
        if progress:
            print(f"ablate: evaluating {variant}", flush=True)
        result = evaluate_run(runs[variant], request, progress, inception_path, vgg_path, kid_subsets)
        values = {k: float(v) for k, v in result["metrics"].items() if math.isfinite(v)}
        missing = dict(unavailable)
        missing.update({k: "not finite (the run's images hold NaN or Inf)" for k, v in result["metrics"].items()
                        if not math.isfinite(v)})
        rows[variant] = {"name": VARIANT_NAMES[variant], "run": str(runs[variant]), "metrics": values,
                         "unavailable": missing}
        evaluations[variant], training[variant] = result, read_summary(runs[variant])
    notes = []
    if unavailable:
        notes.append(f"n/a (IS): {unavailable['is']}.")
    notes.append(f"Sampling: {n_generated} images from the EMA decoder, z ~ N(0, I)"
                 f"{f' clipped to [-{truncation}, {truncation}]' if truncation else ''}; reconstruction: {n_recon} "
                 f"images of the test split, z sampled from q(z|x); reference: {n_real or 'all'} training images. "
                 "KID is raw (not x1000). Pixel: per-image sum of squared differences in [-1, 1]; perceptual: mean "
                 "squared difference of VGG-16 relu4_3 features. Protocols in table1.json.")
    protocol = {"request": request, "kid_subsets": kid_subsets,
                "runs": "one per variant, same configuration except objective.variant",
                "evaluate": "dcvae.metrics.evaluate.evaluate; each run's whole protocol is in evaluations"}
    return {"rows": rows, "markdown": table1_markdown(rows, notes), "notes": notes, "protocol": protocol,
            "evaluations": evaluations, "training": training}


def figure3_size(n_blocks: int, n_images: int, resolution: int = 32, scale: int = 2) -> tuple[int, int]:
    """(width, height) in pixels of `figure3` for n_blocks variants and n_images per row."""
    cell = resolution * scale + FIGURE_PAD
    block_w, block_h = n_images * cell + FIGURE_PAD, len(FIGURE_ROWS) * cell + FIGURE_PAD
    return FIGURE_LEFT + n_blocks * block_w + (n_blocks - 1) * FIGURE_GAP, FIGURE_LABEL + block_h


def figure3(runs: dict[str, Path], path: str | Path, n_images: int = 6, seed: int = 0, scale: int = 2) -> Path:
    """Write Figure 3 as a PNG at `path`: one block per variant of `runs` ({variant: run folder}), side by side in
    paper order, each labelled with the variant's name, holding three rows of n_images: the first n_images test
    images, their reconstructions (posterior mean, EMA decoder) and prior samples of the EMA decoder (the same z for
    every variant, from a CPU generator seeded with `seed`). Images are upscaled `scale` x (nearest) for viewing.
    Size: figure3_size(len(runs), n_images, resolution, scale).
    """
    from PIL import Image, ImageDraw, ImageFont
    from torchvision.utils import make_grid

    from ..data import build_dataset
    from ..model import load

    if n_images < 1 or scale < 1:
        raise UserError(f"the figure needs at least 1 image per row and a scale of at least 1, got {n_images}, "
                        f"{scale}")
    variants = [v for v in VARIANTS if v in runs]
    models = {v: load(runs[v], device="cpu") for v in variants}
    first = models[variants[0]].config
    m = first.model
    test = build_dataset(first.data, m.image_channels, m.resolution,
                         split=None if first.data.dataset == "folder" else "test")
    if len(test) < n_images:
        raise UserError(f"the figure asks for {n_images} test images but the test split holds {len(test)}; "
                        "lower --figure-images")
    x = torch.stack([test[i][0] for i in range(n_images)])                      # [n, C, R, R] in [-1, 1]
    width, height = figure3_size(len(variants), n_images, m.resolution, scale)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    cell = m.resolution * scale + FIGURE_PAD
    for r, name in enumerate(FIGURE_ROWS):
        draw.text((2, FIGURE_LABEL + FIGURE_PAD + r * cell + cell // 2), name, fill="black", font=font, anchor="lm")
    left = FIGURE_LEFT
    for variant in variants:
        model = models[variant]
        if model.config.model != m:
            raise UserError(f"{runs[variant]} has another backbone than {runs[variants[0]]}; the ablation compares "
                            "variants of one model configuration")
        z = torch.randn(n_images, model.latent_dim, generator=torch.Generator().manual_seed(seed))
        images = torch.cat([x, model.reconstruct(x), model.decode(z)]).cpu()
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
        grid = make_grid(images, nrow=n_images, padding=FIGURE_PAD, normalize=True, value_range=(-1, 1))
        block = Image.fromarray(grid.mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy())
        canvas.paste(block, (left, FIGURE_LABEL))
        draw.text((left + block.width // 2, FIGURE_LABEL // 2), VARIANT_NAMES[variant], fill="black", font=font,
                  anchor="mm")
        left += block.width + FIGURE_GAP
    path = Path(path)
    with atomic_output(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def check_outputs(out: Path, names: Sequence[str], overwrite: bool) -> None:
    """Refuse (UserError) before any work if a result file in `out` exists and `overwrite` is not set."""
    existing = [n for n in names if (out / n).exists()]
    if existing and not overwrite:
        raise UserError(f"{out} already holds {', '.join(existing)}; pass --overwrite to replace "
                        f"{'them' if len(existing) > 1 else 'it'} (finished runs are reused) or choose another --out")


def run_ablation(base: Config, out: str | Path, variants: Sequence[str] = VARIANTS, n_generated: int = 50_000,
                 n_real: int | None = None, n_recon: int | None = None, seed: int = 0,
                 truncation: float | None = None, batch_size: int = 64, device: str = "cpu",
                 inception_path: str | Path | None = None, vgg_path: str | Path | None = None,
                 figure_images: int = 6, overwrite: bool = False, progress: bool = True) -> dict:
    """Train, evaluate and write Table 1 and Figure 3 into `out` (see the module docstring); returns table1's dict
    with "files" and "date" added. Existing results are refused before anything is trained unless `overwrite`."""
    from ..metrics.weights import resolve_weights

    out = Path(out)
    check_outputs(out, TABLE1_FILES, overwrite)
    for name, value in (("--n", n_generated), ("--n-recon", n_recon), ("--n-real", n_real)):
        if value is not None and value < 2:
            raise UserError(f"{name} must be at least 2 (FID and KID need a covariance of two images), got {value}")
    if figure_images < 1:
        raise UserError(f"--figure-images must be at least 1, got {figure_images}")
    # Missing metric weights should stop the command now, not after hours of training.
    resolve_weights("inception", inception_path)
    resolve_weights("vgg16", vgg_path)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    runs = train_variants(base, out, variants, progress)
    trained = time.time()
    result = table1(runs, n_generated, n_real, n_recon, seed, truncation, batch_size, device, inception_path,
                    vgg_path, progress=progress)
    figure3(runs, out / "figure3.png", n_images=figure_images, seed=seed)
    result["date"] = time.strftime("%Y-%m-%d")
    result["seconds"] = {"training": round(trained - started, 1), "evaluation": round(time.time() - trained, 1)}
    result["figure3"] = {"file": "figure3.png", "rows": list(FIGURE_ROWS), "images_per_row": figure_images,
                         "inputs": f"the first {figure_images} test images",
                         "reconstructions": "posterior mean, EMA decoder", "samples": f"z ~ N(0, I), CPU seed {seed}, "
                         "the same z for every variant, EMA decoder"}
    atomic_write_text(out / "table1.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "table1.md", result["markdown"] + "\n")
    result["files"] = [str(out / n) for n in TABLE1_FILES]
    return result
