"""Linear probe of the latent representation (paper Table 6, the protocol of Guided-VAE [12]).

Freeze the encoder, take the posterior mean mu of every image, train a linear (multinomial logistic) classifier on
the training split and report the classification error on the test split. Table 6 repeats this for latent sizes
16 / 32 / 64 over 5 trials (5 independently trained models) and reports the mean and a 95% confidence interval.

The paper does not say how the classifier is regularised. Ours has a small ridge penalty, applied after whitening mu
with the train split's covariance, so that the error does not depend on how the encoder's linear head scales mu:
on a penalised classifier over standardised mu, directions that the head shrinks are priced out (at d_z=64 on MNIST,
3.67 % against 2.67 % whitened, docs/results.md). `scaling="standardised"` gives the earlier probe.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import UserError

DEFAULT_SCALING = "whitened"
SCALINGS = {"whitened": "whitened features (the train split's PCA whitening: the same classifier for any "
                        "invertible linear map of the features)",
            "standardised": "standardised features (per-feature mean 0, std 1; the default before 2026-12-04)"}


def protocol(scaling: str = DEFAULT_SCALING) -> dict[str, str]:
    """What the probe of `probe_error` / `table6` does, for a result's JSON."""
    return {"features": "posterior mean mu of the frozen encoder (eval mode)", "scaling": scaling,
            "classifier": f"multinomial logistic regression on {SCALINGS[scaling]}, L-BFGS, float64, weight decay "
                          "1e-4, at most 100 iterations, trained on the train split",
            "metric": "classification error on the test split"}


