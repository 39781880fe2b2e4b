"""An endless, resumable stream of training batches.

The order of epoch e is a permutation drawn from a generator seeded with (seed, e), so the stream's whole state is
(epoch, batches taken in that epoch): saving those two integers and restoring them continues the exact same order
(the state also holds the files skipped so far in the epoch, which only the counts below use).
With several processes every rank draws the same permutation and takes its own slice of each global batch.

Image folders under data.on_bad_image=skip replace an unreadable file by the next readable one in path order, which
depends only on the folder, so the order stays exactly resumable. Each batch carries the files skipped to make it;
the stream counts them per epoch and, when the epoch ends (the stream wraps), logs one summary by reason and adds
them to `skipped_file` (the run's skipped.txt).
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ..errors import UserError
from ..files import atomic_write_text
from .datasets import bad_image_kind

LOG = logging.getLogger("dcvae.data")


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


# (image, label, the files skipped to reach it as (path, reason), the message of a UserError instead of an image)
Item = tuple[torch.Tensor | None, int, list[tuple[str, str]], str | None]


class _WithSkips(Dataset):
    """Items of a data set with `load_item` (image folders): (image, label, [(path, reason) of files skipped],
    None), or (None, -1, [], message) where it raised UserError."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Item:
        try:
            return (*self.dataset.load_item(index), None)
        except UserError as e:
            # Raised in a worker, it would reach the main process wrapped in the worker's multi-line traceback: the
            # message travels as data instead, and the stream raises it as it was.
            return None, -1, [], str(e)


def _collate_with_skips(items: list[Item]) -> tuple[torch.Tensor | None, torch.Tensor | None,
                                                    list[tuple[str, str]], str | None]:
    # Runs where the items were loaded (a worker process, if any), so the skips travel back with their batch.
    skipped = [entry for _, _, entries, _ in items for entry in entries]
    errors = [error for _, _, _, error in items if error is not None]
    if errors:
        return None, None, skipped, errors[0]
    images, labels = default_collate([(image, label) for image, label, _, _ in items])
    return images, labels, skipped, None


def _read_skipped(path: Path) -> dict[str, str]:
    """path -> reason from a skipped.txt ("path<TAB>reason" lines; reasons hold no tab)."""
    entries = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                name, _, reason = line.rpartition("\t")
                entries[name] = reason
    return entries


class BatchStream:
    """`next()` -> (images [B, C, H, W] float in [-1, 1] on `device`, labels [B]); incomplete batches are dropped.

    `skipped` holds the files (path -> reason) skipped so far in the current epoch; set `skipped_file` (rank 0) to
    have each epoch's skips added to that list.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, device: torch.device,
                 rank: int = 0, world: int = 1, num_workers: int = 0):
        if len(dataset) < batch_size * world:
            raise UserError(f"the data set has {len(dataset)} images, fewer than one batch of {batch_size * world}; "
                            "add images or lower train.batch_size")
        self.dataset, self.batch_size, self.seed, self.device = dataset, batch_size, seed, device
        self.rank, self.world, self.num_workers = rank, world, num_workers
        self.epoch, self.position = 0, 0
        self._iterator: Iterator | None = None
        self.reports_skips = hasattr(dataset, "load_item")
        self.skipped: dict[str, str] = {}
        self.skipped_file: Path | None = None

    def _start_epoch(self) -> None:
        sampler = _EpochBatches(len(self.dataset), self.batch_size, self.seed, self.epoch, self.position,
                                self.rank, self.world)
        # The loader's own generator: creating an iterator must not draw from the global RNG, whose state is part
        # of what a resumed run must reproduce.
        extra: dict[str, Any] = {"collate_fn": _collate_with_skips} if self.reports_skips else {}
        loader = DataLoader(_WithSkips(self.dataset) if self.reports_skips else self.dataset, batch_sampler=sampler,
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(self.seed + self.epoch), **extra)
        self._iterator = iter(loader)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._iterator is None:
            self._start_epoch()
        try:
            images, labels, *extra = next(self._iterator)
        except StopIteration:
            self._end_epoch()
            self.epoch, self.position, self.skipped = self.epoch + 1, 0, {}
            self._start_epoch()
            images, labels, *extra = next(self._iterator)
        if self.reports_skips:
            skipped, error = extra
            if error is not None:
                self._iterator = None   # its worker processes end now, not whenever the exception is collected
                raise UserError(error)
            if skipped:
                found = dict(skipped)
                self.skipped.update(found)
                self.dataset.remember_skipped(found)
        self.position += 1
        return images.to(self.device, non_blocking=True), labels

    def set_batch_size(self, batch_size: int) -> None:
        """Change the batch size (progressive growing changes it between resolutions). The order of an epoch is
        cut into batches of one size, so a change part-way through an epoch starts the next epoch."""
        if batch_size == self.batch_size:
            return
        if len(self.dataset) < batch_size * self.world:
            raise UserError(f"the data set has {len(self.dataset)} images, fewer than one batch of "
                            f"{batch_size * self.world}; add images or lower growth.batch_sizes")
        if self.position:
            self._end_epoch()
            self.epoch, self.position, self.skipped = self.epoch + 1, 0, {}
        self.batch_size, self._iterator = batch_size, None

    def close(self) -> None:
        """End the worker processes of the current epoch now (a later `next()` starts them again where it left)."""
        self._iterator = None

    def _end_epoch(self) -> None:
        """Log the epoch's skipped files, counted by reason, and add them to `skipped_file`."""
        if not self.reports_skips:
            return
        skipped = self.skipped
        if self.world > 1 and dist.is_available() and dist.is_initialized():
            # Every rank reaches the end of an epoch at the same call (same permutation, same number of batches).
            everyone: list[Any] = [None] * self.world
            dist.all_gather_object(everyone, skipped)
            skipped = {path: reason for part in everyone for path, reason in part.items()}
        if not skipped or self.rank != 0:
            return
        counts = Counter(bad_image_kind(reason) for reason in skipped.values())
        by_reason = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kn: (-kn[1], kn[0])))
        text = f"data: epoch {self.epoch}: skipped {len(skipped)} of {len(self.dataset)} files ({by_reason})"
        if self.skipped_file is not None:
            listed = _read_skipped(self.skipped_file)
            if not skipped.items() <= listed.items():
                listed.update(skipped)
                atomic_write_text(self.skipped_file, "# files skipped (data.on_bad_image=skip): path<TAB>reason\n"
                                  + "".join(f"{p}\t{r}\n" for p, r in sorted(listed.items())))
            text += f"; list in {self.skipped_file}"
        LOG.warning("%s", text)

    def state_dict(self) -> dict[str, Any]:
        """The stream's position, and the files skipped so far in this epoch (rank 0's, with several processes)."""
        return {"epoch": self.epoch, "position": self.position, "batch_size": self.batch_size,
                "skipped": dict(self.skipped)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.batch_size = int(state.get("batch_size", self.batch_size))
        self.skipped = dict(state.get("skipped", {}))
        self._iterator = None
