"""Windows of cached CNN features: the GRU stage's fast path (no image is decoded)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from abaw_lightning.data.features import FeatureCache


class FeatureWindowDataset(Dataset):
    """One window per item: features float16 [T,2,128], expr Long[T], va Float[T,2], mask Bool[T].

    Training windows draw one cached view per window and epoch (the same crop offset and flip for
    all its frames, METHOD.md §4) from the worker's seeded torch generator; evaluation windows
    read view 0, the un-augmented one.
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
        self.augment = augment

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        view = int(torch.randint(len(self.cache.views), ())) if self.augment else 0
        return {
            "features": torch.from_numpy(self.cache.read(view, self.ids[index])),
            "expr": torch.from_numpy(self.expr[index]),
            "va": torch.from_numpy(self.va[index]),
            "mask": torch.from_numpy(self.mask[index].copy()),
        }
