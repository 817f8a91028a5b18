"""Temporal windows of one Aff-Wild2 video for the GRU stage (METHOD.md section 4).

Window arrays hold positional row indices into a frames table sorted by (video, frame).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from abaw_lightning.data.loading.datasets import LabelledRows, draw
from abaw_lightning.data.loading.samplers import Draw
from abaw_lightning.data.loading.transforms import SeededTransform

LENGTH = 32
STRIDE = 16


def _video_runs(table: pd.DataFrame) -> list[np.ndarray]:
    """Positional rows of each video, in table order; the table must be sorted by (video, frame)."""
    keys = table[["video", "frame"]]
    if not pd.MultiIndex.from_frame(keys).is_monotonic_increasing:
        raise ValueError("the frames table must be sorted by (video, frame)")
    video = table["video"].to_numpy()
    if not len(video):
        return []
    return np.split(np.arange(len(video)), np.flatnonzero(video[1:] != video[:-1]) + 1)


def _starts(n: int, length: int, stride: int) -> np.ndarray:
    """Window starts every `stride` rows, plus one aligned to the end when they miss it."""
    starts = np.arange(0, n - length + 1, stride)
    if starts[-1] != n - length:
        starts = np.r_[starts, n - length]
    return starts


def train_windows(table: pd.DataFrame, length: int = LENGTH, stride: int = STRIDE) -> np.ndarray:
    """[n, length] rows of training windows: stride `stride`, end-aligned, gapped/short dropped."""
    frames = table["frame"].to_numpy(dtype=np.int64)
    windows = []
    for rows in _video_runs(table):
        if len(rows) < length:
            continue
        breaks = np.r_[0, np.cumsum(np.diff(frames[rows]) != 1)]
        starts = _starts(len(rows), length, stride)
        consecutive = breaks[starts + length - 1] == breaks[starts]
        windows.extend(rows[s : s + length] for s in starts[consecutive])
    return np.array(windows, dtype=np.int64).reshape(-1, length)


def eval_windows(table: pd.DataFrame, length: int = LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows covering every row once: (rows [n, length], score_mask [n, length]).

    The last window of a video is end-aligned and scores only its new frames; a video shorter
    than `length` is padded with its last row, padding unscored.
    """
    windows, masks = [], []
    for rows in _video_runs(table):
        n = len(rows)
        if n < length:
            windows.append(np.r_[rows, np.full(length - n, rows[-1])])
            masks.append(np.arange(length) < n)
            continue
        covered = 0
        for s in _starts(n, length, length):
            windows.append(rows[s : s + length])
            masks.append(s + np.arange(length) >= covered)
            covered = s + length
    return (
        np.array(windows, dtype=np.int64).reshape(-1, length),
        np.array(masks, dtype=bool).reshape(-1, length),
    )


class WindowDataset(Dataset):
    """One window per item: image uint8 [T,3,H,W], expr Long[T], va Float[T,2], mask Bool[T]."""

    def __init__(
        self,
        table: pd.DataFrame,
        root: Path,
        windows: np.ndarray,
        transform: SeededTransform | None = None,
        score_mask: np.ndarray | None = None,
    ) -> None:
        self.rows = LabelledRows(table, root)
        self.windows = np.asarray(windows, dtype=np.int64)
        self.transform = transform
        self.score_mask = (
            np.ones(self.windows.shape, dtype=bool)
            if score_mask is None
            else np.asarray(score_mask, dtype=bool)
        )
        if self.score_mask.shape != self.windows.shape:
            raise ValueError("score_mask must have the shape of windows")

    def __len__(self) -> int:
        return len(self.windows)

    def scored_images(self) -> np.ndarray:
        """The image of every frame a validation pass scores, in batch order: the windows row by
        row, masked frames only (each labelled frame once)."""
        return self.rows.images[self.windows][self.score_mask]

    def __getitem__(self, item: int | Draw) -> dict[str, torch.Tensor]:
        index, seed = draw(item)
        rows = self.windows[index]
        unique, inverse = np.unique(rows, return_inverse=True)  # padding rows are read once
        frames = np.stack([self.rows.read(r) for r in unique])[inverse]
        if self.transform is not None:
            frames = self.transform.frames(frames, seed)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))),
            "expr": torch.from_numpy(self.rows.expr[rows]),
            "va": torch.from_numpy(self.rows.va[rows]),
            "mask": torch.from_numpy(self.score_mask[index].copy()),
        }


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values(["video", "frame"], kind="stable").reset_index(drop=True)


def gru_parts(train_expr: pd.DataFrame, train_va: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The GRU part tables: EXPR-train frames, VA-train frames, and EXPR-train frames with VA."""
    has_expr = train_expr["expr"] >= 0
    has_va = train_expr["valence"].notna() & train_expr["arousal"].notna()
    va_rows = train_va["valence"].notna() & train_va["arousal"].notna()
    return {
        "expr": _sorted(train_expr[has_expr]),
        "va": _sorted(train_va[va_rows]),
        "expr_va": _sorted(train_expr[has_expr & has_va]),
    }
