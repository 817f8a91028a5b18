"""Report figures (matplotlib, object-oriented: no pyplot state, PNGs through Agg): metric
distributions over seeds, validation curves, EXPR confusion matrix, valence-arousal density."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from abaw_lightning.report.tables import DISPLAY
from abaw_lightning.schema import EXPR_CLASSES

CURVES = ("expr_score", "ccc_v", "ccc_a", "total")
TICK_WIDTH = 24
"""Characters per line of a box's label (experiment, stage and variant on lines of their own)."""
BOX_INCHES = 2.0
"""Room per box in each of the two columns of axes: a label line, level, at the small size."""
MAX_WIDTH = 40.0
"""Widest distributions figure (inches); beyond it the labels are slanted to fit."""


def _tick_label(run: pd.Series) -> str:
    parts = [run["experiment"], run["stage"], f"[{run['variant']}]" if run["variant"] else ""]
    return "\n".join(line for part in parts for line in textwrap.wrap(part, TICK_WIDTH))


def metric_distributions(runs: pd.DataFrame) -> Figure:
    """Box plot and the individual seeds of every metric, one box per report row; the figure
    grows with its longest label, so constrained layout always has room for the axes."""
    done = runs[runs["complete"]]
    groups = list(done.groupby("row", sort=False))
    labels = [_tick_label(group.iloc[0]) for _, group in groups]
    lines = max((label.count("\n") + 1 for label in labels), default=1)
    wanted = 2 * BOX_INCHES * len(groups) + 1.5
    level = wanted <= MAX_WIDTH
    height = 9 + 0.2 * lines + (0 if level else 0.12 * TICK_WIDTH)
    figure = Figure(figsize=(min(MAX_WIDTH, max(9.0, wanted)), height), layout="constrained")
    axes = figure.subplots(3, 2, sharex=True).ravel()
    jitter = np.random.default_rng(0)
    for axis, (name, title) in zip(axes, DISPLAY.items(), strict=True):
        values = [group[name].to_numpy(dtype=float) for _, group in groups]
        if values:
            axis.boxplot(values, widths=0.5, showfliers=False)
            for position, seeds in enumerate(values, start=1):
                x = position + jitter.uniform(-0.12, 0.12, len(seeds))
                axis.plot(x, seeds, "o", color="tab:blue", alpha=0.7, markersize=4)
            axis.set_xticks(
                range(1, len(labels) + 1),
                labels,
                rotation=0 if level else 45,
                ha="center" if level else "right",
                fontsize="small",
            )
        axis.set_title(title)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(f"best validation metrics over seeds ({len(done)} complete runs)")
    return figure


def validation_curves(history: pd.DataFrame, title: str = "") -> Figure:
    """EXPR score, CCC valence, CCC arousal and total per epoch, one line per seed."""
    figure = Figure(figsize=(12, 3.2), layout="constrained")
    axes = figure.subplots(1, len(CURVES), sharex=True)
    for axis, name in zip(axes, CURVES, strict=True):
        for seed, runs in history.groupby("seed"):
            runs = runs.sort_values("epoch")
            axis.plot(runs["epoch"], runs[name], marker=".", label=f"seed {seed}")
        axis.set_title(DISPLAY[name])
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axis.grid(alpha=0.3)
    if history["seed"].nunique() <= 10:
        axes[-1].legend(fontsize="small")
    figure.suptitle(f"validation curves {title}".strip())
    return figure


def confusion_counts(predictions: pd.DataFrame) -> np.ndarray:
    """Int[7, 7] counts (rows: truth) of the labelled frames of the EXPR validation set."""
    expr = predictions[(predictions["set"] == "expr") & (predictions["expr_true"] >= 0)]
    index = expr["expr_true"].to_numpy(np.int64) * 7 + expr["expr_pred"].to_numpy(np.int64)
    return np.bincount(index, minlength=49).reshape(7, 7)


def confusion_matrix(predictions: pd.DataFrame, title: str = "") -> Figure:
    """Row-normalised EXPR confusion matrix (recall per class on the diagonal), with counts."""
    counts = confusion_counts(predictions)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure = Figure(figsize=(6.5, 5.5), layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for truth in range(7):
        for pred in range(7):
            color = "white" if rates[truth, pred] > 0.5 else "black"
            text = f"{rates[truth, pred]:.2f}\n{counts[truth, pred]}"
            axis.text(pred, truth, text, ha="center", va="center", fontsize=7, color=color)
    axis.set_xticks(range(7), EXPR_CLASSES, rotation=45, ha="right")
    axis.set_yticks(range(7), EXPR_CLASSES)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    figure.colorbar(image, ax=axis, label="fraction of the true class")
    axis.set_title(f"EXPR confusion {title} ({counts.sum()} frames)".strip())
    return figure


def va_density(predictions: pd.DataFrame, title: str = "", bins: int = 40) -> Figure:
    """2-D histograms of true and predicted (valence, arousal) on the VA validation frames."""
    va = predictions[predictions["set"] == "va"].dropna(subset=["valence_true", "arousal_true"])
    edges = np.linspace(-1, 1, bins + 1)
    pairs = {
        "truth": (va["valence_true"], va["arousal_true"]),
        "prediction": (va["valence_pred"], va["arousal_pred"]),
    }
    histograms = {
        name: np.histogram2d(v.clip(-1, 1), a.clip(-1, 1), bins=[edges, edges])[0]
        for name, (v, a) in pairs.items()
    }
    peak = max(1.0, *(h.max() for h in histograms.values()))
    figure = Figure(figsize=(10, 4.6), layout="constrained")
    axes = figure.subplots(1, 2, sharex=True, sharey=True)
    for axis, (name, histogram) in zip(axes, histograms.items(), strict=True):
        shown = np.ma.masked_equal(histogram.T, 0)
        image = axis.pcolormesh(edges, edges, shown, norm=LogNorm(1, peak), cmap="viridis")
        axis.set_title(name)
        axis.set_xlabel("valence")
        axis.set_aspect("equal")
        axis.axhline(0, color="grey", lw=0.5)
        axis.axvline(0, color="grey", lw=0.5)
    axes[0].set_ylabel("arousal")
    figure.colorbar(image, ax=list(axes), label="frames")
    figure.suptitle(f"valence-arousal density {title} ({len(va)} frames)".strip())
    return figure
