"""Initialisation and normalisation shared by the backbones."""
from __future__ import annotations

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


def spectral_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Module:
    """The heads' Linear on the 32x32 trunks (released code): spectral-norm nn.Linear with PyTorch's default init."""
    return spectral_norm(nn.Linear(in_features, out_features, bias=bias))
