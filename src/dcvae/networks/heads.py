"""Encoder and discriminator built on a backbone trunk (AutoGANTrunk, CompactTrunk or ProgressiveTrunk).

The heads' Linear layers are the trunk's `head_linear`: spectral-norm at 32x32 (released code), equalised
learning rate on the progressive trunk (ProGAN)."""
from __future__ import annotations

import math

import torch
from torch import nn


class Encoder(nn.Module):
    """q(z|x): image [N, C, H, W] in [-1, 1] -> (mu [N, latent_dim], logvar [N, latent_dim]).

    The trunk is the discriminator's architecture; the head is its `head_linear(feature -> 2 * latent, no bias)`. Its
    input is the trunk's last map [N, C', H', W'] pooled by the trunk (pool="sum", the paper's) or flattened
    (pool="flatten": C' * H' * W' features that keep where in the image each feature was found).
    """

    def __init__(self, trunk: nn.Module, latent_dim: int, pool: str = "sum"):
        super().__init__()
        self.trunk = trunk
        self.latent_dim = latent_dim
        if pool not in ("sum", "flatten"):
            raise ValueError(f"pool must be 'sum' or 'flatten', got {pool!r}")
        self.flatten = pool == "flatten"
        features = math.prod(trunk.block_shapes[-1]) if self.flatten else trunk.feature_dim
        self.head = trunk.head_linear(features, 2 * latent_dim, bias=False)

    def head_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the head reads: the trunk's last map, pooled or flattened -> [N, features]."""
        last = self.trunk(x)[-1]
        return last.flatten(1) if self.flatten else self.trunk.pool(last)

    def posterior(self, head_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The head alone: [N, features] from `head_input` -> (mu [N, latent_dim], logvar [N, latent_dim])."""
        mu, logvar = self.head(head_input).chunk(2, dim=1)
        return mu, logvar

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.posterior(self.head_input(x))


class BlockHead(nn.Module):
    """Deep-supervision contrastive head (paper Sec. 4.2): conv1x1 (C -> 1) -> flatten -> Linear(H*W -> dim)."""

    def __init__(self, channels: int, height: int, width: int, dim: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, 1, 1)
        nn.init.xavier_uniform_(self.reduce.weight, 1.0)
        self.project = nn.Linear(height * width, dim, bias=False)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.project(self.reduce(feature_map).flatten(1))


class ContrastiveDiscriminator(nn.Module):
    """D with a GAN logit and contrastive embeddings on several layers.

    Layers are named "b1".."bK" (the trunk's blocks, through a BlockHead each) and "final" (the spectral-norm
    Linear(feature -> dim, no bias), called l5 in the released code). The GAN logit is a spectral-norm
    Linear(dim -> 1) on that same final embedding. Heads carry no spectral norm.
    """

    def __init__(self, trunk: nn.Module, contrastive_dim: int = 16):
        super().__init__()
        self.trunk = trunk
        self.l5 = trunk.head_linear(trunk.feature_dim, contrastive_dim, bias=False)
        self.logit = trunk.head_linear(contrastive_dim, 1)
        self.block_heads = nn.ModuleDict({
            f"b{i + 1}": BlockHead(c, h, w, contrastive_dim) for i, (c, h, w) in enumerate(trunk.block_shapes)
        })

    @property
    def layer_names(self) -> list[str]:
        return [*self.block_heads.keys(), "final"]

    def forward(self, x: torch.Tensor, embeddings: tuple[str, ...] = (), maps: tuple[str, ...] = ()
                ) -> dict[str, torch.Tensor]:
        """x [N, C, H, W] -> {"logit": [N], "feature": [N, F], name: [N, dim] for each of `embeddings`,
        "map:" + name: the trunk's [N, C_l, H_l, W_l] map for each of `maps` (for the local-patch contrastive)}."""
        block_maps = self.trunk(x)
        feature = self.trunk.pool(block_maps[-1])
        final = self.l5(feature)
        out = {"logit": self.logit(final).squeeze(1), "feature": feature}
        for name in embeddings:
            out[name] = final if name == "final" else self.block_heads[name](block_maps[int(name[1:]) - 1])
        for name in maps:
            out["map:" + name] = block_maps[int(name[1:]) - 1]
        return out

    def gan_parameters(self) -> list[nn.Parameter]:
        """What the GAN loss trains: trunk, l5 and the logit head (not the block heads)."""
        return [*self.trunk.parameters(), *self.l5.parameters(), *self.logit.parameters()]

    def contrastive_parameters(self) -> list[nn.Parameter]:
        """What the contrastive loss trains: trunk, l5 and block heads (not the GAN logit head)."""
        return [*self.trunk.parameters(), *self.l5.parameters(), *self.block_heads.parameters()]
