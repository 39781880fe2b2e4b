"""Initialisation, normalisation and resampling shared by the backbones."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm_one


def init_autogan_(module: nn.Module) -> None:
    """AutoGAN's init: xavier_uniform (gain 1) on every Conv2d weight, BatchNorm weight N(1, 0.02) and bias 0.
    Linear layers keep PyTorch's default init, as in the released code."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight, 1.0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (one power iteration per training forward) on every Conv2d and Linear inside."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            _spectral_norm_one(m)
    return module


def head_linear(in_features: int, out_features: int, bias: bool = True, spectral: bool = True) -> nn.Module:
    """The heads' Linear on the 32x32 trunks: nn.Linear with PyTorch's default init, spectral-norm when its trunk is
    (always in the released code)."""
    linear = nn.Linear(in_features, out_features, bias=bias)
    return spectral_norm(linear) if spectral else linear


def upsample_nearest_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=1)` for a 3x3 `weight`,
    computed at the resolution of x: the same function, up to float rounding, with 16 instead of 36 multiplies per
    input pixel and channel pair, and no upsampled copy of x.

    Nearest upsampling repeats each pixel over a 2x2 block, so the 3x3 window of an output pixel of row parity a
    covers two input rows: for a = 0 the rows i-1 (kernel row 0) and i (kernel rows 1 and 2), for a = 1 the rows i
    (kernel rows 0 and 1) and i+1 (kernel row 2); columns likewise. Summing the taps that land on one input pixel
    gives a 2x2 kernel per output phase (a, b); one convolution with the four kernels stacked (4 x out_channels)
    over x padded by one pixel computes every phase, which then interleave into the 2H x 2W output. Zero padding
    of the upsampled image is zero padding of x, so the borders agree too.

    x [N, C_in, H, W], weight [C_out, C_in, 3, 3] -> [N, C_out, 2H, 2W] in x's memory layout.
    """
    n, _, h, width = x.shape
    out_channels = weight.shape[0]
    # kernel taps onto the two input offsets, per parity; slices, not index lists (a list would be copied to the
    # device, and a copy from the host waits for it)
    folds = (slice(0, 1), slice(1, 3)), (slice(0, 2), slice(2, 3))
    kernels = [torch.stack([torch.stack([weight[:, :, r, c].sum((2, 3)) for c in cols], -1) for r in rows], -2)
               for rows in folds for cols in folds]                   # phases (0,0), (0,1), (1,0), (1,1)
    y = F.conv2d(F.pad(x, (1, 1, 1, 1)), torch.cat(kernels), None if bias is None else bias.repeat(4))
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 \
        else torch.contiguous_format
    out = torch.empty(n, out_channels, 2 * h, 2 * width, dtype=y.dtype, device=y.device, memory_format=layout)
    for phase, (a, b) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        out[:, :, a::2, b::2] = y[:, phase * out_channels:(phase + 1) * out_channels, a:a + h, b:b + width]
    return out


def conv3x3_avg_pool2(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.avg_pool2d(F.conv2d(x, weight, bias, padding=1), 2)` for a 3x3 `weight` as one 4x4 convolution of stride 2:
    the same function, up to float rounding, with 4 instead of 9 multiplies per input pixel and channel pair.

    Each pooled output averages four 3x3 windows offset by (a, b) in {0, 1}^2, together a 4x4 window of x whose
    kernel is the 3x3 kernel summed over the four offsets, divided by 4; zero padding and bias carry over (the
    average of a constant bias is the bias). x [N, C_in, H, W] with H, W even -> [N, C_out, H/2, W/2].
    """
    kernel = sum(F.pad(weight, (b, 1 - b, a, 1 - a)) for a in (0, 1) for b in (0, 1)) / 4
    return F.conv2d(x, kernel, bias, stride=2, padding=1)
