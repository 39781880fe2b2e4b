"""The paper's 32x32 networks (Sec. 5.1, Fig. 15), adapted from AutoGAN's `autogan_cifar10_a`.

At paper width (latent 128, gen_width 256, dis_width 128, contrastive dim 16) the parameter counts are exactly
1,086,464 (encoder), 4,405,251 (decoder) and 1,063,445 (discriminator with heads b1..b4), as in the released code.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .layers import conv3x3_avg_pool2, head_linear, init_autogan_, spectral_norm, upsample_nearest_conv3x3


class DecoderCell(nn.Module):
    """AutoGAN's pre-activation up-sampling cell.

    ReLU -> upsample x2 -> conv3x3 (the cell's skip output) -> + each skip input (resized, 1x1 conv)
    -> ReLU -> conv3x3 -> + optional 1x1-conv shortcut of the upsampled input.

    `fold_resampling` (default; train.fold_resampling) computes the same function with less arithmetic: a nearest
    upsampling is folded into the 3x3 convolution after it (layers.upsample_nearest_conv3x3), and the 1x1
    convolutions run before the resize rather than after (a 1x1 convolution and a nearest or bilinear resize are
    both linear and commute, bias included, since each resized pixel is a convex combination of input pixels), at
    up to 16x fewer pixels. False: the released code's order of operations.
    """

    fold_resampling = True

    def __init__(self, channels: int, up_mode: str, num_skip_in: int, shortcut: bool):
        super().__init__()
        self.up_mode = up_mode
        self.c1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.c2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.c_sc = nn.Conv2d(channels, channels, 1) if shortcut else None
        self.skip_in_ops = nn.ModuleList([nn.Conv2d(channels, channels, 1) for _ in range(num_skip_in)])

    def _resize(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            return F.interpolate(x, scale_factor=2, mode=self.up_mode)
        return F.interpolate(x, size=size, mode=self.up_mode)

    def _resized_pointwise(self, conv: nn.Conv2d, x: torch.Tensor, size: tuple[int, int] | None = None
                           ) -> torch.Tensor:
        """conv(resize(x)) for a 1x1 conv."""
        return self._resize(conv(x), size) if self.fold_resampling else conv(self._resize(x, size))

    def forward(self, x: torch.Tensor, skips: tuple[torch.Tensor, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fold_resampling and self.up_mode == "nearest":
            h = upsample_nearest_conv3x3(F.relu(x), self.c1.weight, self.c1.bias)
        else:
            h = self.c1(self._resize(F.relu(x)))
        skip_out = h
        for feature, op in zip(skips, self.skip_in_ops, strict=True):
            h = h + self._resized_pointwise(op, feature, h.shape[-2:])
        out = self.c2(F.relu(h))
        if self.c_sc is not None:
            out = out + self._resized_pointwise(self.c_sc, x)
        return skip_out, out


class AutoGANDecoder(nn.Module):
    """z [N, latent_dim] -> image [N, channels, 32, 32] in [-1, 1]."""

    def __init__(self, latent_dim: int = 128, width: int = 256, channels: int = 3):
        super().__init__()
        self.latent_dim, self.width = latent_dim, width
        self.l1 = nn.Linear(latent_dim, width * 4 * 4)
        self.cell1 = DecoderCell(width, "nearest", num_skip_in=0, shortcut=True)   # 4 -> 8
        self.cell2 = DecoderCell(width, "bilinear", num_skip_in=1, shortcut=True)  # 8 -> 16
        self.cell3 = DecoderCell(width, "nearest", num_skip_in=2, shortcut=False)  # 16 -> 32
        self.to_rgb = nn.Sequential(
            nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, channels, 3, padding=1), nn.Tanh())
        init_autogan_(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.l1(z).view(-1, self.width, 4, 4)
        skip1, h = self.cell1(h)
        skip2, h = self.cell2(h, (skip1,))
        _, h = self.cell3(h, (skip1, skip2))
        return self.to_rgb(h)


def _pooled_conv3x3(conv: nn.Conv2d, x: torch.Tensor, fold: bool) -> torch.Tensor:
    """avgpool2(conv(x)) for a 3x3 conv; folded (train.fold_resampling), one 4x4 convolution of stride 2
    (layers.conv3x3_avg_pool2): the same function. Each read of a spectral-normalised weight in training runs a
    power iteration, so the folded path reads it once, as the convolution's own forward does."""
    return conv3x3_avg_pool2(x, conv.weight, conv.bias) if fold else F.avg_pool2d(conv(x), 2)


class OptimizedDisBlock(nn.Module):
    """First down-sampling block: conv3x3 -> ReLU -> conv3x3 -> avgpool; shortcut avgpool -> conv1x1."""

    fold_resampling = True    # the pooling folded into the conv3x3 before it: the same function (DisBlock)

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.c2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.c_sc = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _pooled_conv3x3(self.c2, F.relu(self.c1(x)), self.fold_resampling)
        return h + self.c_sc(F.avg_pool2d(x, 2))


class DisBlock(nn.Module):
    """Pre-activation residual block: ReLU -> conv -> ReLU -> conv [-> avgpool]; learnable shortcut when needed.

    Folded (train.fold_resampling, default), a downsampling block pools inside the second conv3x3
    (_pooled_conv3x3) and before its 1x1 shortcut (pooling and a 1x1 convolution commute): the same function."""

    fold_resampling = True

    def __init__(self, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.c1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.c2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        learnable_shortcut = in_channels != out_channels or downsample
        self.c_sc = nn.Conv2d(in_channels, out_channels, 1) if learnable_shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c1(F.relu(x)))
        if not self.downsample:
            return self.c2(h) + (x if self.c_sc is None else self.c_sc(x))
        fold = self.fold_resampling
        shortcut = self.c_sc(F.avg_pool2d(x, 2)) if fold else F.avg_pool2d(self.c_sc(x), 2)
        return _pooled_conv3x3(self.c2, h, fold) + shortcut


class AutoGANTrunk(nn.Module):
    """Shared by the encoder and the discriminator: image [N, C, 32, 32] -> four maps.

    maps: b1 [N, w, 16, 16], b2..b4 [N, w, 8, 8]. `pool` turns the last map into the [N, w] feature
    (ReLU, then a sum over space, as AutoGAN does).
    """

    def __init__(self, channels: int = 3, width: int = 128, use_spectral_norm: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList([
            OptimizedDisBlock(channels, width),
            DisBlock(width, width, downsample=True),
            DisBlock(width, width, downsample=False),
            DisBlock(width, width, downsample=False),
        ])
        self.block_shapes = [(width, 16, 16), (width, 8, 8), (width, 8, 8), (width, 8, 8)]
        self.feature_dim = width
        init_autogan_(self)
        if use_spectral_norm:
            spectral_norm(self)
        # what the encoder and discriminator heads are made of: spectral-norm exactly when the trunk is
        self.head_linear = functools.partial(head_linear, spectral=use_spectral_norm)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for block in self.blocks:
            x = block(x)
            maps.append(x)
        return maps

    @staticmethod
    def pool(last_map: torch.Tensor) -> torch.Tensor:
        return F.relu(last_map).sum(dim=(2, 3))
