"""An endless, resumable stream of training batches.

The order of epoch e is a permutation drawn from a generator seeded with (seed, e), so the stream's whole state is
(epoch, batches taken in that epoch): saving those two integers and restoring them continues the exact same order.
With several processes every rank draws the same permutation and takes its own slice of each global batch.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class _EpochBatches(Sampler[list[int]]):
    def __init__(self, n: int, batch: int, seed: int, epoch: int, start: int, rank: int, world: int):
        self.n, self.batch, self.seed, self.epoch, self.start = n, batch, seed, epoch, start
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return self.n // (self.batch * self.world) - self.start

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g)
        global_batch = self.batch * self.world
        for b in range(self.start, self.n // global_batch):
            first = b * global_batch + self.rank * self.batch
            yield order[first:first + self.batch].tolist()


class BatchStream:
    """`next()` -> (images [B, C, H, W] float in [-1, 1] on `device`, labels [B]); incomplete batches are dropped."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, device: torch.device,
                 rank: int = 0, world: int = 1, num_workers: int = 0):
        if len(dataset) < batch_size * world:
            from ..errors import UserError
            raise UserError(f"the data set has {len(dataset)} images, fewer than one batch of {batch_size * world}; "
                            "add images or lower train.batch_size")
        self.dataset, self.batch_size, self.seed, self.device = dataset, batch_size, seed, device
        self.rank, self.world, self.num_workers = rank, world, num_workers
        self.epoch, self.position = 0, 0
        self._iterator: Iterator | None = None

    def _start_epoch(self) -> None:
        sampler = _EpochBatches(len(self.dataset), self.batch_size, self.seed, self.epoch, self.position,
                                self.rank, self.world)
        # The loader's own generator: creating an iterator must not draw from the global RNG, whose state is part
        # of what a resumed run must reproduce.
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                            pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(self.seed + self.epoch))
        self._iterator = iter(loader)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._iterator is None:
            self._start_epoch()
        try:
            images, labels = next(self._iterator)
        except StopIteration:
            self.epoch, self.position = self.epoch + 1, 0
            self._start_epoch()
            images, labels = next(self._iterator)
        self.position += 1
        return images.to(self.device, non_blocking=True), labels

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._iterator = None
