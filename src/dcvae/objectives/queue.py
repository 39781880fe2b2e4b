"""The negative queue of the instance-level contrastive loss (MoCo): a ring buffer of normalised momentum keys."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NegativeQueue(nn.Module):
    """`keys` [size, dim], L2-normalised; `pointer` is where the next key is written (wraps around).

    Starts filled with random unit vectors, as MoCo does. Buffers, so they are saved with the training state.
    """

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim, generator=generator), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write keys [N, dim] (normalised here) at the pointer, wrapping around the end; keeps the newest `size`."""
        keys = F.normalize(keys.detach().float(), dim=1)
        size = self.keys.shape[0]
        if len(keys) > size:
            keys = keys[-size:]
        # the pointer stays on the device: reading it on the host would wait for a GPU every iteration
        rows = (self.pointer + torch.arange(len(keys), device=self.keys.device)) % size
        self.keys[rows] = keys.to(self.keys.dtype)
        self.pointer.copy_((self.pointer + len(keys)) % size)
