"""Training samplers whose every draw is a function of (seed, part, epoch, position), and a
DataLoader that Lightning resumes mid-epoch: a resumed run sees exactly the batches, and the
augmentations, of an uninterrupted one.

A sampler yields `Draw` items: the row to read and the seed of that sample's augmentation. The
seed follows the sample's position in the epoch, not the DataLoader worker that reads it, so the
number of workers, their order and a restart change nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from abaw_lightning.schema import derive_seed


class Draw(NamedTuple):
    """One training sample: the dataset row and its augmentation's seed."""

    row: int
    seed: int


def _shard() -> tuple[int, int]:
    """(rank, world size) of this process under torch.distributed (DDP), else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochSampler(Sampler[Draw], ABC):
    """Base: ``set_epoch`` (Lightning calls it) picks the epoch's draws; ``start_at`` makes the
    next iteration begin at a position (a resumed epoch skips what it already trained on).

    Under DDP each process takes every world-size-th draw of the same epoch's sequence (the
    trainer's ``use_distributed_sampler`` must be off, as `conf/trainer/ddp.yaml` sets it).
    """

    def __init__(self, num_samples: int, seed: int, part: str) -> None:
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.part = part
        self.epoch = 0
        self._start = 0

    def __len__(self) -> int:
        rank, world = _shard()
        return len(range(rank, self.num_samples, world))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def start_at(self, position: int) -> None:
        self._start = int(position)

    @abstractmethod
    def rows(self) -> np.ndarray:
        """The epoch's rows, in order (``num_samples`` of them)."""

    def __iter__(self) -> Iterator[Draw]:
        start, self._start = self._start, 0
        rows = self.rows()
        generator = np.random.default_rng(derive_seed(self.seed, "augment", self.part, self.epoch))
        seeds = generator.integers(0, 2**32, size=self.num_samples, dtype=np.uint64)
        rank, world = _shard()
        for position in range(rank, self.num_samples, world)[start:]:
            yield Draw(int(rows[position]), int(seeds[position]))


class WeightedEpochSampler(EpochSampler):
    """Rows drawn with replacement in proportion to ``weights`` (the balancing protocol),
    ``num_samples`` per epoch (default: the part's length)."""

    def __init__(
        self, weights: np.ndarray, seed: int, part: str, num_samples: int | None = None
    ) -> None:
        weights = np.array(weights, dtype=np.float64)  # a copy: parquet columns are read-only
        super().__init__(len(weights) if num_samples is None else num_samples, seed, part)
        self.weights = torch.as_tensor(weights)

    def rows(self) -> np.ndarray:
        generator = torch.Generator()
        generator.manual_seed(derive_seed(self.seed, "sampler", self.part, self.epoch))
        drawn = torch.multinomial(self.weights, self.num_samples, True, generator=generator)
        return drawn.numpy()


class ShuffledEpochSampler(EpochSampler):
    """Every row once per epoch, in an order of its own (the GRU stages' windows)."""

    def rows(self) -> np.ndarray:
        seed = derive_seed(self.seed, "order", self.part, self.epoch)
        return np.random.default_rng(seed).permutation(self.num_samples)


class ResumableLoader(DataLoader):
    """A DataLoader over an `EpochSampler` that Lightning can save and restore mid-epoch.

    Lightning stores ``state_dict()`` in every checkpoint (the loader is `_Stateful`); after
    ``load_state_dict`` the restored epoch continues after the batches it had already yielded.
    Its own generator keeps the global torch RNG (dropout) untouched by worker seeding.
    """

    def __init__(self, dataset: Any, sampler: EpochSampler, batch_size: int, **kwargs: Any):
        generator = torch.Generator().manual_seed(getattr(sampler, "seed", 0))
        super().__init__(
            dataset, batch_size=batch_size, sampler=sampler, generator=generator, **kwargs
        )
        self._yielded = 0
        self._resume: dict[str, int] | None = None

    def __iter__(self):
        sampler = self.sampler
        skip = 0
        if self._resume is not None and self._resume["epoch"] == getattr(sampler, "epoch", None):
            skip = self._resume["batches"]
        self._resume = None
        if isinstance(sampler, EpochSampler):
            sampler.start_at(skip * self.batch_size)
        self._yielded = skip
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": getattr(self.sampler, "epoch", 0), "batches": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}
