"""The PNG of a predicted video: per face track, valence and arousal over time above the
expression timeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from abaw_lightning import EXPR_CLASSES

CLASS_COLORS = ("#7f7f7f", "#d62728", "#8c564b", "#9467bd", "#2ca02c", "#1f77b4", "#ff7f0e")
MAX_PANELS = 6
"""Face tracks drawn at most: the ones detected in the most frames (the CSV has them all)."""


def plotted_tracks(table: pd.DataFrame, max_panels: int = MAX_PANELS) -> list[int]:
    """The face_ids to draw, in id order: the `max_panels` detected in the most frames."""
    detected = table.loc[table["face"], "face_id"].astype("int64").value_counts()
    ranked = sorted(detected.index, key=lambda face_id: (-detected[face_id], face_id))
    return sorted(int(face_id) for face_id in ranked[:max_panels])


def _panel(va_axes: Axes, expr_axes: Axes, x: np.ndarray, rows: pd.DataFrame, title: str) -> None:
    """One track: `rows` are its rows reindexed on the video's frames (NaN where it has none)."""
    va_axes.plot(x, rows["valence"].to_numpy(dtype=float), label="valence", color="#1f77b4")
    va_axes.plot(x, rows["arousal"].to_numpy(dtype=float), label="arousal", color="#d62728")
    va_axes.axhline(0.0, color="black", linewidth=0.5)
    va_axes.set_ylim(-1.05, 1.05)
    va_axes.set_ylabel("value")
    va_axes.legend(loc="upper right")
    va_axes.set_title(title)
    expression = rows["expression"].astype("string")
    for index, (name, color) in enumerate(zip(EXPR_CLASSES, CLASS_COLORS, strict=True)):
        hits = (expression == name).fillna(False).to_numpy(dtype=bool)
        expr_axes.scatter(x[hits], np.full(hits.sum(), index), color=color, marker="|", s=120)
    no_face = ~rows["face"].fillna(False).to_numpy(dtype=bool)
    expr_axes.scatter(x[no_face], np.full(no_face.sum(), -1), color="black", marker="|", s=120)
    expr_axes.set_yticks(range(-1, len(EXPR_CLASSES)), ["no face", *EXPR_CLASSES])
    expr_axes.set_ylim(-1.5, len(EXPR_CLASSES) - 0.5)


def plot_video(table: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Write the PNG of a `Predictor.predict_video` table (matplotlib, no display needed): one
    panel per face track (at most MAX_PANELS), "no face" marking the frames where that face was
    not detected; one empty panel when no face was found."""
    frames = table.groupby("frame", sort=True).first()
    times = frames["time"].to_numpy(dtype=float)
    use_time = len(times) > 0 and np.isfinite(times).all()
    x = times if use_time else frames.index.to_numpy(dtype=float)
    tracks = plotted_tracks(table)
    found = int(table.loc[table["face"], "face_id"].nunique())
    panels = tracks or [None]
    figure = Figure(figsize=(10, 5 * len(panels)), layout="constrained")
    axes = figure.subplots(2 * len(panels), 1, sharex=True, height_ratios=(2, 1) * len(panels))
    heading = title or "predictions"
    if found > len(tracks):
        heading += f" ({len(tracks)} of {found} faces: the most often detected)"
    for number, face_id in enumerate(panels):
        if face_id is None:
            rows = frames.iloc[:0].reindex(frames.index)
            label = f"{heading}: no face found"
        else:
            rows = table[table["face_id"] == face_id].set_index("frame").reindex(frames.index)
            label = f"{heading}: face {face_id}" if len(panels) > 1 or found > 1 else heading
        _panel(axes[2 * number], axes[2 * number + 1], x, rows, label)
    axes[-1].set_xlabel("time (s)" if use_time else "frame")
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path
