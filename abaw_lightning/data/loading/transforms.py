"""Albumentations pipelines on uint8 HWC RGB crops (METHOD.md sections 4 and 5), seeded per sample.

Images stay uint8: the model normalises on the device. Seed rule: every pipeline is an
`A.Compose(..., seed=seed)`, and in training every sample brings its own seed (the sampler's
`Draw`, a function of the run's seed, the part, the epoch and the sample's position): the same
sample is augmented the same way whichever DataLoader worker reads it, in a resumed run too, and
no two samples share a draw.
"""

from __future__ import annotations

import albumentations as A
import numpy as np

CROP = 112
RESIZE = 134


def default_resize(size: int) -> int:
    """The resize side that keeps the paper's 134/112 ratio for a crop side `size`."""
    return round(size * RESIZE / CROP)


class SeededTransform:
    """A seeded `A.Compose`; given a sample's seed, it reseeds itself first (deterministic per
    sample), else it continues its own random sequence."""

    def __init__(self, compose: A.Compose, seed: int) -> None:
        self.compose = compose
        self.seed = seed

    def _reseed(self, seed: int | None) -> None:
        if seed is not None:
            self.compose.set_random_seed(int(seed))

    def __call__(self, image: np.ndarray, seed: int | None = None) -> np.ndarray:
        """Augment one uint8 HWC image (with the draw of ``seed`` when given)."""
        self._reseed(seed)
        return self.compose(image=image)["image"]

    def frames(self, images: np.ndarray, seed: int | None = None) -> np.ndarray:
        """Augment a [T, H, W, C] stack with one draw: same crop offset and flip for every frame."""
        self._reseed(seed)
        return self.compose(images=images)["images"]


def train_transform(size: int = CROP, resize: int | None = None, seed: int = 0) -> SeededTransform:
    """Resize to resize x resize, random crop size x size (random translation), random h-flip;
    ``seed`` starts its own sequence (training passes each sample's seed instead)."""
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
