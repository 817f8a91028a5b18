"""Albumentations pipelines on uint8 HWC RGB crops (METHOD.md sections 4 and 5), seeded per worker.

Images stay uint8: the model normalises on the device. Seed rule: every pipeline is an
`A.Compose(..., seed=seed)`; inside a DataLoader worker, `SeededTransform` reseeds itself on first
use from (seed, torch.initial_seed()), so workers never repeat each other's augmentations and a
run seeded with Lightning's `seed_everything(workers=True)` or a fixed torch seed is reproducible.
"""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch
from torch.utils.data import get_worker_info

CROP = 112
RESIZE = 134


def default_resize(size: int) -> int:
    """The resize side that keeps the paper's 134/112 ratio for a crop side `size`."""
    return round(size * RESIZE / CROP)


class SeededTransform:
    """A seeded `A.Compose` that reseeds itself once per DataLoader worker (per worker seed)."""

    def __init__(self, compose: A.Compose, seed: int) -> None:
        self.compose = compose
        self.seed = seed
        self._worker_seed: int | None = None

    def _reseed_in_worker(self) -> None:
        """In a worker, derive a fresh seed from (seed, torch.initial_seed()) the first time."""
        if get_worker_info() is None:
            return
        torch_seed = torch.initial_seed()
        if torch_seed != self._worker_seed:
            self._worker_seed = torch_seed
            mixed = np.random.SeedSequence([self.seed, torch_seed]).generate_state(1)[0]
            self.compose.set_random_seed(int(mixed))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Augment one uint8 HWC image."""
        self._reseed_in_worker()
        return self.compose(image=image)["image"]

    def frames(self, images: np.ndarray) -> np.ndarray:
        """Augment a [T, H, W, C] stack with one draw: same crop offset and flip for every frame."""
        self._reseed_in_worker()
        return self.compose(images=images)["images"]


def train_transform(size: int = CROP, resize: int | None = None, seed: int = 0) -> SeededTransform:
    """Resize to resize x resize, random crop size x size (random translation), random h-flip."""
    resize = default_resize(size) if resize is None else resize
    compose = A.Compose(
        [A.Resize(resize, resize), A.RandomCrop(size, size), A.HorizontalFlip(p=0.5)], seed=seed
    )
    return SeededTransform(compose, seed)


def val_transform(size: int = CROP, resize: int | None = None) -> SeededTransform:
    """Resize to resize x resize, then centre crop size x size: deterministic."""
    resize = default_resize(size) if resize is None else resize
    compose = A.Compose([A.Resize(resize, resize), A.CenterCrop(size, size)], seed=0)
    return SeededTransform(compose, 0)
