"""The random draws of a training step: reparameterisation noise, prior samples, patch locations.

With several processes, each process draws the whole global batch's noise from the same generator and keeps its
own rows, so W processes with batch B draw exactly what one process with batch W*B draws (a 2-process run then
follows the 1-process run with the same global batch). Drawing W times the rows costs nothing next to the networks.
"""
from __future__ import annotations

import torch


class BatchNoise:
    """A seeded generator whose draws are a process's slice of a global batch's draws."""

    def __init__(self, device: torch.device, rank: int = 0, world: int = 1):
        self.generator = torch.Generator(device=device)
        self.device, self.rank, self.world = device, rank, world

    def seed(self, value: int) -> None:
        self.generator.manual_seed(value)

    def _slice(self, draws: torch.Tensor, n: int) -> torch.Tensor:
        return draws[self.rank * n:(self.rank + 1) * n]

    def normal(self, n: int, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[n, *shape] standard normal."""
        draws = torch.randn(n * self.world, *shape, generator=self.generator, device=self.device, dtype=dtype)
        return self._slice(draws, n)

    def integers(self, high: int, n: int) -> torch.Tensor:
        """[n] long, uniform in [0, high)."""
        draws = torch.randint(0, high, (n * self.world,), generator=self.generator, device=self.device)
        return self._slice(draws, n)
