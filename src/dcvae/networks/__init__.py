"""Networks: the paper's AutoGAN-based 32x32 backbone and a compact grayscale family.

`build_networks(model_config)` returns the encoder, decoder and contrastive discriminator of a configuration.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .autogan import AutoGANDecoder, AutoGANTrunk
from .compact import CompactDecoder, CompactTrunk
from .heads import ContrastiveDiscriminator, Encoder

BACKBONES = {"autogan32": (AutoGANTrunk, AutoGANDecoder), "compact32": (CompactTrunk, CompactDecoder)}


@dataclass
class Networks:
    encoder: Encoder
    decoder: nn.Module
    discriminator: ContrastiveDiscriminator


def build_networks(model) -> Networks:
    """Build the three networks of a `ModelConfig` (see dcvae.config)."""
    trunk_cls, decoder_cls = BACKBONES[model.backbone]
    encoder = Encoder(trunk_cls(model.image_channels, model.dis_width), model.latent_dim)
    decoder = decoder_cls(model.latent_dim, model.gen_width, model.image_channels)
    discriminator = ContrastiveDiscriminator(trunk_cls(model.image_channels, model.dis_width), model.contrastive_dim)
    return Networks(encoder, decoder, discriminator)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["BACKBONES", "Networks", "build_networks", "count_parameters", "Encoder", "ContrastiveDiscriminator"]
