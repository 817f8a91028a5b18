"""Windows of cached CNN features: the GRU stage's fast path (no image is decoded)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from abaw_lightning.data.loading.datasets import draw
from abaw_lightning.data.loading.feature_cache import FeatureCache
from abaw_lightning.data.loading.samplers import Draw


def draw_view(grid: np.ndarray, generator: np.random.Generator) -> int:
    """One training view of a window (METHOD.md §4): a crop offset uniform over the grid's rows
    and, independently, a column: a flip with probability 1/2 (never, with one column)."""
    offset = int(generator.integers(grid.shape[0]))
    flip = int(generator.integers(grid.shape[1]))
    return int(grid[offset, flip])


class FeatureWindowDataset(Dataset):
    """One window per item: features float16 [T,2,128], expr Long[T], va Float[T,2], mask Bool[T].

    Training windows draw one cached training view per window and epoch (the same crop offset and
    flip for all its frames, `draw_view`) from the sample's seed (the sampler's `Draw`);
    evaluation windows read view 0, the validation view, which training never draws.
    """

    def __init__(
        self,
        cache: FeatureCache,
        table: pd.DataFrame,
        windows: np.ndarray,
        score_mask: np.ndarray | None = None,
        augment: bool = False,
    ) -> None:
        self.cache = cache
        self.ids = cache.frame_ids(table["image"])[windows]
        self.expr = table["expr"].to_numpy(dtype=np.int64)[windows]
        self.va = table[["valence", "arousal"]].to_numpy(dtype=np.float32)[windows]
        self.mask = np.ones(windows.shape, bool) if score_mask is None else score_mask
        self.training_views = cache.training_views() if augment else None

    def __len__(self) -> int:
        return len(self.ids)

    def scored_images(self) -> np.ndarray:
        """The image of every frame a validation pass scores, in batch order (masked frames)."""
        return self.cache.images.to_numpy(dtype=str)[self.ids][self.mask]

    def __getitem__(self, item: int | Draw) -> dict[str, torch.Tensor]:
        index, seed = draw(item)
        view = 0
        if self.training_views is not None:
            view = draw_view(self.training_views, np.random.default_rng(seed))
        return {
            "features": torch.from_numpy(self.cache.read(view, self.ids[index])),
            "expr": torch.from_numpy(self.expr[index]),
            "va": torch.from_numpy(self.va[index]),
            "mask": torch.from_numpy(self.mask[index].copy()),
        }
