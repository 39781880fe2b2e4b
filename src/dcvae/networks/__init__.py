"""Networks: the paper's AutoGAN-based 32x32 backbone, a compact grayscale family, and the progressive-growing
backbone of the paper's 64..512 px experiments.

`build_networks(model_config)` returns the encoder, decoder and contrastive discriminator of a configuration.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .autogan import AutoGANDecoder, AutoGANTrunk
from .compact import CompactDecoder, CompactTrunk
from .heads import ContrastiveDiscriminator, Encoder
from .progressive import ProgressiveDecoder, ProgressiveTrunk

BACKBONES = ("autogan32", "compact32", "progressive")


@dataclass
class Networks:
    encoder: Encoder
    decoder: nn.Module
    discriminator: ContrastiveDiscriminator


def build_networks(model) -> Networks:
    """Build the three networks of a `ModelConfig` (see dcvae.config)."""
    c = model.image_channels
    if model.backbone == "progressive":
        # The encoder's code of an image must not depend on its batch: no minibatch standard deviation there.
        encoder = Encoder(ProgressiveTrunk(c, model.dis_width, model.resolution, minibatch_std=False),
                          model.latent_dim)
        decoder: nn.Module = ProgressiveDecoder(model.latent_dim, model.gen_width, c, model.resolution)
        trunk: nn.Module = ProgressiveTrunk(c, model.dis_width, model.resolution)
    else:
        trunk_cls, decoder_cls = {"autogan32": (AutoGANTrunk, AutoGANDecoder),
                                  "compact32": (CompactTrunk, CompactDecoder)}[model.backbone]
        encoder = Encoder(trunk_cls(c, model.dis_width, use_spectral_norm=model.encoder_spectral_norm),
                          model.latent_dim, pool=model.encoder_pool)
        decoder = decoder_cls(model.latent_dim, model.gen_width, c)
        trunk = trunk_cls(c, model.dis_width)
    return Networks(encoder, decoder, ContrastiveDiscriminator(trunk, model.contrastive_dim))


def growing_modules(*modules: nn.Module) -> list[nn.Module]:
    """The progressive modules (those with `set_growth`) inside `modules`."""
    return [m for module in modules for m in module.modules() if hasattr(m, "set_growth")]


def copy_buffers(target: nn.Module, source: nn.Module) -> None:
    """target's buffers <- source's (the same architecture): BatchNorm statistics, spectral-norm vectors, growth
    phases. A growing module also takes over what the source knows of its phase on the host (see
    `progressive._Growing.current_growth`), so an EMA copy every iteration costs no device read."""
    for t, s in zip(target.buffers(), source.buffers()):
        t.copy_(s)
    for t, s in zip(target.modules(), source.modules()):
        if hasattr(t, "take_known_growth"):
            t.take_known_growth(s)


def set_fold_resampling(module: nn.Module, fold: bool) -> None:
    """train.fold_resampling on every block inside `module` that has the choice: resampling folded into the
    adjacent convolutions, or the released order of operations (the same function either way: see
    networks.autogan.DecoderCell and DisBlock)."""
    for m in module.modules():
        if hasattr(m, "fold_resampling"):
            m.fold_resampling = fold


def memory_format(channels_last: bool) -> torch.memory_format:
    """The memory layout of `train.channels_last`: NHWC (faster convolutions and resampling, same math) or
    PyTorch's default NCHW. Training and `dcvae.load` both lay out networks and image batches in it."""
    return torch.channels_last if channels_last else torch.contiguous_format


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["BACKBONES", "Networks", "build_networks", "copy_buffers", "growing_modules", "memory_format",
           "set_fold_resampling", "count_parameters", "Encoder", "ContrastiveDiscriminator"]
