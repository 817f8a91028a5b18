"""LightningDataModules: the CNN stages' balanced image parts and the GRU stages' windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset

from abaw_lightning.data.loading.datasets import (
    PART_COLUMNS,
    FrameDataset,
    check_table,
    load_table,
    passthrough_collate,
    single_threaded_opencv,
)
from abaw_lightning.data.loading.feature_cache import FeatureCache
from abaw_lightning.data.loading.feature_windows import FeatureWindowDataset
from abaw_lightning.data.loading.samplers import (
    EpochSampler,
    ResumableLoader,
    ShuffledEpochSampler,
    WeightedEpochSampler,
)
from abaw_lightning.data.loading.transforms import train_transform, val_transform
from abaw_lightning.data.loading.windows import (
    WindowDataset,
    eval_windows,
    gru_parts,
    train_windows,
)
from abaw_lightning.errors import UserError
from abaw_lightning.schema import PARTS, VALIDATION

PART_TASKS = {"expr": ("expr",), "va": ("va",), "expr_va": ("expr", "va")}
"""The labels every row of a part carries."""


def read_checked(root: Path, name: str, tasks: tuple[str, ...], **checks) -> pd.DataFrame:
    """`load_table` then `check_table`: one UserError per problem, naming the file."""
    return check_table(load_table(root, name), root, name, tasks=tasks, **checks)


def check_batches(sizes: dict[str, int], batch_size: int, what: str, key: str) -> None:
    """Every part must fill one training batch: a step takes a full batch (``drop_last``) from
    each part, so a smaller part means an epoch without a step. ``key`` is the setting to pass."""
    part = min(sizes, key=sizes.get)
    if sizes[part] < batch_size:
        raise UserError(
            f"training part {part} has {sizes[part]} {what}, fewer than one batch "
            f"({key}={batch_size}): every step takes a full batch from each part, so an epoch "
            f"would have no step. Pass {key}={sizes[part]} (or less)."
        )


def longest_run(frames: pd.DataFrame) -> int:
    """The most consecutive frames of one video in a table sorted by (video, frame)."""
    if frames.empty:
        return 0
    video, frame = frames["video"].to_numpy(), frames["frame"].to_numpy()
    starts = np.r_[True, (video[1:] != video[:-1]) | (np.diff(frame) != 1)]
    return int(np.bincount(np.cumsum(starts)).max())


class _Loaders(pl.LightningDataModule):
    """What both datamodules share: the prepared folder, batch sizes, image sizes, the run's seed
    and the DataLoader settings."""

    def __init__(
        self,
        root: str | Path,
        batch_size: int,
        val_batch_size: int,
        image_size: int = 112,
        resize: int | None = None,
        seed: int = 0,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        prefetch_factor: int = 4,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.image_size, self.resize = image_size, resize
        self.seed = seed
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.prefetch_factor = prefetch_factor if num_workers > 0 else None

    def _settings(self, dataset: Dataset) -> dict:
        if self.num_workers > 0:
            single_threaded_opencv()  # in this process, before the workers fork
        batched = hasattr(dataset, "__getitems__")
        return {
            "collate_fn": passthrough_collate if batched else None,
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
            "prefetch_factor": self.prefetch_factor,
        }

    def _train_loader(self, dataset: Dataset, sampler: EpochSampler, batch_size: int):
        """A part's training loader: full batches of the sampler's draws, resumable mid-epoch."""
        settings = self._settings(dataset)
        return ResumableLoader(dataset, sampler, batch_size, drop_last=True, **settings)

    def _val_loader(self, dataset: Dataset, batch_size: int) -> DataLoader:
        """A validation loader: every frame in order (its own generator for worker seeds)."""
        generator = torch.Generator().manual_seed(0)
        return DataLoader(dataset, batch_size, generator=generator, **self._settings(dataset))


class CnnDataModule(_Loaders):
    """Each training step gets one batch per part (``CombinedLoader(mode="min_size")``).

    Parts are drawn by the balancing samplers (weights from `abaw prepare`); an epoch is one pass
    of the smallest part. Validation reads the Aff-Wild2 EXPR and VA validation frames, in order.
    """

    def __init__(
        self,
        root: str | Path,
        parts: tuple[str, ...] | list[str] = PARTS,
        batch_size: int = 64,
        val_batch_size: int = 256,
        **settings: Any,
    ) -> None:
        super().__init__(root, batch_size, val_batch_size, **settings)
        unknown = sorted(set(parts) - set(PARTS))
        if unknown:
            raise UserError(f"data.parts: unknown parts {unknown}; choose from {list(PARTS)}")
        self.parts = tuple(parts)
        self.train_sets: dict[str, FrameDataset] = {}
        self.train_weights: dict[str, object] = {}
        self.val_sets: list[FrameDataset] = []

    def setup(self, stage: str | None = None) -> None:
        if not self.val_sets:
            val = val_transform(self.image_size, self.resize)
            names = [f"affwild2/val_{task}" for task in VALIDATION]
            self.val_sets = [
                FrameDataset(read_checked(self.root, name, (task,)), self.root, val, name)
                for name, task in zip(names, VALIDATION, strict=True)
            ]
        if stage in (None, "fit") and not self.train_sets:
            tables = {part: self._part(part) for part in self.parts}
            sizes = {part: len(table) for part, table in tables.items()}
            check_batches(sizes, self.batch_size, "rows", "data.batch_size")
            for part, table in tables.items():
                augment = train_transform(self.image_size, self.resize)
                self.train_sets[part] = FrameDataset(table, self.root, augment, f"parts/{part}")
                self.train_weights[part] = table["weight"].to_numpy()

    def _part(self, part: str) -> pd.DataFrame:
        others = [name for name in self.parts if name != part]
        hint = f"train without it: data.parts=[{','.join(others)}]" if others else ""
        return read_checked(
            self.root, f"parts/{part}", PART_TASKS[part], columns=PART_COLUMNS, empty_hint=hint
        )

    def train_dataloader(self) -> CombinedLoader:
        loaders = {
            part: self._train_loader(
                dataset,
                WeightedEpochSampler(self.train_weights[part], self.seed, part),
                self.batch_size,
            )
            for part, dataset in self.train_sets.items()
        }
        return CombinedLoader(loaders, mode="min_size")

    def val_dataloader(self) -> list[DataLoader]:
        return [self._val_loader(dataset, self.val_batch_size) for dataset in self.val_sets]


class GruDataModule(_Loaders):
    """Windows of 32 Aff-Wild2 frames per part (`expr`, `va`, `expr_va`), 16 per part and step.

    With ``features`` (a feature-cache folder) items are cached head features; without, items
    are image windows augmented with one draw per window, for the frozen CNN to run online.
    Validation windows are non-overlapping and score every labelled frame once.
    """

    def __init__(
        self,
        root: str | Path,
        tasks: tuple[str, ...] | list[str] = PARTS,
        features: str | Path | None = None,
        length: int = 32,
        train_stride: int = 16,
        batch_size: int = 16,
        val_batch_size: int = 64,
        **settings: Any,
    ) -> None:
        super().__init__(root, batch_size, val_batch_size, **settings)
        unknown = sorted(set(tasks) - set(PARTS))
        if unknown:
            raise UserError(f"gru_tasks: unknown parts {unknown}; choose from {list(PARTS)}")
        self.tasks = tuple(tasks)
        self.features = None if features is None else Path(features)
        self.length, self.train_stride = length, train_stride
        self.train_sets: dict[str, Dataset] = {}
        self.val_sets: list[Dataset] = []

    def _windows(self, table, windows, score_mask, train: bool) -> Dataset:
        if self.features is not None:
            cache = FeatureCache.open(self.features)
            return FeatureWindowDataset(cache, table, windows, score_mask, augment=train)
        transform = (
            train_transform(self.image_size, self.resize)
            if train
            else val_transform(self.image_size, self.resize)
        )
        return WindowDataset(table, self.root, windows, transform, score_mask)

    def setup(self, stage: str | None = None) -> None:
        if not self.val_sets:
            for task in VALIDATION:
                table = read_checked(self.root, f"affwild2/val_{task}", (task,))
                table = table.sort_values(["video", "frame"], kind="stable", ignore_index=True)
                rows, mask = eval_windows(table, self.length)
                self.val_sets.append(self._windows(table, rows, mask, train=False))
        if stage in (None, "fit") and not self.train_sets:
            tables = gru_parts(
                read_checked(self.root, "affwild2/train_expr", ("expr",)),
                read_checked(self.root, "affwild2/train_va", ("va",)),
            )
            windows = {part: self._train_windows(part, tables[part]) for part in self.tasks}
            sizes = {part: len(rows) for part, rows in windows.items()}
            check_batches(sizes, self.batch_size, "windows", "data.windows.batch_size")
            for part in self.tasks:
                self.train_sets[part] = self._windows(tables[part], windows[part], None, train=True)

    def _train_windows(self, part: str, frames: pd.DataFrame) -> np.ndarray:
        windows = train_windows(frames, self.length, self.train_stride)
        if len(windows) == 0:
            others = [name for name in self.tasks if name != part]
            drop = f"gru_tasks=[{','.join(others)}]" if others else "other gru_tasks"
            raise UserError(
                f"no {self.length}-frame training window without gaps in the {len(frames)} "
                f"Aff-Wild2 {part} frames of {self.root} (the longest run of consecutive frames "
                f"of one video is {longest_run(frames)}): pass shorter windows "
                f"(data.windows.length=N), or train without the part: {drop}"
            )
        return windows

    def train_dataloader(self) -> CombinedLoader:
        loaders = {
            part: self._train_loader(
                dataset, ShuffledEpochSampler(len(dataset), self.seed, part), self.batch_size
            )
            for part, dataset in self.train_sets.items()
        }
        return CombinedLoader(loaders, mode="min_size")

    def val_dataloader(self) -> list[DataLoader]:
        return [self._val_loader(dataset, self.val_batch_size) for dataset in self.val_sets]