@torch.no_grad()
def encode_dataset(model, dataset: Dataset, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """The posterior means of a labelled data set: (mu [N, latent] float32, labels [N] long)."""
    latents, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        latents.append(model.encode(x).cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(latents), require_labels(torch.cat(labels))


def require_labels(labels: torch.Tensor) -> torch.Tensor:
    """The labels [N] of a data set, refused when it has none (its loader gives -1)."""
    if (labels < 0).any():
        raise UserError("the linear probe needs a labelled data set (mnist, fashion-mnist, cifar10, stl10 train/test)")
    return labels


def standardisation(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation of [N, d] features (a constant feature gets std 1e-8, not 0)."""
    return features.mean(0), features.std(0).clamp_min(1e-8)


def whitening(features: torch.Tensor, relative_floor: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA whitening of [N, d] features: (mean [d], map [d, k]) with (features - mean) @ map of identity covariance.

    Directions of variance below relative_floor times the largest (constant or numerically dead) are dropped, so
    k <= d. A ridge penalty on the whitened features is the same for every invertible linear map of the features:
    the probe then measures what the features hold linearly, not how the encoder's head happens to scale them.
    """
    x = features.double()
    mean = x.mean(0)
    covariance = torch.atleast_2d(torch.cov((x - mean).T))
    variances, directions = torch.linalg.eigh(covariance)
    kept = variances > max(float(variances.max()), 0.0) * relative_floor
    return mean, directions[:, kept] / variances[kept].sqrt()


def fit_linear_classifier(features: torch.Tensor, labels: torch.Tensor, weight_decay: float = 1e-4,
                          max_iterations: int = 100, scaling: str = DEFAULT_SCALING,
                          ) -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on whitened (or standardised) features, full-batch L-BFGS in float64
    (deterministic).

    features [N, d], labels [N] in 0..K-1 -> (linear layer, feature mean [d], feature map [d, k]); the classifier
    reads (features - mean) @ map.
    """
    if scaling not in SCALINGS:
        raise UserError(f"unknown probe scaling {scaling!r}; use one of {', '.join(SCALINGS)}")
    x = features.double()
    if scaling == "whitened":
        mean, feature_map = whitening(x)
    else:
        mean, std = standardisation(x)
        feature_map = torch.diag(1 / std)
    x = (x - mean) @ feature_map
    classes = int(labels.max()) + 1
    linear = torch.nn.Linear(x.shape[1], classes).double()
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iterations, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(linear(x), labels) + 0.5 * weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return linear, mean, feature_map


def classification_error(linear: torch.nn.Linear, mean: torch.Tensor, feature_map: torch.Tensor,
                         features: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of misclassified examples, in [0, 1]."""
    with torch.no_grad():
        predictions = linear((features.double() - mean) @ feature_map).argmax(1)
    return float((predictions != labels).double().mean())


def linear_probe_error(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                       test_labels: torch.Tensor, scaling: str = DEFAULT_SCALING) -> float:
    """Test error in [0, 1] of the linear classifier (`fit_linear_classifier`) fitted on the train features."""
    return classification_error(*fit_linear_classifier(train_features, train_labels, scaling=scaling),
                                test_features, test_labels)


def nearest_neighbour_error(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                            test_labels: torch.Tensor, k: int = 5, standardise: bool = True) -> float:
    """Test error in [0, 1] of a k-nearest-neighbour vote (Euclidean; on features standardised by the train split,
    as the linear probe's, unless `standardise` is False: raw pixels, whose rarely inked border would be blown up).

    Not the Table 6 protocol: a non-linear read-out of the same features, which tells whether what a linear
    classifier misses is in them at all. train_features [N, d], test_features [M, d]; ties go to the lower class.
    """
    train, test = train_features.float(), test_features.float()
    if standardise:
        mean, std = standardisation(train)
        train, test = (train - mean) / std, (test - mean) / std
    classes = int(train_labels.max()) + 1
    wrong = 0
    for start in range(0, len(test), 1000):   # a [1000, N] distance block at a time
        nearest = torch.cdist(test[start:start + 1000], train).topk(k, largest=False).indices
        votes = F.one_hot(train_labels[nearest], classes).sum(1)
        wrong += int((votes.argmax(1) != test_labels[start:start + 1000]).sum())
    return wrong / len(test)


def probe_error(model, train_set: Dataset, test_set: Dataset, scaling: str = DEFAULT_SCALING) -> float:
    """Test error in [0, 1] of a linear classifier trained on the train-set latents of `model`."""
    train_z, train_y = encode_dataset(model, train_set)
    test_z, test_y = encode_dataset(model, test_set)
    return linear_probe_error(train_z, train_y, test_z, test_y, scaling)


@dataclass
class Interval:
    mean: float
    half_width: float
    n: int
    standard_error: float = float("nan")      # s / sqrt(n); nan below two values or when rebuilt from a table

    def percent(self) -> str:
        if self.n < 2:
            return f"{100 * self.mean:.2f}% (1 trial)"
        return f"{100 * self.mean:.2f}% ± {100 * self.half_width:.2f}"


def confidence_interval(values: list[float], level: float = 0.95) -> Interval:
    """Mean, standard error s / sqrt(n) and the half-width of the Student-t confidence interval
    (t_{(1+level)/2, n-1} * s / sqrt(n))."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return Interval(mean, float("nan"), n)
    standard_error = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) / math.sqrt(n)
    return Interval(mean, float(stats.t.ppf((1 + level) / 2, n - 1)) * standard_error, n, standard_error)


VARIANT_NAMES = {"vae": "VAE", "vaegan": "VAE/GAN", "vae-contrastive": "VAE-Contrastive", "dcvae": "DC-VAE"}


def table6(runs: dict[tuple[str, int], list[str]], progress: bool = True, train_images: int | None = None,
           test_images: int | None = None, scaling: str = DEFAULT_SCALING) -> dict:
    """Probe every trained run and aggregate as paper Table 6.

    runs: {(variant, latent_dim): [run folder, ...]}; train_images / test_images: use only the first N of each
    split (None: all, as in the paper); scaling: of the classifier's input, one of SCALINGS
    -> {"rows": {variant: {latent_dim: {"errors": [...], "mean": m, "ci95": h, "runs": [...], "iterations":
    [generator iterations of each probed checkpoint]}}}, "markdown": the table in the paper's layout,
    "protocol": {...}}.
    """
    from ..data import build_dataset
    from ..model import load

    rows: dict[str, dict[int, dict]] = {}
    datasets: dict[tuple, tuple[Dataset, Dataset]] = {}
    for (variant, latent_dim), folders in sorted(runs.items()):
        errors, iterations = [], []
        for folder in folders:
            model = load(folder)
            iterations.append(model.iteration)
            m, d = model.config.model, model.config.data
            key = (d.dataset, d.root, m.image_channels, m.resolution)
            if key not in datasets:
                train_set = build_dataset(d, m.image_channels, m.resolution, split="train")
                test_set = build_dataset(d, m.image_channels, m.resolution, split="test")
                for name, limit, ds in (("train", train_images, train_set), ("test", test_images, test_set)):
                    if limit is not None and limit > len(ds):
                        raise UserError(f"--{name}-images {limit} is more than the {len(ds)} images of the "
                                        f"{name} split; use at most {len(ds)}")
                datasets[key] = (Subset(train_set, range(train_images or len(train_set))),
                                 Subset(test_set, range(test_images or len(test_set))))
            error = probe_error(model, *datasets[key], scaling)
            errors.append(error)
            if progress:
                print(f"probe: {folder} (iteration {iterations[-1]}): test error {100 * error:.2f}%", flush=True)
        ci = confidence_interval(errors)
        rows.setdefault(variant, {})[latent_dim] = {"errors": errors, "mean": ci.mean, "ci95": ci.half_width,
                                                    "runs": [str(f) for f in folders], "iterations": iterations}
    dims = sorted({dim for row in rows.values() for dim in row})
    lines = ["| Method | " + " | ".join(f"d_z={dim} ↓" for dim in dims) + " |",
             "|---|" + "---|" * len(dims)]
    for variant, row in rows.items():
        cells = [Interval(row[dim]["mean"], row[dim]["ci95"], len(row[dim]["errors"])).percent() if dim in row
                 else "-" for dim in dims]
        lines.append(f"| {VARIANT_NAMES.get(variant, variant)} | " + " | ".join(cells) + " |")
    result_protocol = {**protocol(scaling), "train_images": train_images or "all",
                       "test_images": test_images or "all",
                       "interval": "95% Student-t confidence interval over trials (independently trained models)"}
    return {"rows": rows, "markdown": "\n".join(lines), "protocol": result_protocol}
