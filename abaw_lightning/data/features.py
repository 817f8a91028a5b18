"""The feature cache of the GRU stage: the frozen CNN's two 128-d head features of every frame, for
a fixed set of augmented views (METHOD.md section 4), in one memory-mapped float16 .npy file.

Folder layout: ``manifest.json`` (checkpoint and its sha256, sizes, views, frame count; written
last, with ``"complete": true``), ``frames.parquet`` (column ``image``: row number = frame id) and
``features.npy`` of shape [V, N, 2, 128] (axis 2: 0 = EXPR head feature, 1 = VA head feature).
View 0 is the validation view (centre crop, unflipped) and only that; views 1.. are the training
views, a grid of crop offsets x flips (`FeatureCache.training_views`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
from rich.console import Console

from abaw_lightning.data.datasets import load_table
from abaw_lightning.data.transforms import SeededTransform
from abaw_lightning.errors import UserError
from abaw_lightning.models.heads import HEAD_FEATURES
from abaw_lightning.stages.checkpoints import load_cnn
from abaw_lightning.stages.extract import HEADS, FrameViews, predict_into

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


def _view_lists(views: Sequence[View]) -> list[list]:
    return [[view.top, view.left, view.flip] for view in views]


def checkpoint_sha256(path: Path) -> str:
    """The sha256 of a checkpoint file: the identity of the features computed from it."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_frames(prepared_root: Path, tables: Sequence[str]) -> np.ndarray:
    """The image paths of the named prepared tables, in order, each once."""
    images = [load_table(prepared_root, name)["image"] for name in tables]
    if not images:
        raise UserError("the feature cache needs at least one prepared table")
    return pd.unique(pd.concat(images, ignore_index=True).astype(str).to_numpy())


def _read_manifest(folder: Path) -> dict | None:
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
        manifest = _read_manifest(folder)
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


def _stale_mark(folder: Path) -> str | None:
    """The reason `mark_stale` recorded in the cache's manifest, if any."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest.get("stale") if isinstance(manifest, dict) else None


def _stale_reason(folder: Path, wanted: dict, images: np.ndarray) -> str | None:
    """Why the cache in `folder` cannot serve `wanted` (None when it can)."""
    manifest = _read_manifest(folder)
    if manifest is None:
        stale = _stale_mark(folder)
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
        "checkpoint_sha256": checkpoint_sha256(checkpoint),
        "image_size": image_size,
        "resize": resize,
        "views": _view_lists(views),
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
