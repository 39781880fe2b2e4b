"""Perceptual path length (PPL, Karras et al. 2019, "A Style-Based Generator Architecture for GANs", Sec. 4.1):
how much the decoded image changes, perceptually, for a small step along a path in latent space.

For a path p(t) between two latents, a step eps = 1e-4 and an image distance d (LPIPS-VGG in `evaluate`):

    sample = d(G(p(t)), G(p(t + eps))) / eps^2,    t ~ U(0, 1) ("full") or t = 0 ("end")

and PPL is the mean of many samples after discarding those below the 1st and above the 99th percentile, as
StyleGAN's implementation does (numpy percentiles with 'lower' / 'higher' rounding, bounds kept). LPIPS is already a
squared distance, hence eps^2. Everything here is plain arithmetic around injected `decode` / `distance` callables,
so it is tested without any network.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import UserError

EPSILON = 1e-4
LOW_PERCENTILE, HIGH_PERCENTILE = 1.0, 99.0
SAMPLINGS = ("full", "end")

PPL_DEFINITION = ("mean over samples of d(G(p(t)), G(p(t + eps))) / eps^2 with d = LPIPS, eps = 1e-4; samples below "
                  "the 1st percentile (numpy method='lower') or above the 99th (method='higher') discarded first, "
                  "as StyleGAN's implementation")
SLERP_DEFINITION = ("slerp(a, b, t) = sin((1 - t) W) / sin(W) a + sin(t W) / sin(W) b, W = angle between a and b "
                    "(Shoemake's formula on the unnormalised z, as White 2016 for Gaussian priors; StyleGAN instead "
                    "normalises to the unit sphere, which its mapping network does to z anyway but our decoder does "
                    "not, so unit-norm z would be far from N(0, I)); lerp where a and b are (anti)parallel")


def _as_column(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.reshape(-1, 1) if t.dim() > 0 else t


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Linear interpolation (1 - t) a + t b. a, b [N, D]; t a scalar or [N] -> [N, D] in a's dtype."""
    t = _as_column(t, a)
    return a + t * (b - a)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Spherical interpolation sin((1 - t) W) / sin(W) a + sin(t W) / sin(W) b, W the angle between a and b.

    a, b [N, D] (any norms, not normalised: see SLERP_DEFINITION); t a scalar or [N] -> [N, D] in a's dtype.
    slerp(a, b, 0) = a, slerp(a, b, 1) = b; for |a| = |b| the path stays on that sphere at constant angular speed.
    Where a and b are (nearly) parallel or opposite, sin(W) ~ 0 and the formula is 0/0: linear interpolation is used
    there (the limit for parallel vectors; opposite vectors have no unique great circle).
    """
    if a.shape != b.shape or a.dim() != 2:
        raise UserError(f"slerp needs latents [N, D] of one shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    t = _as_column(t, a)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-30).clamp(-1, 1).unsqueeze(1)
    omega = torch.acos(cos)
    sin = torch.sin(omega)
    degenerate = sin < 1e-6
    safe_sin = torch.where(degenerate, torch.ones_like(sin), sin)
    spherical = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / safe_sin
    return torch.where(degenerate, lerp(a, b, t), spherical)


INTERPOLATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor | float], torch.Tensor]] = {
    "lerp": lerp, "slerp": slerp}


def path_length_samples(decode: Callable[[torch.Tensor], torch.Tensor],
                        distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, interpolation: str = "lerp",
                        epsilon: float = EPSILON) -> torch.Tensor:
    """One PPL sample per pair: distance(decode(p(t)), decode(p(t + eps))) / eps^2, p = interpolation(a, b, .).

    a, b [N, D] latents (the path's ends); t [N] positions along it, usually in [0, 1] (t + eps may pass 1 by eps,
    as in StyleGAN). decode: [M, D] -> images [M, ...] (in `evaluate`, [M, C, H, W] in [-1, 1]); both ends of every
    step are decoded in one call of 2N latents. distance: two image batches [N, ...] -> [N] squared distances.
    The path is computed in float64 so that the eps-step is not lost to float32 rounding before decoding.
    Returns [N] float64 on the CPU.
    """
    if interpolation not in INTERPOLATIONS:
        raise UserError(f"unknown interpolation {interpolation!r}; choose one of: {', '.join(INTERPOLATIONS)}")
    if not epsilon > 0:
        raise UserError(f"epsilon must be positive, got {epsilon}")
    a64, b64 = a.double(), b.double()
    t64 = torch.as_tensor(t, dtype=torch.float64, device=a.device).reshape(-1)
    if t64.numel() != len(a64):
        raise UserError(f"need one t per latent pair: {t64.numel()} values for {len(a64)} pairs")
    interpolate = INTERPOLATIONS[interpolation]
    points = torch.cat([interpolate(a64, b64, t64), interpolate(a64, b64, t64 + epsilon)])
    images = decode(points)
    first, second = images[:len(a64)], images[len(a64):]
    return (distance(first, second).double() / epsilon ** 2).cpu()


def percentile_filter(samples: np.ndarray | torch.Tensor | list[float], low: float = LOW_PERCENTILE,
                      high: float = HIGH_PERCENTILE) -> np.ndarray:
    """The samples [N] (float64) within [lo, hi], lo = the `low` percentile rounded down to a sample
    (numpy method='lower'), hi = the `high` percentile rounded up (method='higher'); bounds are kept. This is
    StyleGAN's filtering: it drops the rare huge values where the path crosses a sharp change of the image."""
    s = np.asarray(samples.cpu() if isinstance(samples, torch.Tensor) else samples, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise UserError("perceptual path length needs at least one sample; use a larger N")
    lo = np.percentile(s, low, method="lower")
    hi = np.percentile(s, high, method="higher")
    return s[(lo <= s) & (s <= hi)]


def perceptual_path_length(samples: np.ndarray | torch.Tensor | list[float]) -> float:
    """PPL from its samples [N]: the mean of `percentile_filter(samples)`."""
    return float(percentile_filter(samples).mean())
