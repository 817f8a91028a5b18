"""LightningDataModules: the CNN stages' balanced image parts and the GRU stages' windows."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, Sampler

from abaw_lightning.data.balancing import weighted_sampler
from abaw_lightning.data.datasets import FrameDataset, load_table, passthrough_collate
from abaw_lightning.data.feature_windows import FeatureWindowDataset
from abaw_lightning.data.features import FeatureCache
from abaw_lightning.data.transforms import train_transform, val_transform
from abaw_lightning.data.windows import WindowDataset, eval_windows, gru_parts, train_windows
from abaw_lightning.errors import UserError

PARTS = ("expr", "va", "expr_va")
VALIDATION = ("expr", "va")
"""Validation tables: Aff-Wild2 EXPR (dataloader 0) and VA (dataloader 1)."""


class _Loaders(pl.LightningDataModule):
    """DataLoader settings shared by both datamodules."""

    def __init__(
        self, num_workers: int, pin_memory: bool, persistent_workers: bool, prefetch_factor: int
    ) -> None:
        super().__init__()
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.prefetch_factor = prefetch_factor if num_workers > 0 else None

    def _loader(
        self, dataset: Dataset, batch_size: int, sampler: Sampler | None = None, shuffle=False
    ) -> DataLoader:
        batched = hasattr(dataset, "__getitems__")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=shuffle,
            collate_fn=passthrough_collate if batched else None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            prefetch_factor=self.prefetch_factor,
            drop_last=sampler is not None or shuffle,
        )


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
        image_size: int = 112,
        resize: int | None = None,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        prefetch_factor: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__(num_workers, pin_memory, persistent_workers, prefetch_factor)
        unknown = sorted(set(parts) - set(PARTS))
        if unknown:
            raise UserError(f"data.parts: unknown parts {unknown}; choose from {list(PARTS)}")
        self.root = Path(root)
        self.parts = tuple(parts)
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.image_size = image_size
        self.resize = resize
        self.seed = seed
        self.train_sets: dict[str, FrameDataset] = {}
        self.train_weights: dict[str, object] = {}
        self.val_sets: list[FrameDataset] = []

    def setup(self, stage: str | None = None) -> None:
        if not self.val_sets:
            val = val_transform(self.image_size, self.resize)
            self.val_sets = [
                FrameDataset(load_table(self.root, f"affwild2/val_{task}"), self.root, val)
                for task in VALIDATION
            ]
        if stage in (None, "fit") and not self.train_sets:
            for index, part in enumerate(self.parts):
                table = load_table(self.root, f"parts/{part}")
                if table.empty:
                    raise UserError(f"training part {self.root}/parts/{part}.parquet has no rows")
                augment = train_transform(self.image_size, self.resize, seed=self.seed + index)
                self.train_sets[part] = FrameDataset(table, self.root, augment)
                self.train_weights[part] = table["weight"].to_numpy()

    def train_dataloader(self) -> CombinedLoader:
        loaders = {
            part: self._loader(
                dataset,
                self.batch_size,
                weighted_sampler(self.train_weights[part], seed=self.seed * 10 + index),
            )
            for index, (part, dataset) in enumerate(self.train_sets.items())
        }
        return CombinedLoader(loaders, mode="min_size")

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(dataset, self.val_batch_size, None) for dataset in self.val_sets]


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
        image_size: int = 112,
        resize: int | None = None,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        prefetch_factor: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__(num_workers, pin_memory, persistent_workers, prefetch_factor)
        unknown = sorted(set(tasks) - set(PARTS))
        if unknown:
            raise UserError(f"gru_tasks: unknown parts {unknown}; choose from {list(PARTS)}")
        self.root = Path(root)
        self.tasks = tuple(tasks)
        self.features = None if features is None else Path(features)
        self.length, self.train_stride = length, train_stride
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.image_size, self.resize = image_size, resize
        self.seed = seed
        self.train_sets: dict[str, Dataset] = {}
        self.val_sets: list[Dataset] = []

    def _windows(self, table, windows, score_mask, train: bool, seed: int = 0) -> Dataset:
        if self.features is not None:
            cache = FeatureCache.open(self.features)
            return FeatureWindowDataset(cache, table, windows, score_mask, augment=train)
        transform = (
            train_transform(self.image_size, self.resize, seed=seed)
            if train
            else val_transform(self.image_size, self.resize)
        )
        return WindowDataset(table, self.root, windows, transform, score_mask)

    def setup(self, stage: str | None = None) -> None:
        if not self.val_sets:
            for task in VALIDATION:
                table = load_table(self.root, f"affwild2/val_{task}")
                table = table.sort_values(["video", "frame"], kind="stable", ignore_index=True)
                rows, mask = eval_windows(table, self.length)
                self.val_sets.append(self._windows(table, rows, mask, train=False))
        if stage in (None, "fit") and not self.train_sets:
            tables = gru_parts(
                load_table(self.root, "affwild2/train_expr"),
                load_table(self.root, "affwild2/train_va"),
            )
            for index, part in enumerate(self.tasks):
                windows = train_windows(tables[part], self.length, self.train_stride)
                if len(windows) == 0:
                    raise UserError(
                        f"no {self.length}-frame training window without gaps in the Aff-Wild2 "
                        f"{part} frames of {self.root}: drop the part from gru_tasks"
                    )
                self.train_sets[part] = self._windows(
                    tables[part], windows, None, train=True, seed=self.seed + index
                )

    def train_dataloader(self) -> CombinedLoader:
        loaders = {
            part: self._loader(dataset, self.batch_size, shuffle=True)
            for part, dataset in self.train_sets.items()
        }
        return CombinedLoader(loaders, mode="min_size")

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(dataset, self.val_batch_size) for dataset in self.val_sets]
