"""Windows of cached CNN features: the GRU stage's fast path (no image is decoded)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from abaw_lightning.data.features import FeatureCache


def draw_view(grid: np.ndarray, generator: torch.Generator | None = None) -> int:
    """One training view of a window (METHOD.md §4): a crop offset uniform over the grid's rows
    and, independently, a column: a flip with probability 1/2 (never, with one column)."""
    offset = int(torch.randint(grid.shape[0], (), generator=generator))
    flip = int(torch.randint(grid.shape[1], (), generator=generator))
    return int(grid[offset, flip])


class FeatureWindowDataset(Dataset):
    """One window per item: features float16 [T,2,128], expr Long[T], va Float[T,2], mask Bool[T].

    Training windows draw one cached training view per window and epoch (the same crop offset and
    flip for all its frames, `draw_view`) from the worker's seeded torch generator; evaluation
    windows read view 0, the validation view, which training never draws.
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

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        view = 0 if self.training_views is None else draw_view(self.training_views)
        return {
            "features": torch.from_numpy(self.cache.read(view, self.ids[index])),
            "expr": torch.from_numpy(self.expr[index]),
            "va": torch.from_numpy(self.va[index]),
            "mask": torch.from_numpy(self.mask[index].copy()),
        }
