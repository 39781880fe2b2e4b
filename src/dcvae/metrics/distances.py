"""Distances between image sets and image pairs: FID, KID, IS, pixel and perceptual distances.

Everything here is plain arithmetic on features (numpy or torch in, Python floats out), computed in float64, so it
can be tested against closed forms without any network.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import UserError

ArrayLike = np.ndarray | torch.Tensor


def _f64(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def feature_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """features [N, D] -> (mean [D], covariance [D, D]) in float64, covariance with the unbiased 1/(N-1) (as np.cov
    and every FID implementation use). N >= 2."""
    f = _f64(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise UserError(f"FID statistics need features [N, D] with N >= 2; got shape {f.shape}: use more images")
    return f.mean(0), np.cov(f, rowvar=False)


def _symmetric_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    # A sample covariance is positive semi-definite; rounding makes its zero eigenvalues slightly negative.
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike,
                     root1: np.ndarray | None = None, factor2: np.ndarray | None = None) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2): |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)).

    mu [D], sigma [D, D]. tr(sqrt(S1 S2)) is the sum of the square roots of the eigenvalues of a symmetric positive
    semi-definite matrix with the same non-zero eigenvalues as S1 S2, found by a symmetric eigendecomposition in
    float64 with tiny negative eigenvalues clamped to 0. That keeps the result real and finite when the covariances
    are singular, e.g. with fewer samples than the 2048 feature dimensions, where scipy's sqrtm of the non-symmetric
    product can return complex values or NaN. The matrix is one of:
    - factor2 @ S1 @ factor2.T (K x K) when factor2 [K, D] with S2 = factor2.T @ factor2 is given, e.g. the centred
      features of N <= D samples over sqrt(N - 1): O(K D^2) arithmetic and no square root of S1;
    - sqrt(S1) S2 sqrt(S1) (D x D) otherwise, O(D^3); root1 = covariance_sqrt(sigma1) may be given, computed once
      for a reference set.
    """
    mu1, mu2, s1, s2 = _f64(mu1), _f64(mu2), _f64(sigma1), _f64(sigma2)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise UserError(f"Frechet distance needs means [D] and covariances [D, D] of the same D; got {mu1.shape}, "
                        f"{s1.shape}, {mu2.shape}, {s2.shape}")
    s1 = (s1 + s1.T) / 2
    s2 = (s2 + s2.T) / 2
    if factor2 is not None:
        b = _f64(factor2)
        m = b @ s1 @ b.T
    else:
        root1 = covariance_sqrt(s1) if root1 is None else root1
        m = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def covariance_sqrt(sigma: ArrayLike) -> np.ndarray:
    """The symmetric square root of a covariance [D, D] (float64, negative eigenvalues clamped to 0). Computing it
    once for a reference set saves one of the two eigendecompositions of every later Frechet distance against it."""
    s = _f64(sigma)
    return _symmetric_sqrt((s + s.T) / 2)


def kernel_inception_distance(f_real: ArrayLike, f_fake: ArrayLike, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): the unbiased estimate of MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3.

    f_real [N, d], f_fake [M, d]. As in Binkowski et al. and stylegan2-ada: `subsets` times, draw m =
    min(subset_size, N, M) rows of each set without replacement and compute the unbiased MMD^2 of the two subsets;
    return (mean, standard deviation over subsets, ddof=0). Raw value (papers often print KID x 1000).
    When m = N = M every draw is the whole of both sets, and the estimate does not depend on row order: it is
    computed once, and the standard deviation is 0 by construction (not a measure of uncertainty).
    """
    x_all, y_all = _f64(f_fake), _f64(f_real)
    if x_all.ndim != 2 or y_all.ndim != 2 or x_all.shape[1] != y_all.shape[1]:
        raise UserError(f"KID needs features [N, d] of the same d; got {y_all.shape} and {x_all.shape}")
    m = min(subset_size, x_all.shape[0], y_all.shape[0])
    if m < 2:
        raise UserError(f"KID needs at least 2 real and 2 generated images; got {y_all.shape[0]} and {x_all.shape[0]}")
    if subsets < 1:
        raise UserError(f"KID needs at least one subset, got subsets={subsets}")
    if m == x_all.shape[0] == y_all.shape[0]:
        return _unbiased_mmd2(x_all, y_all), 0.0
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        x = x_all[rng.choice(x_all.shape[0], m, replace=False)]
        y = y_all[rng.choice(y_all.shape[0], m, replace=False)]
        values[i] = _unbiased_mmd2(x, y)
    return float(values.mean()), float(values.std())


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 of two sets of m rows each under KID's cubic polynomial kernel."""
    m, d = x.shape
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    # Unbiased: the diagonal k(x_i, x_i) terms are left out of the within-set means.
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * kxy.sum() / (m * m))


def inception_score(probabilities: ArrayLike, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), over `splits` equal consecutive parts.

    probabilities [N, K]: class probabilities (rows summing to 1) of N images. Returns (mean, std over splits,
    ddof=0), as the original TF code and stylegan2-ada do. Ranges from 1 (all predictions identical) to K.
    """
    p = _f64(probabilities)
    if p.ndim != 2:
        raise UserError(f"Inception Score needs probabilities [N, K]; got shape {p.shape}")
    n = p.shape[0]
    if splits < 1 or n < splits:
        raise UserError(f"Inception Score with {splits} splits needs at least {splits} images, got {n}; "
                        "generate more images or use fewer splits")
    scores = []
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]
        marginal = part.mean(0, keepdims=True)
        # xlogy-style: 0 * log(0 / q) = 0, so one-hot predictions give finite scores.
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0).sum(1)
        scores.append(math.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


PIXEL_DEFINITION = ("per image, the squared L2 norm of the difference (sum of squared differences over all C x H x "
                    "W values) with images in [-1, 1]; averaged over images. Input vs its reconstruction")
PERCEPTUAL_DEFINITION = ("per image, the mean over (C, H, W) of the squared difference of VGG-16 relu4_3 features "
                         "(Johnson et al. 2016's feature reconstruction loss); averaged over images")


def pixel_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image pixel distance: ||x - y||_2^2 summed over C, H, W, images in [-1, 1].

    x, y [N, C, H, W] in [-1, 1] -> [N] float64. (The paper says "pixelwise L2 distance" without units; the sum of
    squared differences in [-1, 1] is the training loss's scale and is the reading whose magnitudes are consistent
    with the paper's Table 1, but that is our inference.) Average over images for the reported value.
    """
    if x.shape != y.shape:
        raise UserError(f"pixel distance needs images of the same shape; got {tuple(x.shape)} and {tuple(y.shape)}")
    return (x.double() - y.double()).pow(2).flatten(1).sum(1)


def perceptual_distance(fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
    """Per-image perceptual distance: mean over (C, H, W) of (fx - fy)^2 (Johnson et al. 2016).

    fx, fy [N, C, H, W]: VGG-16 relu4_3 features of the two images of each pair -> [N] float64.
    """
    if fx.shape != fy.shape:
        raise UserError(f"perceptual distance needs features of the same shape; got {tuple(fx.shape)} and "
                        f"{tuple(fy.shape)}")
    return (fx.double() - fy.double()).pow(2).flatten(1).mean(1)
