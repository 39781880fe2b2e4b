"""The progressive-growing backbone (Karras et al. 2018, "Progressive Growing of GANs") for 64..512 px.

The paper trains DC-VAE at high resolution on the Progressive GAN generator and discriminator; the authors did not
release that code. ProGAN's ingredients, all here: pixel norm after every decoder convolution, equalised learning
rate (weights drawn from N(0, 1) and scaled at run time by He's constant), LeakyReLU(0.2), nearest upsampling,
average-pool downsampling, a 1x1 to_rgb / from_rgb per level whose newest level is faded in, and the minibatch
standard deviation before the discriminator's 4x4 block. Channels: `width` (512) up to 32x32, then halving.

Level l works at 4 * 2**l px. Every level's weights exist from the start (so optimisers, EMAs and checkpoints never
change shape); which levels run is the module's `growth` buffer [level, alpha], set by `set_growth` and copied by
the EMA / momentum updates with the other buffers, so an EMA decoder and the momentum discriminator follow the growth
and a checkpoint knows the resolution it was saved at.

Differences from ProGAN, each forced by the DC-VAE objective: the encoder is the discriminator's trunk without the
minibatch standard deviation (an image's code must not depend on the rest of its batch), and the discriminator's
logit comes from its 16-dimensional contrastive embedding, as at 32x32 (heads.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import level_of
from .layers import upsample_nearest_conv3x3

LEAK = 0.2


def level_channels(width: int, resolution: int) -> int:
    """ProGAN's channels at a resolution: `width` up to 32x32, then halved at each doubling (never below 1)."""
    return max(1, min(width, width * 32 // resolution))


class EqualizedConv2d(nn.Module):
    """Conv2d with equalised learning rate: weight ~ N(0, 1), multiplied at run time by gain / sqrt(fan_in)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 gain: float = math.sqrt(2)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualizedLinear(nn.Module):
    """Linear with equalised learning rate (see EqualizedConv2d)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, gain: float = math.sqrt(2)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each position's feature vector scaled to unit root-mean-square over channels (dim 1)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """[N, C, H, W] -> [N, C + 1, H, W]: appends, per group of `group_size` images (or the whole batch when N is not
    a multiple of it), the standard deviation over the group averaged over features and positions."""
    n, c, h, w = x.shape
    g = group_size if n % group_size == 0 else n
    y = x.float().view(g, n // g, c, h, w)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))            # [N / g]
    y = y.to(x.dtype).repeat(g).view(n, 1, 1, 1).expand(n, 1, h, w)
    return torch.cat([x, y], dim=1)


class _Growing(nn.Module):
    """A module that runs levels 0..`level` of `max_level`, fading the newest in with `alpha` in [0, 1]."""

    def __init__(self, max_level: int):
        super().__init__()
        if max_level < 1:
            raise ValueError("a progressive network grows to 8x8 at least")
        self.max_level = max_level
        self.register_buffer("growth", torch.tensor([float(max_level), 1.0]))
        # (which tensor, its version, level, alpha): the buffer's value as last known on the host
        self._growth_known: tuple[tuple[int, int], int, float] | None = None

    def set_growth(self, level: int, alpha: float) -> None:
        if not 0 <= level <= self.max_level or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"growth (level {level}, alpha {alpha}) outside levels 0..{self.max_level}, alpha 0..1")
        # fills with host scalars: kernel launches, no wait for the device
        self.growth[0] = float(level)
        self.growth[1] = float(alpha)
        alpha32 = torch.tensor(float(alpha), dtype=self.growth.dtype).item()   # the value the buffer holds
        self._growth_known = (self._growth_key(), int(level), alpha32)

    def _growth_key(self) -> tuple[int, int]:
        return self.growth.data_ptr(), self.growth._version

    def current_growth(self) -> tuple[int, float]:
        """(level, alpha). Every forward needs them on the host; reading the buffer there waits for the device (a
        GPU synchronisation), so it is read only after something other than `set_growth` changed it: a loaded
        state dict, an EMA copy of the buffers, a move to another device."""
        if self._growth_known is None or self._growth_known[0] != self._growth_key():
            level, alpha = self.growth.tolist()
            self._growth_known = (self._growth_key(), int(level), float(alpha))
        return self._growth_known[1], self._growth_known[2]

    def take_known_growth(self, source: "_Growing") -> None:
        """After this module's buffers were copied from `source`'s (an EMA copy): take over source's host copy of
        the growth phase, if it is current, so that the copy does not cost the next forward a device read."""
        known = source._growth_known
        if known is not None and known[0] == source._growth_key():
            self._growth_known = (self._growth_key(), known[1], known[2])

    @property
    def resolution(self) -> int:
        """The side of the images this module makes or takes now."""
        return 4 << self.current_growth()[0]


class ProgressiveDecoder(_Growing):
    """z [N, latent_dim] -> image [N, channels, r, r] at the current resolution r; ProGAN's output is linear (no
    tanh), so values are near [-1, 1] but not clipped.

    4x4: pixel norm of z -> EqualizedLinear to C x 4 x 4 -> LReLU -> pixel norm -> conv3x3 -> LReLU -> pixel norm.
    Each higher level: nearest x2 -> (conv3x3 -> LReLU -> pixel norm) x 2. to_rgb: conv1x1 (gain 1) per level.
    `fold_resampling` (train.fold_resampling, default) computes each nearest x2 + conv3x3 at the low resolution.
    """

    fold_resampling = True

    def __init__(self, latent_dim: int = 512, width: int = 512, channels: int = 3, resolution: int = 128):
        super().__init__(level_of(resolution))
        self.latent_dim = latent_dim
        c = [level_channels(width, 4 << level) for level in range(self.max_level + 1)]
        self.c4 = c[0]
        # ProGAN's first layer is a 4x4 "dense" convolution of the 1x1 latent: its gain is sqrt(2) / 4.
        self.dense = EqualizedLinear(latent_dim, c[0] * 16, bias=False, gain=math.sqrt(2) / 4)
        self.dense_bias = nn.Parameter(torch.zeros(c[0], 1, 1))     # one per channel, as a convolution's
        self.conv4 = EqualizedConv2d(c[0], c[0], 3, padding=1)
        self.blocks = nn.ModuleList([
            nn.ModuleList([EqualizedConv2d(c[level - 1], c[level], 3, padding=1),
                           EqualizedConv2d(c[level], c[level], 3, padding=1)])
            for level in range(1, self.max_level + 1)
        ])
        self.to_rgb = nn.ModuleList([EqualizedConv2d(c[level], channels, 1, gain=1.0)
                                     for level in range(self.max_level + 1)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        level, alpha = self.current_growth()
        h = self.dense(pixel_norm(z)).view(-1, self.c4, 4, 4) + self.dense_bias
        h = pixel_norm(F.leaky_relu(h, LEAK))
        h = pixel_norm(F.leaky_relu(self.conv4(h), LEAK))
        previous = h
        for first, second in self.blocks[:level]:
            previous = h
            if self.fold_resampling:      # the same function: see layers.upsample_nearest_conv3x3
                h = upsample_nearest_conv3x3(h, first.weight * first.scale, first.bias)
            else:
                h = first(F.interpolate(h, scale_factor=2, mode="nearest"))
            h = pixel_norm(F.leaky_relu(h, LEAK))
            h = pixel_norm(F.leaky_relu(second(h), LEAK))
        image = self.to_rgb[level](h)
        if level > 0 and alpha < 1.0:
            # fade-in: the previous level's image, upsampled, blended into the new level's
            low = F.interpolate(self.to_rgb[level - 1](previous), scale_factor=2, mode="nearest")
            image = torch.lerp(low, image, alpha)
        return image


class ProgressiveTrunk(_Growing):
    """ProGAN's discriminator trunk: image [N, C, R', R'] with R' >= r (average-pooled to the current resolution r)
    -> maps b1..bK, bk [N, C_k, max/2**k, max/2**k] (the map that enters the block of that resolution; None for
    resolutions above r), with bK the 4x4 map that enters the final block.

    from_rgb: conv1x1 -> LReLU per level. Block of a level: (conv3x3 -> LReLU) x 2, halving-or-keeping channels,
    then 2x2 average pool. `pool` is the final block: [minibatch stddev ->] conv3x3 -> LReLU -> conv4x4 (valid) ->
    LReLU -> feature [N, C_4].
    """

    def __init__(self, channels: int = 3, width: int = 512, resolution: int = 128, minibatch_std: bool = True):
        super().__init__(level_of(resolution))
        c = [level_channels(width, 4 << level) for level in range(self.max_level + 1)]
        self.from_rgb = nn.ModuleList([EqualizedConv2d(channels, c[level], 1) for level in range(self.max_level + 1)])
        # blocks[l - 1] takes level l's map down to level l - 1
        self.blocks = nn.ModuleList([
            nn.ModuleList([EqualizedConv2d(c[level], c[level], 3, padding=1),
                           EqualizedConv2d(c[level], c[level - 1], 3, padding=1)])
            for level in range(1, self.max_level + 1)
        ])
        self.minibatch_std = minibatch_std
        self.final_conv = EqualizedConv2d(c[0] + int(minibatch_std), c[0], 3, padding=1)
        self.final_dense = EqualizedConv2d(c[0], c[0], 4)
        self.feature_dim = c[0]
        # maps b1..bK from the largest (max/2) down to 4x4, as the 32x32 trunks' b1 is their largest map
        self.block_shapes = [(c[level], 4 << level, 4 << level) for level in range(self.max_level - 1, -1, -1)]

    def head_linear(self, in_features: int, out_features: int, bias: bool = True) -> nn.Module:
        return EqualizedLinear(in_features, out_features, bias=bias, gain=1.0)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor | None]:
        level, alpha = self.current_growth()
        r = 4 << level
        if x.shape[-1] > r:
            x = F.avg_pool2d(x, x.shape[-1] // r)
        maps: list[torch.Tensor | None] = [None] * self.max_level

        def keep(at_level: int, m: torch.Tensor) -> None:
            if at_level < self.max_level:             # no map for the full-resolution input, as at 32x32
                maps[self.max_level - 1 - at_level] = m

        h = F.leaky_relu(self.from_rgb[level](x), LEAK)
        for at in range(level, 0, -1):
            keep(at, h)
            for conv in self.blocks[at - 1]:
                h = F.leaky_relu(conv(h), LEAK)
            h = F.avg_pool2d(h, 2)
            if at == level and alpha < 1.0:
                # fade-in: the previous level's input, made from the half-size image, blended with the new block
                low = F.leaky_relu(self.from_rgb[level - 1](F.avg_pool2d(x, 2)), LEAK)
                h = torch.lerp(low, h, alpha)
        keep(0, h)
        return maps

    def pool(self, last_map: torch.Tensor) -> torch.Tensor:
        """The final 4x4 block: [N, C_4, 4, 4] -> feature [N, C_4]."""
        h = minibatch_stddev(last_map) if self.minibatch_std else last_map
        h = F.leaky_relu(self.final_conv(h), LEAK)
        return F.leaky_relu(self.final_dense(h), LEAK).flatten(1)
