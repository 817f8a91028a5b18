"""Balancing protocol of METHOD.md section 1: decimation of Aff-Wild2 frames and sampler weights."""

from __future__ import annotations

import numpy as np
import torch

from abaw_lightning.losses import NUM_BINS, va_bins

# (class, keep every k-th) in the order the released code applied them: Neutral, Happiness, Sadness.
EXPR_DECIMATION = ((0, 10), (4, 2), (5, 2))


def decimate_expr(expr: np.ndarray) -> np.ndarray:
    """Keep-mask of the EXPR decimation: each pass renumbers the survivors, then thins one class."""
    expr = np.asarray(expr)
    keep = np.ones(len(expr), dtype=bool)
    for cls, k in EXPR_DECIMATION:
        survivors = np.flatnonzero(keep)
        number = np.arange(len(survivors))
        keep[survivors[(expr[survivors] == cls) & (number % k != 0)]] = False
    return keep


def decimate_every(n: int, k: int) -> np.ndarray:
    """Keep-mask over n rows numbered 0..n-1 that keeps the rows whose number is a multiple of k."""
    if k < 1:
        raise ValueError(f"decimation step must be >= 1, got {k}")
    return np.arange(n) % k == 0


def _inverse_counts(keys: np.ndarray) -> np.ndarray:
    """1 / (number of rows sharing each row's key)."""
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse.reshape(-1)]


def va_bin_index(valence: np.ndarray, arousal: np.ndarray) -> np.ndarray:
    """Flat 20x20 bin number (valence bin * 20 + arousal bin), with the loss's binning
    (`losses.va_bins`: left-closed on the decimal values, exactly 1 in the last bin)."""
    values = np.stack([np.asarray(valence, np.float64), np.asarray(arousal, np.float64)], axis=-1)
    if np.isnan(values).any():
        raise ValueError("valence/arousal weights need every row labelled (NaN found)")
    bins = va_bins(torch.from_numpy(values)).numpy()
    return bins[..., 0] * NUM_BINS + bins[..., 1]


def expr_weights(expr: np.ndarray) -> np.ndarray:
    """Sampler weight 1 / count(class) for the `expr` part (every row labelled)."""
    expr = np.asarray(expr)
    if (expr < 0).any():
        raise ValueError("expression weights need every row labelled (-1 found)")
    return _inverse_counts(expr)


def va_weights(valence: np.ndarray, arousal: np.ndarray) -> np.ndarray:
    """Sampler weight 1 / count(VA bin) over the fixed 20x20 histogram (edges
    ``linspace(-1, 1, 21)``), for the `va` part."""
    return _inverse_counts(va_bin_index(valence, arousal))


def expr_va_weights(expr: np.ndarray, valence: np.ndarray, arousal: np.ndarray) -> np.ndarray:
    """Sampler weight (1/count(class) + 1/count(VA bin)) / max, for the `expr_va` part."""
    weights = expr_weights(expr) + va_weights(valence, arousal)
    return weights / weights.max() if len(weights) else weights
