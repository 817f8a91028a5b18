"""`abaw runs du RUNS_DIR`: the store's disk use per stage kind; `abaw runs drop-features
RUNS_DIR`: delete the GRU feature caches whose GRU runs are all complete (rebuilt if needed);
`abaw runs prune RUNS_DIR`: delete the unfinished runs no process is training, and their views."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from abaw_lightning.errors import UserError
from abaw_lightning.store.disk import (
    CATEGORIES,
    disk_use,
    drop,
    droppable_caches,
    orphaned_views,
    prune,
    unfinished_runs,
)
from abaw_lightning.store.plan import progress
from abaw_lightning.store.runs import remove_view, store_dir
from abaw_lightning.text import plural

console = Console(width=None if sys.stdout.isatty() else 160)
"""Piped or logged output keeps the whole table instead of rich's 80-column default."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    du = actions.add_parser("du", help="disk use of the store per stage kind")
    du.add_argument(
        "runs_dir", type=Path, nargs="?", default=Path("runs"), help="abaw-train's runs_dir (runs)"
    )
    features = actions.add_parser(
        "drop-features", help="delete feature caches whose GRU runs are all complete"
    )
    features.add_argument(
        "runs_dir", type=Path, nargs="?", default=Path("runs"), help="abaw-train's runs_dir (runs)"
    )
    features.add_argument("--dry-run", action="store_true", help="list them, delete nothing")
    prune_parser = actions.add_parser(
        "prune",
        help="delete unfinished runs that no process is training (a run left behind when its "
        "settings changed; it would resume if they came back), and views left with no run",
    )
    prune_parser.add_argument(
        "runs_dir", type=Path, nargs="?", default=Path("runs"), help="abaw-train's runs_dir (runs)"
    )
    prune_parser.add_argument("--dry-run", action="store_true", help="list them, delete nothing")


def size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _check(runs_dir: Path) -> None:
    if not store_dir(runs_dir).is_dir():
        raise UserError(f"no stage store in {runs_dir} ({store_dir(runs_dir)} is missing)")


def run(args: argparse.Namespace) -> int:
    _check(args.runs_dir)
    if args.action == "du":
        usage = disk_use(args.runs_dir)
        table = Table(title=f"{store_dir(args.runs_dir)}: disk use per stage kind")
        for column in ("kind", "runs", "complete", *CATEGORIES, "total"):
            table.add_column(column, justify="left" if column == "kind" else "right")
        totals = dict.fromkeys(CATEGORIES, 0)
        for kind, row in usage.items():
            cells = [size(row[part]) for part in CATEGORIES]
            table.add_row(
                kind,
                str(row["runs"]),
                str(row["complete"]),
                *cells,
                size(sum(row[part] for part in CATEGORIES)),
            )
            totals = {part: totals[part] + row[part] for part in CATEGORIES}
        table.add_row(
            "all", "", "", *map(size, totals.values()), size(sum(totals.values())), style="bold"
        )
        console.print(table)
        return 0
    if args.action == "prune":
        return _prune(args.runs_dir, args.dry_run)
    found = droppable_caches(args.runs_dir)
    for item in found:
        verb = "would drop" if args.dry_run else "dropped"
        if not args.dry_run:
            drop(item)
        console.print(
            f"{verb} {item.run.features} ({size(item.bytes)}): read by "
            f"{plural(len(item.readers), 'GRU run')}, all complete",
            highlight=False,
        )
    freed = sum(item.bytes for item in found)
    console.print(f"{'would free' if args.dry_run else 'freed'} {size(freed)}")
    return 0


def _prune(runs_dir: Path, dry_run: bool) -> int:
    removed, freed = set(), 0
    for run, count, holder in unfinished_runs(runs_dir):
        if holder is not None:
            console.print(f"kept {run.root}: being trained now by {holder}", highlight=False)
            continue
        done = progress(run)
        state = "interrupted" if run.interrupted else "started, no checkpoint"
        state += f", after epoch {done['epoch'] + 1}" if done else ", no epoch validated"
        if not dry_run and not prune(run):
            console.print(f"kept {run.root}: a process is training it now", highlight=False)
            continue
        removed.add(run.root.resolve())
        freed += count
        verb = "would delete" if dry_run else "deleted"
        console.print(f"{verb} {run.root} ({state}, {size(count)})", highlight=False)
    for view in orphaned_views(runs_dir, removed):
        if not dry_run:
            remove_view(view)
        verb = "would delete" if dry_run else "deleted"
        console.print(f"{verb} the view {view}: none of its runs is left", highlight=False)
    console.print(f"{'would free' if dry_run else 'freed'} {size(freed)}", highlight=False)
    return 0
