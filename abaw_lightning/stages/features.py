"""Filling the GRU stage's feature cache: the frozen CNN's head features of every frame in every
view, through `Trainer.predict`, reused while its checkpoint, sizes, views and frames match
(METHOD.md section 4). The cache's layout and reader: `abaw_lightning.data.loading.feature_cache`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from rich.console import Console
from torch import Tensor, nn
from torch.utils.data import DataLoader

from abaw_lightning.data.loading.feature_cache import (
    DTYPE,
    FEATURES,
    FRAMES,
    MANIFEST,
    PARTIAL,
    FeatureCache,
    FrameViews,
    View,
    cache_frames,
    read_manifest,
    stale_mark,
    view_lists,
    view_transform,
)
from abaw_lightning.errors import UserError
from abaw_lightning.files import sha256_file
from abaw_lightning.models.checkpoints import load_cnn
from abaw_lightning.models.features import HEADS, head_features
from abaw_lightning.models.heads import HEAD_FEATURES

console = Console(soft_wrap=True)


def _stale_reason(folder: Path, wanted: dict, images: np.ndarray) -> str | None:
    """Why the cache in `folder` cannot serve `wanted` (None when it can)."""
    manifest = read_manifest(folder)
    if manifest is None:
        stale = stale_mark(folder)
        if stale:
            return stale
        if any((folder / name).exists() for name in (PARTIAL, FEATURES, FRAMES, MANIFEST)):
            return "the previous extraction did not complete"
        return "there is no cache yet"
    if manifest.get("checkpoint_sha256") != wanted["checkpoint_sha256"]:
        return f"the checkpoint changed (it was {manifest.get('checkpoint')})"
    for key in ("image_size", "resize", "views", "dtype", "feature_dim"):
        if manifest.get(key) != wanted[key]:
            return f"the {key.replace('_', ' ')} changed"
    try:
        cached = FeatureCache.open(folder).images
    except UserError as error:
        return str(error)
    if not np.array_equal(cached.to_numpy(), images):
        return "the frame list changed"
    return None


def ensure_features(
    folder: Path,
    checkpoint: Path,
    prepared_root: Path,
    tables: Sequence[str],
    image_size: int,
    resize: int,
    views: list[View],
    batch_size: int = 256,
    num_workers: int = 0,
    trainer_kwargs: dict | None = None,
) -> FeatureCache:
    """The cache of `checkpoint`'s features over the frames of `tables` in `views`: reused when
    it matches (checkpoint sha256, sizes, views, frames), extracted again otherwise."""
    folder, checkpoint, prepared_root = Path(folder), Path(checkpoint), Path(prepared_root)
    if not checkpoint.is_file():
        raise UserError(f"checkpoint not found: {checkpoint}; train the CNN student stage first.")
    if not views:
        raise UserError("the feature cache needs at least one view")
    images = cache_frames(prepared_root, tables)
    if not len(images):
        raise UserError(f"the tables {list(tables)} of {prepared_root} hold no frames")
    manifest = {
        "checkpoint": os.path.relpath(checkpoint.resolve(), folder.resolve()),
        "checkpoint_sha256": sha256_file(checkpoint),
        "image_size": image_size,
        "resize": resize,
        "views": view_lists(views),
        "frames": len(images),
        "dtype": DTYPE,
        "feature_dim": HEAD_FEATURES,
    }
    reason = _stale_reason(folder, manifest, images) if folder.is_dir() else "there is no cache yet"
    if reason is None:
        cache = FeatureCache.open(folder)
        console.print(
            f"[green]✓[/] features: reusing {folder} ({cache.size_mb():.1f} MB, "
            f"{len(views)} views x {len(images)} frames of {checkpoint.name})"
        )
        return cache
    console.print(
        f"features: extracting {len(views)} views x {len(images)} frames into {folder}: {reason}"
    )
    _extract(
        folder, checkpoint, prepared_root, images, manifest, batch_size, num_workers, trainer_kwargs
    )
    cache = FeatureCache.open(folder)
    console.print(f"[green]✓[/] features: {folder / FEATURES} ({cache.size_mb():.1f} MB)")
    return cache


def _extract(
    folder: Path,
    checkpoint: Path,
    prepared_root: Path,
    images: np.ndarray,
    manifest: dict,
    batch_size: int,
    num_workers: int,
    trainer_kwargs: dict | None,
) -> None:
    """Extract into a temporary .npy, rename it, then write the manifest (last, complete)."""
    model = load_cnn(checkpoint)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    views = [View(*view) for view in manifest["views"]]
    unique = list(dict.fromkeys(views))
    inverse = [unique.index(view) for view in views]
    transforms = [
        view_transform(view, manifest["image_size"], manifest["resize"]) for view in unique
    ]
    shape = (len(views), len(images), len(HEADS), HEAD_FEATURES)
    partial = folder / PARTIAL
    np.lib.format.open_memmap(partial, mode="w+", dtype=DTYPE, shape=shape).flush()
    dataset = FrameViews(images, prepared_root, transforms)
    try:
        predict_into(partial, model, dataset, inverse, batch_size, num_workers, trainer_kwargs)
    except UserError as error:
        raise UserError(f"extracting the features of {checkpoint} into {folder}: {error}") from None
    frames = folder / f"{FRAMES}.tmp"
    pd.DataFrame({"image": images}).to_parquet(frames, index=False)
    frames.replace(folder / FRAMES)
    partial.replace(folder / FEATURES)
    temporary = folder / f"{MANIFEST}.tmp"
    temporary.write_text(json.dumps({**manifest, "complete": True}, indent=2) + "\n")
    temporary.replace(folder / MANIFEST)


class FeatureExtractor(pl.LightningModule):
    """A frozen, eval-mode multitask CNN whose `predict_step` gives [B, U, 2, 128] float16."""

    def __init__(self, model: nn.Module, channels_last: bool = True) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        images = batch["images"]
        frames, views = images.shape[:2]
        features = head_features(self.model, images.flatten(0, 1), self.channels_last)
        features = features.to(torch.float16).view(frames, views, *features.shape[1:])
        if not torch.isfinite(features).all():
            raise UserError(
                f"non-finite head features in prediction batch {batch_idx}: the checkpoint's "
                "features overflow float16 or are NaN; check the CNN stage's checkpoint."
            )
        return features


class FeatureWriter(BasePredictionWriter):
    """Writes each batch's [B, U, 2, 128] into the [V, N, 2, 128] .npy memmap at its frame ids.

    ``inverse[v]`` is the computed view that cache view ``v`` copies; nothing is kept in memory.
    """

    def __init__(self, path: Path, inverse: Sequence[int]) -> None:
        super().__init__(write_interval="batch")
        self.path = Path(path)
        self.inverse = np.asarray(inverse, dtype=np.int64)
        self.array: np.memmap | None = None
        self.written: np.ndarray | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.array = np.load(self.path, mmap_mode="r+")
        self.written = np.zeros(self.array.shape[1], dtype=bool)

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Tensor,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        ids = batch["ids"].cpu().numpy()
        values = prediction.cpu().numpy()[:, self.inverse]
        self.array[:, ids] = values.transpose(1, 0, 2, 3)
        self.written[ids] = True

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.array.flush()


def predict_into(
    path: Path,
    model: nn.Module,
    dataset: FrameViews,
    inverse: Sequence[int],
    batch_size: int = 256,
    num_workers: int = 0,
    trainer_kwargs: dict | None = None,
) -> None:
    """Fill the preallocated .npy memmap at `path` with the features of every frame of `dataset`.

    `batch_size` counts images per forward pass: a batch holds batch_size // U frames (at least
    one), each with its U computed views. Extraction runs on one device.
    """
    frames_per_batch = max(1, batch_size // len(dataset.transforms))
    loader = DataLoader(
        dataset,
        batch_size=frames_per_batch,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
    writer = FeatureWriter(path, inverse)
    settings = {
        **(trainer_kwargs or {}),
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
        "logger": False,
        "enable_checkpointing": False,
        "callbacks": [writer],
        "default_root_dir": Path(path).parent,
    }
    trainer = pl.Trainer(**settings)
    trainer.predict(FeatureExtractor(model), dataloaders=loader, return_predictions=False)
    missing = np.flatnonzero(~writer.written)
    if len(missing):
        raise UserError(
            f"feature extraction covered {len(dataset) - len(missing)} of {len(dataset)} frames "
            f"(first missing: {dataset.images[missing[0]]}); remove limit_predict_batches from "
            "the trainer settings and run again."
        )
