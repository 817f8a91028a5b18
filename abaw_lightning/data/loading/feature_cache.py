"""The feature cache of the GRU stage, as data: its layout, views, the frames it holds, and the
read side (`FeatureCache`) plus the dataset that feeds its extraction (`FrameViews`).

Folder layout: ``manifest.json`` (checkpoint and its sha256, sizes, views, frame count; written
last, with ``"complete": true``), ``frames.parquet`` (column ``image``: row number = frame id) and
``features.npy`` of shape [V, N, 2, 128] (axis 2: 0 = EXPR head feature, 1 = VA head feature).
View 0 is the validation view (centre crop, unflipped) and only that; views 1.. are the training
views, a grid of crop offsets x flips (`FeatureCache.training_views`). Extraction, which writes
it, is `abaw_lightning.stages.features`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import torch
from rich.console import Console
from torch import Tensor
from torch.utils.data import Dataset

from abaw_lightning.data.loading.datasets import load_table, to_chw
from abaw_lightning.data.loading.images import read_prepared_image
from abaw_lightning.data.loading.transforms import SeededTransform
from abaw_lightning.errors import UserError
from abaw_lightning.models.features import HEADS
from abaw_lightning.models.heads import HEAD_FEATURES

MANIFEST = "manifest.json"


FRAMES = "frames.parquet"


FEATURES = "features.npy"


PARTIAL = "features.partial.npy"


DTYPE = "float16"


console = Console(soft_wrap=True)


@dataclass(frozen=True)
class View:
    """One deterministic augmentation: crop at (top, left) of the resized image, then maybe flip."""

    top: int
    left: int
    flip: bool


def default_views(image_size: int, resize: int, offsets: int = 3, flip: bool = True) -> list[View]:
    """View 0 = the validation view (centre crop, no flip), never drawn in training; then the
    training grid: `offsets` x `offsets` crop positions spanning [0, resize - image_size], each
    without and (if `flip`) with a flip."""
    if resize < image_size:
        raise UserError(f"resize ({resize}) must be at least the image size ({image_size})")
    if offsets < 1:
        raise UserError(f"the number of crop offsets per axis must be at least 1, got {offsets}")
    span = resize - image_size
    centre = span // 2
    positions = [centre] if offsets == 1 else [i * span // (offsets - 1) for i in range(offsets)]
    positions = sorted(set(positions))
    flips = (False, True) if flip else (False,)
    grid = [View(top, left, f) for top in positions for left in positions for f in flips]
    return [View(centre, centre, False), *grid]


def view_transform(view: View, image_size: int, resize: int) -> SeededTransform:
    """The deterministic uint8 HWC -> HWC pipeline of a view: resize, crop at (top, left), flip.

    The resize is `val_transform`'s, so the centre view equals it byte for byte.
    """
    if not (0 <= view.top <= resize - image_size and 0 <= view.left <= resize - image_size):
        raise UserError(
            f"view {view} does not fit an {image_size}x{image_size} crop of a "
            f"{resize}x{resize} image"
        )
    steps = [
        A.Resize(resize, resize),
        A.Crop(
            x_min=view.left,
            y_min=view.top,
            x_max=view.left + image_size,
            y_max=view.top + image_size,
        ),
    ]
    if view.flip:
        steps.append(A.HorizontalFlip(p=1.0))
    return SeededTransform(A.Compose(steps, seed=0), 0)


def view_lists(views: Sequence[View]) -> list[list]:
    return [[view.top, view.left, view.flip] for view in views]


def cache_frames(prepared_root: Path, tables: Sequence[str]) -> np.ndarray:
    """The image paths of the named prepared tables, in order, each once."""
    images = [load_table(prepared_root, name)["image"] for name in tables]
    if not images:
        raise UserError("the feature cache needs at least one prepared table")
    return pd.unique(pd.concat(images, ignore_index=True).astype(str).to_numpy())


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a finished cache, or None when there is none or it is not complete."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("complete") is True else None


class FeatureCache:
    """Read access to a complete cache; pickles as its folder and manifest only, so DataLoader
    workers reopen the memmap (and the frame list, if they need it) lazily."""

    def __init__(self, folder: Path, manifest: dict) -> None:
        self.folder = Path(folder)
        self.manifest = manifest
        self._features: np.ndarray | None = None
        self._index: pd.Index | None = None

    @classmethod
    def open(cls, folder: Path) -> FeatureCache:
        """Open a complete cache; a missing or incomplete one is a UserError."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest is None:
            raise UserError(
                f"no complete feature cache in {folder} (missing, or its extraction was "
                "interrupted): rerun the GRU stage's command to extract the features."
            )
        cache = cls(folder, manifest)
        expected = (len(manifest["views"]), manifest["frames"], len(HEADS), HEAD_FEATURES)
        try:
            shape = cache.features.shape
        except (OSError, ValueError) as error:
            raise UserError(
                f"cannot read {folder / FEATURES} ({error}): delete {folder}"
            ) from error
        if shape != expected:
            raise UserError(
                f"{folder / FEATURES} has shape {shape}, its manifest says {expected}: "
                f"delete {folder} and rerun to extract again."
            )
        return cache

    def __getstate__(self) -> dict:
        return {"folder": self.folder, "manifest": self.manifest}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"], state["manifest"])

    @property
    def views(self) -> list[View]:
        return [View(int(top), int(left), bool(flip)) for top, left, flip in self.manifest["views"]]

    @property
    def num_frames(self) -> int:
        return int(self.manifest["frames"])

    @property
    def features(self) -> np.ndarray:
        """The read-only memmap [V, N, 2, 128], opened on first use in each process."""
        if self._features is None:
            self._features = np.load(self.folder / FEATURES, mmap_mode="r")
        return self._features

    @property
    def images(self) -> pd.Index:
        """The image path of every frame id (read from frames.parquet on first use)."""
        if self._index is None:
            path = self.folder / FRAMES
            try:
                images = pd.read_parquet(path, columns=["image"])["image"]
            except (OSError, ValueError) as error:
                raise UserError(f"cannot read {path} ({error}): delete {self.folder}") from error
            self._index = pd.Index(images.astype(str))
        return self._index

    def frame_ids(self, images: Sequence[str] | pd.Series) -> np.ndarray:
        """The frame ids (int64) of prepared-folder-relative image paths; all must be cached."""
        ids = self.images.get_indexer(pd.Index(images).astype(str))
        missing = np.flatnonzero(ids < 0)
        if len(missing):
            raise UserError(
                f"{len(missing)} image(s) are not in the feature cache {self.folder}, the first "
                f"is {np.asarray(images)[missing[0]]}: the prepared tables changed since the "
                "extraction; rerun to extract again."
            )
        return ids.astype(np.int64)

    def training_views(self) -> np.ndarray:
        """View indices Int[offsets, flips] of the training grid: views 1.. by crop offset (rows)
        and unflipped / flipped (columns; one column without flips). View 0 is not in it."""
        by_offset: dict[tuple[int, int], dict[bool, int]] = {}
        for index, view in enumerate(self.views[1:], start=1):
            by_offset.setdefault((view.top, view.left), {})[view.flip] = index
        flips = sorted({view.flip for view in self.views[1:]})
        grid = [[flipped.get(flip, -1) for flip in flips] for flipped in by_offset.values()]
        if not grid or len(self.views) - 1 != len(grid) * len(flips) or -1 in np.ravel(grid):
            raise UserError(
                f"the views of the feature cache {self.folder} are not a validation view followed "
                "by a crop-offset x flip grid: delete the folder and rerun to extract again."
            )
        return np.array(grid, dtype=np.int64)

    def read(self, view: int, ids: np.ndarray) -> np.ndarray:
        """Features [len(ids), 2, 128] (float16) of frames `ids` in view `view`.

        A NaN or infinite value (the file changed after its extraction) marks the cache stale,
        so that the next `ensure_features` extracts it again, and is a UserError saying so.
        """
        values = np.asarray(self.features[view, ids])
        if has_nonfinite(values):
            frame = ids[np.argmax(nonfinite(values).reshape(len(ids), -1).any(axis=1))]
            where = f"view {view} of frame {self.images[frame]}"
            mark_stale(self.folder, self.manifest, f"it holds NaN or infinite values ({where})")
            raise UserError(
                f"the feature cache {self.folder} holds NaN or infinite values ({where}), which "
                "its extraction did not write (was features.npy changed since?): it is marked "
                "stale, so rerunning the same command extracts it again."
            )
        return values

    def size_mb(self) -> float:
        return (self.folder / FEATURES).stat().st_size / 1e6


