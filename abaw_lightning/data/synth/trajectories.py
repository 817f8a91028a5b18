"""Per-video label trajectories: expression segments of tens of frames and smooth VA curves."""

from __future__ import annotations

import numpy as np

from abaw_lightning.data.synth.faces import CLASS_PRIOR, EXPR_VA_MEAN


def expression_segments(
    rng: np.random.Generator, n: int, min_len: int = 20, max_len: int = 60, first: int = -1
) -> np.ndarray:
    """Int[n] class per frame: segments of `min_len`-`max_len` frames, classes drawn by prior
    (the first segment is class `first` when given, so that a split can cover every class)."""
    labels = np.empty(n, dtype=np.int64)
    start, previous = 0, -1
    while start < n:
        length = int(rng.integers(min_len, max_len + 1))
        prior = CLASS_PRIOR.copy()
        if previous >= 0:
            prior[previous] = 0
        drawn = int(rng.choice(len(prior), p=prior / prior.sum()))
        previous = first if start == 0 and first >= 0 else drawn
        labels[start : start + length] = previous
        start += length
    return labels


def slow_waves(rng: np.random.Generator, n: int, amplitude: float, periods=(40, 200)) -> np.ndarray:
    """Float[n]: a sum of three sinusoids with random periods and phases, peak about `amplitude`."""
    t = np.arange(n)
    waves = [
        rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * t / rng.uniform(*periods) + rng.uniform(0, 7))
        for _ in range(3)
    ]
    total = np.sum(waves, axis=0)
    return amplitude * total / max(1.0, float(np.abs(total).max()))


def smooth(values: np.ndarray, width: int) -> np.ndarray:
    """Moving average along the first axis with edge padding (same length)."""
    kernel = np.ones(width) / width
    pad = width // 2
    padded = np.pad(values, [(pad, width - 1 - pad)] + [(0, 0)] * (values.ndim - 1), mode="edge")
    if values.ndim == 1:
        return np.convolve(padded, kernel, mode="valid")
    return np.stack(
        [np.convolve(padded[:, j], kernel, mode="valid") for j in range(values.shape[1])], 1
    )


def va_trajectory(rng: np.random.Generator, expr: np.ndarray) -> np.ndarray:
    """Float[n, 2] valence/arousal in [-1, 1], rounded to 3 decimals: slow waves pulled towards
    the typical VA of the current expression."""
    n = len(expr)
    waves = np.stack([slow_waves(rng, n, 0.75), slow_waves(rng, n, 0.75)], 1)
    pull = smooth(EXPR_VA_MEAN[expr], 15)
    va = np.clip(0.65 * waves + 0.45 * pull, -1, 1)
    return np.round(va, 3) + 0.0
