"""The PNG of a predicted video: valence and arousal over time above the expression timeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from abaw_lightning import EXPR_CLASSES

CLASS_COLORS = ("#7f7f7f", "#d62728", "#8c564b", "#9467bd", "#2ca02c", "#1f77b4", "#ff7f0e")


def plot_video(table: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Write the PNG of a `Predictor.predict_video` table (matplotlib, no display needed)."""
    times = table["time"].to_numpy(dtype=float)
    use_time = np.isfinite(times).all() and len(times) > 0
    x = times if use_time else table["frame"].to_numpy(dtype=float)
    figure = Figure(figsize=(10, 5), layout="constrained")
    va_axes, expr_axes = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    va_axes.plot(x, table["valence"].to_numpy(dtype=float), label="valence", color="#1f77b4")
    va_axes.plot(x, table["arousal"].to_numpy(dtype=float), label="arousal", color="#d62728")
    va_axes.axhline(0.0, color="black", linewidth=0.5)
    va_axes.set_ylim(-1.05, 1.05)
    va_axes.set_ylabel("value")
    va_axes.legend(loc="upper right")
    va_axes.set_title(title or "predictions")
    expression = table["expression"].astype("string")
    for index, (name, color) in enumerate(zip(EXPR_CLASSES, CLASS_COLORS, strict=True)):
        hits = (expression == name).fillna(False).to_numpy(dtype=bool)
        expr_axes.scatter(x[hits], np.full(hits.sum(), index), color=color, marker="|", s=120)
    no_face = ~table["face"].to_numpy(dtype=bool)
    expr_axes.scatter(x[no_face], np.full(no_face.sum(), -1), color="black", marker="|", s=120)
    expr_axes.set_yticks(range(-1, len(EXPR_CLASSES)), ["no face", *EXPR_CLASSES])
    expr_axes.set_ylim(-1.5, len(EXPR_CLASSES) - 0.5)
    expr_axes.set_xlabel("time (s)" if use_time else "frame")
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path