def nonfinite(values: np.ndarray) -> np.ndarray:
    """Where a float16 array is NaN or infinite: all five exponent bits set (on float16 this is
    several times faster than `np.isfinite`, and it runs on every window the GRU reads)."""
    return (values.view(np.uint16) & 0x7C00) == 0x7C00


def has_nonfinite(values: np.ndarray) -> bool:
    return bool(nonfinite(values).any())


def mark_stale(folder: Path, manifest: dict, reason: str) -> None:
    """Record in the cache's manifest that it must not be used (``complete`` false) and why."""
    path = Path(folder) / MANIFEST
    temporary = path.with_name(f"{MANIFEST}.{os.getpid()}.tmp")  # workers may mark at once
    temporary.write_text(json.dumps({**manifest, "complete": False, "stale": reason}) + "\n")
    temporary.replace(path)


def stale_mark(folder: Path) -> str | None:
    """The reason `mark_stale` recorded in the cache's manifest, if any."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest.get("stale") if isinstance(manifest, dict) else None


Transform = Callable[[np.ndarray], np.ndarray]


class FrameViews(Dataset):
    """Every frame read once, in all its views: {"images": uint8 [U, 3, H, W], "ids": int64}."""

    def __init__(self, images: Sequence[str], root: Path, transforms: Sequence[Transform]) -> None:
        self.images = np.asarray(images, dtype=str)
        self.root = Path(root)
        self.transforms = list(transforms)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image = read_prepared_image(self.root, self.images[index])
        views = torch.stack([to_chw(transform(image)) for transform in self.transforms])
        return {"images": views, "ids": torch.tensor(index, dtype=torch.int64)}
