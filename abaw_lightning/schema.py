"""Names every package shares, defined once: table columns, parts, metric keys, expression
classes, and the derivation of every random stream's seed from the run's seed.

Seeds: each random stream (a part's sampler, a part's augmentations, ...) gets its own seed from
``derive_seed(seed, stream, *keys)`` through numpy's ``SeedSequence``, so streams never collide
across parts, seeds and epochs (``seed + index`` made seed 1's first part draw seed 0's second).
"""

from __future__ import annotations

import zlib

import numpy as np

EXPR_CLASSES = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
"""Expression classes in the Aff-Wild2 order (labels 0-6) used everywhere in the project."""

COLUMNS = ("image", "source", "video", "frame", "expr", "valence", "arousal")
"""Columns of every prepared table (README "Prepared dataset layout")."""
WEIGHT = "weight"
"""The training parts' extra column: the sampler weight of the balancing protocol."""

PARTS = ("expr", "va", "expr_va")
"""The training parts (METHOD.md section 1), named by their primary label."""
VALIDATION = ("expr", "va")
"""Validation sets: Aff-Wild2 EXPR (dataloader 0) and VA (dataloader 1)."""

VAL_METRICS = (
    "val/expr_f1",
    "val/expr_acc",
    "val/expr_score",
    "val/ccc_v",
    "val/ccc_a",
    "val/total",
)
"""What every stage logs after each validation; ``val/total`` picks the best epoch."""
MONITOR = "val/total"
METRIC_NAMES = {key.removeprefix("val/"): key for key in VAL_METRICS}
"""Short name (report columns) -> logged key."""

STREAMS = ("sampler", "augment", "views", "order")
"""The random streams of training data: which rows (weighted sampler), their augmentation, the
GRU windows' cached views, and the order of the GRU windows."""


def derive_seed(seed: int, stream: str, *keys: int | str) -> int:
    """A 32-bit seed for one random stream, independent of every other (seed, stream, keys)."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; streams are {STREAMS}")
    words = [int(seed) & 0xFFFFFFFF, STREAMS.index(stream)]
    words += [key if isinstance(key, int) else zlib.crc32(key.encode()) for key in keys]
    return int(np.random.SeedSequence(words).generate_state(1)[0])
