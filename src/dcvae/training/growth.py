"""Progressive growing (ProGAN): which resolution a run trains at, how far the newest level is faded in, and the
real images at that resolution, all as functions of the number of real images shown so far.

A run's growth state is one integer (images shown), saved in every checkpoint, so resuming in the middle of a
fade-in continues with the same alpha, batch size and real-image blend.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import Config, level_of


@dataclass(frozen=True)
class Phase:
    level: int        # the run works at 4 * 2**level px
    alpha: float      # in [0, 1]: how far the newest level is faded in (1: stable)
    batch_size: int   # real images per D step, per process

    @property
    def resolution(self) -> int:
        return 4 << self.level


class GrowthSchedule:
    """The phases of `cfg.growth` for `cfg.model.resolution`: the start level is stable for `stable_images`, then
    each next level fades in over `fade_images` (alpha rising linearly from 0 to 1) and is stable for
    `stable_images`; the last level stays stable. Non-progressive runs have one stable phase at their resolution."""

    def __init__(self, cfg: Config):
        m, g = cfg.model, cfg.growth
        self.batch_sizes = cfg.batch_sizes()
        if m.backbone != "progressive":
            self.start, self.final = -1, -1
            self.fade = self.stable = 1
            return
        self.start, self.final = level_of(g.start_resolution), level_of(m.resolution)
        self.fade, self.stable = g.fade_images, g.stable_images

    @property
    def progressive(self) -> bool:
        return self.final >= 0

    def phase(self, images: int) -> Phase:
        """The phase after `images` real images have been shown to the discriminator."""
        if not self.progressive:
            return Phase(-1, 1.0, self.batch_sizes[0])
        level, seen = self.start, images - self.stable
        while seen >= 0 and level < self.final:
            if seen < self.fade:
                return Phase(level + 1, seen / self.fade, self.batch_sizes[level + 1])
            level, seen = level + 1, seen - self.fade - self.stable
        return Phase(level, 1.0, self.batch_sizes[level])

    def images_to_full_growth(self) -> int:
        """Real images until the last level is fully faded in."""
        return self.stable + (self.final - self.start) * (self.fade + self.stable) - self.stable \
            if self.progressive else 0


def real_images(x: torch.Tensor, phase: Phase) -> torch.Tensor:
    """Real images [N, C, R, R] at the data's resolution -> [N, C, r, r] at the phase's (2x2 average pooling, as
    ProGAN), blended during a fade-in with their half-resolution version upsampled (nearest), as the generator's
    output is blended, so that D sees reals and fakes made the same way."""
    if phase.level < 0:
        return x
    r = phase.resolution
    if x.shape[-1] != r:
        x = F.avg_pool2d(x, x.shape[-1] // r)
    if phase.alpha < 1.0:
        low = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
        x = torch.lerp(low, x, phase.alpha)
    return x
