"""`evaluate`: the paper's Table 1 metrics for a checkpoint, with the whole protocol recorded beside every number.

Sampling metrics (fid, kid, is) use `model.sample`: the EMA decoder (unless decoder="live") in eval mode, z ~ N(0, I),
optionally clipped to [-t, t] (`truncation`; the authors' FID code clips to [-1, 1]); prior="fitted" draws z from
the Gaussian fitted to the aggregate posterior of the train split instead (dcvae.latent.fit_aggregate_posterior: a
deviation from the paper, recorded in the protocol). Reconstruction metrics
(recon_fid, recon_kid, recon_is, pixel, perceptual, lpips) pass the test split through the encoder, sampling z from
q(z|x) as the authors do (recon_z="mean" uses the posterior mean), and decode; the split is passed as many times as
needed for `n_recon` images (the authors' reconstruction FID passes the CIFAR-10 test set ~5 times). Both FIDs
compare with the reference statistics of the checkpoint's data set (`reference_split`, the paper: train), which are
cached under `<cache>/stats/<sha256 of their inputs>.npz`. Perceptual path length (ppl_z, ppl_encoded and
their "_end" variants; see ppl.py) uses LPIPS-VGG on the decoder's images, with n_generated pairs of prior samples
(slerp in z) or n_recon pairs of encoder means of random images of the recon split (lerp). probe_error is the
linear probe of Table 6 (see probe.py): a classifier fitted on the encoder means of the whole train split, its error
on the whole test split, in [0, 1]. Images are streamed batch by batch; nothing is written as PNG.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from ..config import LABELLED_DATASETS
from ..errors import UserError
from ..files import atomic_output, atomic_write_text
from ..latent.tools import fit_aggregate_posterior
from .distances import (PERCEPTUAL_DEFINITION, PIXEL_DEFINITION, covariance_sqrt, frechet_distance,
                        inception_score, kernel_inception_distance, perceptual_distance, pixel_distance)
from .probe import DEFAULT_SCALING as PROBE_SCALING, probe_error, protocol as probe_protocol
from .ppl import EPSILON, PPL_DEFINITION, SLERP_DEFINITION, path_length_samples, percentile_filter
from .weights import cache_root

log = logging.getLogger("dcvae.metrics")

DEFAULT_METRICS = ("fid", "kid", "is", "recon_fid", "pixel", "perceptual")
PPL = ("ppl_z", "ppl_encoded", "ppl_z_end", "ppl_encoded_end")
METRICS = DEFAULT_METRICS + ("recon_kid", "recon_is", "lpips") + PPL + ("probe_error",)
SAMPLING = ("fid", "kid", "is")
RECONSTRUCTION = ("recon_fid", "recon_kid", "recon_is", "pixel", "perceptual", "lpips")
INCEPTION_METRICS = ("fid", "kid", "is", "recon_fid", "recon_kid", "recon_is")
NEEDS_REFERENCE = ("fid", "kid", "recon_fid", "recon_kid")
STATS_FORMAT = 1
# Seed offsets of the metrics' own generators (sampling: seed, reconstructions: seed + 1), so that each metric's
# draws do not depend on which other metrics are computed.
PPL_SEED_OFFSET = {"ppl_z": 2, "ppl_encoded": 3, "ppl_z_end": 2, "ppl_encoded_end": 3}


def parse_metrics(text: str | Sequence[str]) -> tuple[str, ...]:
    """"fid,kid" or ["fid", "kid"] or "all" -> validated names, in the given order, without repeats."""
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if items == ["all"]:
        return METRICS
    unknown = [t for t in items if t not in METRICS]
    if unknown or not items:
        raise UserError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from: "
                        f"{', '.join(METRICS)} (or all)")
    return tuple(dict.fromkeys(items))


class FeatureAccumulator:
    """Running mean and covariance of features [B, D] in float64, keeping the features (float32: the networks compute
    in float32, so this loses nothing) for KID when asked, and while there are at most D of them for the Frechet
    distance's low-rank path (`covariance_factor`)."""

    def __init__(self, keep: bool = False):
        self.keep = keep
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.sum: torch.Tensor | None = None
        self.outer: torch.Tensor | None = None
        self.kept: list[torch.Tensor] = []

    def add(self, features: torch.Tensor) -> None:
        f = features.detach().double().cpu()
        if self.shift is None:
            # Accumulating around a rough mean avoids cancellation in sum(x x^T) - n mu mu^T.
            self.shift = f.mean(0)
            self.sum = torch.zeros_like(self.shift)
            self.outer = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64)
        c = f - self.shift
        self.sum += c.sum(0)
        self.outer += c.T @ c
        self.n += len(f)
        if self.keep or self.n <= f.shape[1]:
            self.kept.append(features.detach().float().cpu())
        else:
            self.kept = []

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean [D], covariance [D, D] with 1/(n-1)), float64."""
        if self.n < 2:
            raise UserError(f"FID statistics need at least 2 images, got {self.n}; use a larger N")
        mean_c = self.sum / self.n
        cov = (self.outer - self.n * torch.outer(mean_c, mean_c)) / (self.n - 1)
        return (mean_c + self.shift).numpy(), cov.numpy()

    def features(self) -> np.ndarray:
        return torch.cat(self.kept).numpy()

    def covariance_factor(self) -> np.ndarray | None:
        """F [n, D] float64 with covariance = F^T F (centred features over sqrt(n - 1)) when n <= D, else None."""
        if not self.kept or self.n > self.kept[0].shape[1]:
            return None
        f = torch.cat(self.kept).double()
        return ((f - f.mean(0)) / math.sqrt(self.n - 1)).numpy()


@dataclass
class ReferenceStatistics:
    mu: np.ndarray                   # [D] float64
    sigma: np.ndarray                # [D, D] float64
    features: np.ndarray | None      # [N, D] float32, kept when KID needs them
    n: int
    path: Path | None                # the cache file
    from_cache: bool
    _root: np.ndarray | None = None

    def sigma_sqrt(self) -> np.ndarray:
        """sqrt(sigma), computed once (an eigendecomposition of a 2048 x 2048 matrix) for FID and recon FID."""
        if self._root is None:
            self._root = covariance_sqrt(self.sigma)
        return self._root


def stats_cache_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_root() / "stats" / f"{digest}.npz"


def _read_cached(path: Path, key_text: str, need_features: bool) -> ReferenceStatistics | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key_text:
                log.warning("reference statistics %s were written for other inputs; recomputing", path)
                return None
            if need_features and "features" not in data.files:
                return None            # written without features; recomputed once and rewritten with them
            features = data["features"] if "features" in data.files else None
            return ReferenceStatistics(data["mu"], data["sigma"], features, int(data["n"]), path, True)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        log.warning("reference statistics %s are unreadable (%s); recomputing", path, e)
        return None


def _write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz that readers see whole or not at all: a temporary file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def reference_statistics(dataset: Dataset, extractor: Callable[[torch.Tensor], torch.Tensor], n: int, key: dict,
                         batch_size: int = 64, need_features: bool = False, use_cache: bool = True,
                         progress: bool = True) -> ReferenceStatistics:
    """Mean and covariance (and, if `need_features`, the features) of the first `n` images of `dataset`.

    dataset yields (image [C, R, R] in [-1, 1], label); extractor maps images [B, C, R, R] -> features [B, D].
    `key` names everything the result depends on (data, N, network, weights digest, resizer); its SHA-256 names the
    cache file, which is read instead of recomputing and written atomically after computing.
    """
    if n > len(dataset):
        raise UserError(f"{n} reference images asked for but the data set has {len(dataset)}; lower --n-real")
    key = {**key, "n": n, "format": STATS_FORMAT}
    key_text = json.dumps(key, sort_keys=True)
    path = stats_cache_path(key)
    if use_cache and path.is_file():
        cached = _read_cached(path, key_text, need_features)
        if cached is not None:
            log.info("reference statistics from cache %s", path)
            return cached
    acc = FeatureAccumulator(keep=need_features)
    loader = DataLoader(Subset(dataset, range(n)), batch_size=batch_size, shuffle=False)
    with tqdm(total=n, desc="reference", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for x, _ in loader:
            acc.add(extractor(x))
            bar.update(len(x))
    mu, sigma = acc.statistics()
    features = acc.features() if need_features else None
    stats = ReferenceStatistics(mu, sigma, features, n, path if use_cache else None, False)
    if use_cache:
        arrays = {"mu": mu, "sigma": sigma, "n": np.array(n), "key": np.array(key_text)}
        if features is not None:
            arrays["features"] = features
        try:
            _write_atomically(path, arrays)
        except OSError as e:
            # A read-only cache costs time on the next run, not correctness: warn and go on.
            log.warning("could not cache reference statistics at %s (%s); set DCVAE_CACHE to a writable folder", path,
                        e.strerror or e)
            stats.path = None
    return stats


def _batches(n: int, batch_size: int) -> Iterable[int]:
    for start in range(0, n, batch_size):
        yield min(batch_size, n - start)


def _cycled(dataset: Dataset, n: int, batch_size: int) -> Iterable[torch.Tensor]:
    """Batches of images from `dataset` in order, passing over it again until n images were given."""
    given = 0
    while given < n:
        for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            x = x[:n - given]
            given += len(x)
            yield x
            if given >= n:
                return


def _split_of(data_cfg, split: str) -> str | None:
    return None if data_cfg.dataset == "folder" else split


def _run_folder(checkpoint_folder: Path) -> Path | None:
    run = checkpoint_folder.parent.parent
    if checkpoint_folder.parent.name == "checkpoints" and (run / "config.json").is_file():
        return run
    return None


def evaluate(checkpoint: str | Path, metrics: Sequence[str] | str | None = None, n_generated: int = 50_000,
             n_real: int | None = None, reference_split: str = "train", decoder: str = "ema",
             truncation: float | None = None, seed: int = 0, batch_size: int = 64, device: str = "cpu",
             inception_path: str | Path | None = None, vgg_path: str | Path | None = None,
             lpips_path: str | Path | None = None, progress: bool = True, out: str | Path | None = None,
             overwrite: bool = False, n_recon: int | None = None, recon_split: str = "test",
             recon_z: str = "sample", resizer: str = "bilinear", kid_subsets: int = 100,
             kid_subset_size: int = 1000, is_splits: int = 10, use_cache: bool = True, prior: str = "standard",
             prior_fit_n: int | None = None) -> dict:
    """Compute `metrics` for a checkpoint (folder, run folder or checkpoints/ folder) and return them with the
    protocol; also write them as JSON to `out` (if given) and append a line to the run's metrics.jsonl (if the
    checkpoint is inside a run folder).

    metrics: names from METRICS, or None for DEFAULT_METRICS, in which case IS is left out (with a note) when the
    Inception weights hold no classifier; asked for explicitly, it raises UserError instead.
    n_generated: prior samples for fid/kid/is, and latent pairs for ppl_z(_end). n_real: reference images, default
    the whole reference split. n_recon: reconstructions for the recon_* / pixel / perceptual / lpips metrics, and
    image pairs for ppl_encoded(_end), default n_generated.
    prior: "standard" (z ~ N(0, I), the paper's) or "fitted" (the aggregate posterior's Gaussian, fitted on the first
    prior_fit_n images of the train split, default all) for fid/kid/is; ppl_z keeps N(0, I).
    Returns {"metrics": {name: value, ...}, "protocol": {...}, "checkpoint", "iteration", "date", ...}.
    """
    import dcvae
    from ..data import build_dataset
    from ..model import load
    from .networks import InceptionFeatures, VGG16Relu43

    started = time.perf_counter()
    explicit = metrics is not None
    wanted = list(DEFAULT_METRICS if metrics is None else parse_metrics(metrics))
    n_recon = n_generated if n_recon is None else n_recon
    for name, value in (("n_generated", n_generated), ("n_recon", n_recon), ("batch_size", batch_size)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if n_real is not None and n_real < 2:
        raise UserError(f"n_real must be at least 2 (a covariance needs two images), got {n_real}")
    if truncation is not None and not truncation > 0:
        raise UserError(f"truncation must be a positive number (z is clipped to [-t, t]), got {truncation}")
    if prior not in ("standard", "fitted"):
        raise UserError(f"prior must be 'standard' (z ~ N(0, I), the paper's) or 'fitted' (a Gaussian fitted to the "
                        f"aggregate posterior), got {prior!r}")
    if prior_fit_n is not None and prior != "fitted":
        raise UserError("prior_fit_n (--prior-fit-n) sets the images of the fitted prior; it needs prior='fitted'")
    if recon_z not in ("sample", "mean"):
        raise UserError(f"recon_z must be 'sample' (z ~ q(z|x), the authors' choice) or 'mean', got {recon_z!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device} asked for but CUDA is not available here; use --device cpu")
    out_path = Path(out) if out else None
    if out_path is not None and out_path.exists() and not overwrite:
        raise UserError(f"{out_path} already exists; choose another output file or pass --overwrite")

    model = load(checkpoint, decoder=decoder, device=device)      # verifies the checkpoint's files once
    folder, iteration = model.checkpoint, model.iteration
    assert not model.training
    cfg = model.config
    channels, resolution = cfg.model.image_channels, cfg.model.resolution
    notes: list[str] = []

    # Everything that can fail for a user reason (weights, data, N) is checked before minutes of computing.
    inception = None
    if any(m in INCEPTION_METRICS for m in wanted):
        inception = InceptionFeatures(inception_path, device=device, resizer=resizer)
        if not inception.can_classify and any(m in ("is", "recon_is") for m in wanted):
            if explicit:
                inception.require_classifier()
            wanted = [m for m in wanted if m not in ("is", "recon_is")]
            notes.append(f"IS left out: the Inception weights ({inception.weights.path}) hold no classifier layer; "
                         "put NVIDIA's inception-2015-12-05.pt in the cache or pass --inception to get IS")
            log.warning(notes[-1])
    for prefix, n in (("", n_generated), ("recon_", n_recon)):
        if n < 2 and any(f"{prefix}{m}" in wanted for m in ("fid", "kid")):
            raise UserError(f"{prefix}fid and {prefix}kid need at least 2 images, got {n}")
        if n < is_splits and f"{prefix}is" in wanted:
            raise UserError(f"{prefix}is with {is_splits} splits needs at least {is_splits} images, got {n}")
    vgg = None
    ppl_wanted = [m for m in wanted if m in PPL]
    if "perceptual" in wanted or "lpips" in wanted or ppl_wanted:
        vgg = VGG16Relu43(vgg_path, device=device, lpips="lpips" in wanted or bool(ppl_wanted),
                          lpips_path=lpips_path)

    built: dict[str, Dataset] = {}

    def split_data(split: str) -> Dataset:
        """The checkpoint's data set, one split, built once however many metrics read it."""
        if split not in built:
            built[split] = build_dataset(cfg.data, channels, resolution, split=split)
        return built[split]

    recon_data = None
    reconstructing = any(m in RECONSTRUCTION for m in wanted)
    ppl_encoded = any(m.startswith("ppl_encoded") for m in wanted)
    if reconstructing or ppl_encoded:
        recon_data = split_data(recon_split)
        if len(recon_data) == 0:
            raise UserError(f"the {recon_split} split holds no images; choose another --recon-split")
        if ppl_encoded and len(recon_data) < 2:
            raise UserError(f"ppl_encoded needs pairs of distinct images but the {recon_split} split holds one; "
                            "choose another --recon-split")
    probe_sets = None
    if "probe_error" in wanted:
        probe_sets = split_data("train"), split_data("test")
        for split, data in zip(("train", "test"), probe_sets):
            if data.labels is None:
                raise UserError(f"probe_error needs labels for the train and test splits, and the {split} split of "
                                f"{data.description} has none; the probe runs on a checkpoint trained on a labelled "
                                f"data set ({', '.join(LABELLED_DATASETS)})")
    fitted = None
    sampling = any(m in SAMPLING for m in wanted)
    if sampling and prior == "fitted":
        fit_data = split_data("train")
        fitted = fit_aggregate_posterior(model, fit_data, prior_fit_n, batch_size)
    reference = None
    reference_info: dict = {}
    if any(m in NEEDS_REFERENCE for m in wanted):
        ref_data = split_data(reference_split)
        n_ref = len(ref_data) if n_real is None else n_real
        if n_ref > len(ref_data):
            raise UserError(f"--n-real {n_ref} is larger than the reference data ({ref_data.description}); use at "
                            f"most {len(ref_data)}")
        key = {"dataset": cfg.data.dataset, "split": _split_of(cfg.data, reference_split),
               "root": str(Path(cfg.data.root).expanduser().resolve()) if cfg.data.root else "",
               "source": getattr(ref_data, "description", ""), "resolution": resolution, "channels": channels,
               "selection": "first N in data-set order", "network": "inception-2015-12-05 pool3",
               "weights_sha256": inception.weights.sha256, "resizer": inception.protocol()["resizer"],
               "input": inception.protocol()["input"]}
        reference = reference_statistics(ref_data, inception, n_ref, key, batch_size,
                                         need_features=any(m in ("kid", "recon_kid") for m in wanted),
                                         use_cache=use_cache, progress=progress)
        reference_info = {"dataset": cfg.data.dataset, "split": key["split"], "root": key["root"],
                          "description": key["source"], "n_real": n_ref, "selection": key["selection"],
                          "statistics_cache": str(reference.path) if reference.path else None,
                          "statistics_from_cache": reference.from_cache}

    values: dict[str, float] = {}
    with torch.no_grad():
        if sampling:
            acc = FeatureAccumulator(keep="kid" in wanted)
            probs: list[torch.Tensor] = []
            generator = torch.Generator(device=model.device).manual_seed(seed)
            with tqdm(total=n_generated, desc="samples", unit="img", disable=not progress, dynamic_ncols=True) as bar:
                for b in _batches(n_generated, batch_size):
                    x = model.sample(b, truncation=truncation, generator=generator, prior=fitted)
                    if "is" in wanted:
                        f, p = inception.features_and_probabilities(x)
                        probs.append(p)
                    else:
                        f = inception(x)
                    acc.add(f)
                    bar.update(b)
            _set_inception_values(values, "", wanted, acc, probs, reference, kid_subsets, kid_subset_size, is_splits,
                                  seed)

        if reconstructing:
            acc = FeatureAccumulator(keep="recon_kid" in wanted)
            probs = []
            pixel, percept, lp = [], [], []
            need_features = any(m in ("recon_fid", "recon_kid", "recon_is") for m in wanted)
            generator = torch.Generator(device=model.device).manual_seed(seed + 1)
            with tqdm(total=n_recon, desc="reconstructions", unit="img", disable=not progress,
                      dynamic_ncols=True) as bar:
                for x in _cycled(recon_data, n_recon, batch_size):
                    x = x.to(model.device)
                    rec = model.decode(model.encode(x, sample=recon_z == "sample", generator=generator))
                    if "recon_is" in wanted:
                        f, p = inception.features_and_probabilities(rec)
                        probs.append(p)
                        acc.add(f)
                    elif need_features:
                        acc.add(inception(rec))
                    if "pixel" in wanted:
                        pixel.append(pixel_distance(x, rec).cpu())
                    if "perceptual" in wanted:
                        percept.append(perceptual_distance(vgg(x), vgg(rec)).cpu())
                    if "lpips" in wanted:
                        lp.append(vgg.lpips(x, rec))
                    bar.update(len(x))
            if need_features:
                _set_inception_values(values, "recon_", wanted, acc, probs, reference, kid_subsets, kid_subset_size,
                                      is_splits, seed)
            for name, parts in (("pixel", pixel), ("perceptual", percept), ("lpips", lp)):
                if parts:
                    values[name] = float(torch.cat(parts).mean())

        ppl_kept: dict[str, int] = {}
        for name in ppl_wanted:
            samples = _ppl_samples(model, name, n_generated if name.startswith("ppl_z") else n_recon, batch_size,
                                   seed + PPL_SEED_OFFSET[name], vgg, recon_data, progress)
            kept = percentile_filter(samples)
            values[name], ppl_kept[name] = float(kept.mean()), int(kept.size)
    if probe_sets is not None:
        values["probe_error"] = probe_error(model, *probe_sets, scaling=PROBE_SCALING)

    protocol: dict = {
        "metrics": wanted,
        "decoder": "EMA decoder weights" if decoder == "ema" else "live decoder weights",
        "mode": "eval (BatchNorm running statistics, no dropout)",
        "device": str(device), "batch_size": batch_size, "seed": seed,
    }
    if sampling and fitted is None:
        protocol["sampling"] = {"n_generated": n_generated, "prior": "standard", "latent": "z ~ N(0, I)",
                                "truncation": truncation,
                                "truncation_rule": "z clipped to [-t, t]" if truncation else "none", "seed": seed}
    elif sampling:
        protocol["sampling"] = {
            "n_generated": n_generated, "prior": "fitted",
            "latent": "z = m + L eps, eps ~ N(0, I), L L^T = C: (m, C) the mean and covariance of the aggregate "
                      "posterior of the fit images (C = Cov(mu), divided by n, + diag(mean sigma^2)); ex-post "
                      "density estimation, not the paper's z ~ N(0, I)",
            "fit": {"split": _split_of(cfg.data, "train"), "description": getattr(fit_data, "description", ""),
                    "n": len(fit_data) if prior_fit_n is None else prior_fit_n, "selection": "first n in order",
                    # how far the fitted Gaussian is from N(0, I), whose values are 0, 1 and [1, 1]
                    "norm_of_mean": round(float(fitted[0].norm()), 4),
                    "covariance_trace_per_dim": round(float(fitted[1].diagonal().mean()), 4),
                    "covariance_eigenvalues_min_max": [round(float(e), 4) for e in
                                                       torch.linalg.eigvalsh(fitted[1])[[0, -1]]]},
            "truncation": truncation, "truncation_rule": "eps clipped to [-t, t]" if truncation else "none",
            "seed": seed}
    if reconstructing:
        protocol["reconstruction"] = {
            "split": _split_of(cfg.data, recon_split), "description": getattr(recon_data, "description", ""),
            "n_recon": n_recon, "passes": n_recon / len(recon_data),
            "z": "sampled from q(z|x) (reparameterised)" if recon_z == "sample" else "posterior mean",
            "seed": seed + 1}
    if inception is not None:
        protocol["inception"] = inception.protocol()
    if reference_info:
        protocol["reference"] = reference_info
    if "kid" in wanted or "recon_kid" in wanted:
        protocol["kid"] = {"kernel": "k(x, y) = (x.y / 2048 + 1)^3", "estimator": "unbiased MMD^2",
                           "subsets": kid_subsets, "subset_size": f"min({kid_subset_size}, n_real, n_generated)",
                           "reported": "mean and std (ddof=0) over subsets, raw (not x1000); when n_real = "
                                       "n_generated <= the subset size every subset is the whole of both sets: one "
                                       "estimate, std 0"}
    if "is" in wanted or "recon_is" in wanted:
        protocol["is"] = {"splits": is_splits, "probabilities": "softmax of the 1008 logits without output bias "
                          "(as the original TF code and stylegan2-ada)"}
    if vgg is not None:
        protocol["vgg"] = vgg.protocol()
    if "pixel" in wanted:
        protocol["pixel"] = PIXEL_DEFINITION
    if "perceptual" in wanted:
        protocol["perceptual"] = PERCEPTUAL_DEFINITION
    if probe_sets is not None:
        protocol["probe"] = {**probe_protocol(PROBE_SCALING),
                             "train": probe_sets[0].description, "n_train": len(probe_sets[0]),
                             "test": probe_sets[1].description, "n_test": len(probe_sets[1])}
    if ppl_wanted:
        protocol["ppl"] = {
            "definition": PPL_DEFINITION, "epsilon": EPSILON, "distance": "LPIPS v0.1 VGG (protocol['vgg']['lpips'])",
            "images": "decoded at their native resolution, no crop or resize (StyleGAN crops faces and resizes "
                      "to 256x256 before LPIPS)",
            "filter": {"low_percentile": 1, "high_percentile": 99, "kept": ppl_kept},
            "t": "full: t ~ U(0, 1); end: t = 0 (StyleGAN draws t and multiplies it by 0); the step is t -> t + eps",
            "random": "one CPU torch.Generator per metric (the _end variant uses the same seed, hence the same "
                      "pairs); per batch: the pair, then t"}
        for name in ppl_wanted:
            if name.startswith("ppl_z"):
                protocol["ppl"][name] = {"n": n_generated, "latents": "z1, z2 ~ N(0, I) independently, not truncated",
                                         "path": "slerp(z1, z2, t)", "slerp": SLERP_DEFINITION,
                                         "seed": seed + PPL_SEED_OFFSET[name]}
            else:
                protocol["ppl"][name] = {
                    "n": n_recon, "split": _split_of(cfg.data, recon_split),
                    "description": getattr(recon_data, "description", ""),
                    "pairs": "two distinct images, i uniform, j uniform among the others; pairs drawn independently",
                    "latents": "encoder means (posterior mean of q(z|x))", "path": "lerp: (1 - t) mu1 + t mu2",
                    "seed": seed + PPL_SEED_OFFSET[name]}

    result = {
        "metrics": values, "checkpoint": str(folder), "iteration": iteration,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "dcvae_version": dcvae.__version__,
        "torch_version": torch.__version__, "wall_seconds": round(time.perf_counter() - started, 1),
        "notes": notes, "protocol": protocol,
    }
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_path, json.dumps(result, indent=2) + "\n")
    run = _run_folder(folder)
    if run is not None:
        record = {"iteration": iteration, "event": "evaluate", "date": result["date"],
                  **{f"eval/{k}": round(v, 6) for k, v in values.items()},
                  "eval/n_generated": n_generated if any(m in SAMPLING or m.startswith("ppl_z") for m in wanted)
                  else None,
                  "eval/n_real": reference_info.get("n_real"), "eval/n_recon": n_recon if recon_data else None,
                  "eval/reference_split": reference_info.get("split"), "eval/decoder": decoder,
                  "eval/truncation": truncation, "eval/seed": seed,
                  "eval/prior": prior if sampling else None,
                  **({"eval/probe_scaling": protocol["probe"]["scaling"]} if "probe" in protocol else {}),
                  "eval/result": str(out_path) if out_path else None}
        # One write of one line in append mode: a concurrent training process's lines are not interleaved with it.
        with open(run / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
    return result


def preflight(metrics: Sequence[str] | str, inception_path: str | Path | None = None,
              vgg_path: str | Path | None = None, lpips_path: str | Path | None = None) -> tuple[str, ...]:
    """Check now, in seconds, what would make `evaluate(..., metrics=metrics)` fail later for a user reason: the
    metric names and the weight files they need (found and verified as `evaluate` does; for IS, the Inception
    classifier). Computes nothing. Returns the parsed names. Used before training with periodic evaluation."""
    from .networks import InceptionFeatures
    from .weights import resolve_weights

    wanted = parse_metrics(metrics)
    if "is" in wanted or "recon_is" in wanted:
        InceptionFeatures(inception_path).require_classifier()
    elif any(m in INCEPTION_METRICS for m in wanted):
        resolve_weights("inception", inception_path)
    if any(m in ("perceptual", "lpips") + PPL for m in wanted):
        resolve_weights("vgg16", vgg_path)
    if any(m in ("lpips",) + PPL for m in wanted):
        resolve_weights("lpips_vgg", lpips_path)
    return wanted


def _ppl_samples(model, name: str, n: int, batch_size: int, seed: int, vgg, data: Dataset | None,
                 progress: bool) -> torch.Tensor:
    """The n PPL samples [n] (float64) of metric `name` (one of PPL), before filtering. Draws come from a CPU
    generator seeded with `seed`, so the pairs and t do not depend on the device."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    with tqdm(total=n, desc=name, unit="pair", disable=not progress, dynamic_ncols=True) as bar:
        for b in _batches(n, batch_size):
            if name.startswith("ppl_z"):
                a = torch.randn(b, model.latent_dim, generator=generator, dtype=torch.float64)
                c = torch.randn(b, model.latent_dim, generator=generator, dtype=torch.float64)
                interpolation = "slerp"
            else:
                i = torch.randint(len(data), (b,), generator=generator)
                # j uniform among the other images: a pair of one image would be a path of length 0.
                j = (i + torch.randint(1, len(data), (b,), generator=generator)) % len(data)
                x = torch.stack([data[k][0] for k in torch.cat([i, j]).tolist()])
                mu = model.encode(x)
                a, c = mu[:b], mu[b:]
                interpolation = "lerp"
            t = torch.rand(b, generator=generator, dtype=torch.float64)
            if name.endswith("_end"):
                t = torch.zeros_like(t)
            samples.append(path_length_samples(model.decode, vgg.lpips, a.to(model.device), c.to(model.device),
                                               t.to(model.device), interpolation))
            bar.update(b)
    return torch.cat(samples)


def _set_inception_values(values: dict[str, float], prefix: str, wanted: list[str], acc: FeatureAccumulator,
                          probs: list[torch.Tensor], reference: ReferenceStatistics | None, kid_subsets: int,
                          kid_subset_size: int, is_splits: int, seed: int) -> None:
    if f"{prefix}fid" in wanted:
        mu, sigma = acc.statistics()
        factor = acc.covariance_factor()
        root = reference.sigma_sqrt() if factor is None else None
        values[f"{prefix}fid"] = frechet_distance(reference.mu, reference.sigma, mu, sigma, root1=root, factor2=factor)
    if f"{prefix}kid" in wanted:
        mean, std = kernel_inception_distance(reference.features, acc.features(), kid_subsets, kid_subset_size, seed)
        values[f"{prefix}kid"], values[f"{prefix}kid_std"] = mean, std
    if f"{prefix}is" in wanted:
        mean, std = inception_score(torch.cat(probs), is_splits)
        values[f"{prefix}is"], values[f"{prefix}is_std"] = mean, std
    for v in values.values():
        if not math.isfinite(v):
            log.warning("a metric is not finite (%s); the images may contain NaN", values)
            break
