"""A compact DCGAN-style family for 32x32 grayscale (MNIST and Fashion-MNIST padded from 28x28).

Not in the paper: it exists so that a useful DC-VAE trains on two CPU cores in minutes (the paper's 32x32 decoder
costs 3.5 GFLOP per image). Same interfaces as the AutoGAN backbone, so every objective and tool works on both.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .layers import head_linear, init_autogan_, spectral_norm


class CompactDecoder(nn.Module):
    """z [N, latent_dim] -> image [N, channels, 32, 32] in [-1, 1].

    Linear to 4w x 4 x 4, then three (nearest x2 -> conv3x3 -> BatchNorm -> ReLU) stages halving the channels,
    then conv3x3 -> tanh.
    """

    def __init__(self, latent_dim: int = 32, width: int = 32, channels: int = 1):
        super().__init__()
        self.latent_dim, self.width = latent_dim, width
        c = [4 * width, 2 * width, width, width // 2]
        self.l1 = nn.Linear(latent_dim, c[0] * 4 * 4)
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c[i], c[i + 1], 3, padding=1),
                          nn.BatchNorm2d(c[i + 1]), nn.ReLU())
            for i in range(3)
        ])
        self.to_rgb = nn.Sequential(nn.Conv2d(c[3], channels, 3, padding=1), nn.Tanh())
        init_autogan_(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.l1(z).view(-1, 4 * self.width, 4, 4))
        for stage in self.stages:
            h = stage(h)
        return self.to_rgb(h)


class CompactTrunk(nn.Module):
    """image [N, C, 32, 32] -> maps b1 [N, w, 16, 16], b2 [N, 2w, 8, 8], b3 [N, 4w, 4, 4].

    Each block is a stride-2 conv4x4 followed by LeakyReLU(0.2); `pool` sums the last map over space -> [N, 4w].
    """

    def __init__(self, channels: int = 1, width: int = 32, use_spectral_norm: bool = True):
        super().__init__()
        c = [channels, width, 2 * width, 4 * width]
        self.blocks = nn.ModuleList([nn.Conv2d(c[i], c[i + 1], 4, stride=2, padding=1) for i in range(3)])
        self.block_shapes = [(c[1], 16, 16), (c[2], 8, 8), (c[3], 4, 4)]
        self.feature_dim = c[3]
        init_autogan_(self)
        if use_spectral_norm:
            spectral_norm(self)
        # what the encoder and discriminator heads are made of: spectral-norm exactly when the trunk is
        self.head_linear = functools.partial(head_linear, spectral=use_spectral_norm)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for block in self.blocks:
            x = F.leaky_relu(block(x), 0.2)
            maps.append(x)
        return maps

    @staticmethod
    def pool(last_map: torch.Tensor) -> torch.Tensor:
        return last_map.sum(dim=(2, 3))
