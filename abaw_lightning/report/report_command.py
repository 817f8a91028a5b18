"""`abaw report RUNS_DIR`: the mean +/- std table over seeds on the terminal, with `--out` the
table file and the PNG figures, and with `--compare A B` the paired comparison of two rows."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from matplotlib.figure import Figure
from rich.console import Console
from rich.markup import escape

from abaw_lightning.files import write_json_atomic
from abaw_lightning.report import plots
from abaw_lightning.report.compare import (
    COMPARISON_FORMATS,
    compare,
    comparison_legend,
    comparison_table,
)
from abaw_lightning.report.runs import (
    PREDICTIONS,
    best_seed,
    load_history,
    load_predictions,
    load_runs,
)
from abaw_lightning.report.tables import (
    FORMATS,
    legend,
    rich_table,
    summary,
    widened,
)
from abaw_lightning.text import plural

console = Console(width=None if sys.stdout.isatty() else 160)
"""Piped or logged output keeps the whole table instead of rich's 80-column default."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs_dir",
        type=Path,
        nargs="?",
        default=Path("runs"),
        help="abaw-train's runs_dir (default runs), a view in it, or a view's seed folder "
        "(holding view.json)",
    )
    parser.add_argument(
        "--format",
        choices=sorted(FORMATS),
        default=None,
        help="table format of --out (default md); without --out, print the table in it",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the table and PNG plots here (with --compare: the comparison table)",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="paired comparison over seeds of two rows, named as in the table: "
        "EXPERIMENT/STAGE or EXPERIMENT/STAGE[VARIANT] (a short name such as v1a2b3c4d, or the "
        "full settings)",
    )


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


MAX_NAME = 100
"""Longest folder name written (file systems stop at 255 bytes)."""
DIGEST = 16
"""Hex digits of the digest that ends a name cut to `MAX_NAME`."""


def safe_name(text: str) -> str:
    """`text` as one folder name any file system takes: characters other than letters, digits
    and ``_.-~=,+`` percent-encoded (``val/total`` -> ``val%2Ftotal``), no leading or trailing
    dot; a longer name than `MAX_NAME` is cut and ends with a digest of `text` (still unique)."""
    name = quote(text, safe="=,+") or "_"
    name = "%2E" + name[1:] if name.startswith(".") else name
    name = name[:-1] + "%2E" if name.endswith(".") else name
    if len(name) <= MAX_NAME:
        return name
    head = re.sub(r"%[0-9A-F]?$", "", name[: MAX_NAME - DIGEST - 1])  # no escape cut in half
    return f"{head}-{hashlib.sha256(text.encode()).hexdigest()[:DIGEST]}"


def row_folder(experiment: str, stage: str, variant: str) -> Path:
    """``<experiment>/<stage>[/<variant>]``, each part a `safe_name` (the figures' folder); the
    variant is the row's, so a long label is its short name."""
    parts = [experiment, stage, variant] if variant else [experiment, stage]
    return Path(*map(safe_name, parts))


WRITTEN = ".abaw-report.json"
"""The files the last report wrote into its --out folder, so the next one removes those it does
not write again (a row renamed or gone) and leaves everything else there alone."""


def write_report(runs: pd.DataFrame, out: Path, fmt: str = "md") -> list[Path]:
    """Write `summary.<fmt>`, `distributions.png` and, per experiment and stage, `curves.png`,
    `confusion.png` and `va_density.png` (best seed) under `out`; return the written paths.
    What an earlier report wrote there and this one does not is removed."""
    out.mkdir(parents=True, exist_ok=True)
    written = _write_report(runs, out, fmt)
    _remove_stale(out, written)
    return written


def _remove_stale(out: Path, written: list[Path]) -> None:
    record = out / WRITTEN
    try:
        before = json.loads(record.read_text()) if record.is_file() else []
    except (OSError, ValueError):
        before = []
    now = sorted(str(path.relative_to(out)) for path in written)
    for name in set(before if isinstance(before, list) else []) - set(now):
        stale = out / name
        if stale.is_file() and out.resolve() in stale.resolve().parents:
            stale.unlink()
            for folder in stale.parents:  # the row folders it leaves empty
                if folder == out or any(folder.iterdir()):
                    break
                folder.rmdir()
    write_json_atomic(record, now)


def _write_report(runs: pd.DataFrame, out: Path, fmt: str) -> list[Path]:
    table_path = out / f"summary.{fmt}"
    table_path.write_text(FORMATS[fmt](summary(runs)))
    written = [table_path, _save(plots.metric_distributions(runs), out / "distributions.png")]
    history = load_history(runs)
    for row, group in runs.groupby("row", sort=False):
        first = group.iloc[0]
        folder = out / row_folder(first["experiment"], first["stage"], first["variant"])
        curves = history[history["row"] == row]
        if not curves.empty:
            written.append(_save(plots.validation_curves(curves, row), folder / "curves.png"))
        seed = best_seed(group, row)
        frame = None if seed is None else load_predictions(group, row, seed)
        if frame is None:
            if seed is not None:
                console.print(
                    f"[yellow]{escape(row)} seed {seed} has no {PREDICTIONS}[/]: "
                    "no confusion matrix or VA density for it"
                )
            continue
        title = f"{row} seed {seed}"
        written.append(_save(plots.confusion_matrix(frame, title), folder / "confusion.png"))
        written.append(_save(plots.va_density(frame, title), folder / "va_density.png"))
    return written


def print_legend(names: list[tuple[str, str]]) -> None:
    """The full settings of the rows whose names show only some of them, under a table."""
    if names:
        console.print("variants whose names show only some of their settings:", highlight=False)
    for row, settings in names:
        console.print(f"  {escape(row)}: {escape(settings)}", highlight=False)


def _compare(runs: pd.DataFrame, args: argparse.Namespace) -> int:
    comparison = compare(runs, *args.compare)
    if args.out is None and args.format is not None:
        print(COMPARISON_FORMATS[args.format](comparison), end="")
        return 0
    console.print(widened(comparison_table(comparison), console.width), crop=False)
    print_legend(comparison_legend(comparison))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        fmt = args.format or "md"
        path = args.out / f"comparison.{fmt}"
        path.write_text(COMPARISON_FORMATS[fmt](comparison))
        console.print(f"[green]✓[/] wrote {escape(str(path))}")
    return 0


def run(args: argparse.Namespace) -> int:
    runs = load_runs(args.runs_dir)
    if args.compare:
        return _compare(runs, args)
    table = summary(runs)
    if args.out is None and args.format is not None:
        print(FORMATS[args.format](table), end="")
        return 0
    title = escape(
        f"{args.runs_dir}: best validation metrics, mean ± std over seeds (Aff-Wild2 val)"
    )
    console.print(widened(rich_table(table, title), console.width), crop=False)
    print_legend(legend(table))
    for run_ in runs[~runs["complete"]].itertuples():
        where = escape(f"{run_.row} seed {run_.seed}")
        console.print(f"[yellow]not averaged[/]: {where}: {run_.status}", highlight=False)
    if args.out is not None:
        written = write_report(runs, args.out, args.format or "md")
        console.print(
            f"[green]✓[/] wrote {plural(len(written), 'file')} to {escape(str(args.out))}"
        )
    return 0
