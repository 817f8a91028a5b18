"""`abaw report RUNS_DIR`: the mean +/- std table over seeds on the terminal, and with `--out`
the table file and the PNG figures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from rich.console import Console

from abaw_lightning.report import plots
from abaw_lightning.report.runs import (
    PREDICTIONS,
    best_seed,
    load_history,
    load_predictions,
    load_runs,
)
from abaw_lightning.report.tables import FORMATS, rich_table, summary

console = Console(width=None if sys.stdout.isatty() else 160)
"""Piped or logged output keeps the whole table instead of rich's 80-column default."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs_dir", type=Path, help="abaw-train's runs_dir, or one experiment in it"
    )
    parser.add_argument(
        "--format",
        choices=sorted(FORMATS),
        default=None,
        help="table format of --out (default md); without --out, print the table in it",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the table and PNG plots here")


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def write_report(runs: pd.DataFrame, out: Path, fmt: str = "md") -> list[Path]:
    """Write `summary.<fmt>`, `distributions.png` and, per experiment and stage, `curves.png`,
    `confusion.png` and `va_density.png` (best seed) under `out`; return the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    table_path = out / f"summary.{fmt}"
    table_path.write_text(FORMATS[fmt](summary(runs)))
    written = [table_path, _save(plots.metric_distributions(runs), out / "distributions.png")]
    history = load_history(runs)
    for (experiment, stage), group in runs.groupby(["experiment", "stage"], sort=False):
        folder = out / experiment / stage
        curves = history[(history["experiment"] == experiment) & (history["stage"] == stage)]
        if not curves.empty:
            title = f"{experiment}/{stage}"
            written.append(_save(plots.validation_curves(curves, title), folder / "curves.png"))
        seed = best_seed(group, experiment, stage)
        frame = None if seed is None else load_predictions(group, experiment, stage, seed)
        if frame is None:
            if seed is not None:
                console.print(
                    f"[yellow]{experiment}/{stage} seed {seed} has no {PREDICTIONS}[/]: "
                    "no confusion matrix or VA density for it"
                )
            continue
        title = f"{experiment}/{stage} seed {seed}"
        written.append(_save(plots.confusion_matrix(frame, title), folder / "confusion.png"))
        written.append(_save(plots.va_density(frame, title), folder / "va_density.png"))
    return written


def run(args: argparse.Namespace) -> int:
    runs = load_runs(args.runs_dir)
    table = summary(runs)
    if args.out is None and args.format is not None:
        print(FORMATS[args.format](table), end="")
        return 0
    title = f"{args.runs_dir}: best validation metrics, mean ± std over seeds (Aff-Wild2 val)"
    console.print(rich_table(table, title))
    for run_ in runs[~runs["complete"]].itertuples():
        where = f"{run_.experiment}/{run_.stage} seed {run_.seed}"
        console.print(f"[yellow]not averaged[/]: {where}: {run_.status}", highlight=False)
    if args.out is not None:
        written = write_report(runs, args.out, args.format or "md")
        console.print(f"[green]✓[/] wrote {len(written)} files to {args.out}")
    return 0
