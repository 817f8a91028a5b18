"""The store's disk use per stage kind, dropping feature caches nobody needs any more, and
pruning the runs that were never finished.

A CNN run's GRU feature caches (``features/``; 25 GB per seed on the real data) are needed only
while a GRU run that reads them is unfinished: once every GRU run built on a CNN run is complete,
its caches can go. A dropped cache is extracted again if a new GRU run needs it.

An unfinished run stays in the store when its settings change (it resumes if they come back);
pruning deletes those no process is training, and the views left pointing at nothing.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from abaw_lightning.errors import UserError
from abaw_lightning.store.lock import lock_holder, lock_if_free
from abaw_lightning.store.runs import VIEW, RunDir, read_json, read_view, store_runs

CATEGORIES = ("checkpoints", "features", "logs", "other")


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (links are not followed)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def _part(name: str) -> str:
    if name == "checkpoints" or name == "features":
        return name
    return "logs" if name in ("wandb", "csv") else "other"


def disk_use(runs_dir: str | Path) -> dict[str, dict[str, int]]:
    """Per stage kind: runs, complete runs, and bytes in checkpoints, features, logs, other."""
    usage: dict[str, dict[str, int]] = {}
    for run in store_runs(runs_dir):
        row = usage.setdefault(run.kind, {"runs": 0, "complete": 0, **dict.fromkeys(CATEGORIES, 0)})
        row["runs"] += 1
        row["complete"] += run.complete
        for entry in run.root.iterdir():
            size = folder_bytes(entry) if entry.is_dir() else entry.stat().st_size
            row[_part(entry.name)] += size
    return usage


@dataclass(frozen=True)
class Droppable:
    """A CNN run's feature caches and the complete GRU runs that were built on them."""

    run: RunDir
    bytes: int
    readers: list[RunDir]


def droppable_caches(runs_dir: str | Path) -> list[Droppable]:
    """Runs whose feature caches every reader has finished with (and that have readers)."""
    runs = store_runs(runs_dir)
    readers: dict[str, list[RunDir]] = {}
    for run in runs:
        try:
            source = read_json(run.identity).get("builds_on", {}).get("features")
        except UserError:
            continue
        if source:
            readers.setdefault(source["key"], []).append(run)
    found = []
    for run in runs:
        if not run.features.is_dir() or not readers.get(run.key):
            continue
        if all(reader.complete for reader in readers[run.key]):
            found.append(Droppable(run, folder_bytes(run.features), readers[run.key]))
    return found


def drop(droppable: Droppable) -> None:
    shutil.rmtree(droppable.run.features)


def unfinished_runs(runs_dir: str | Path) -> list[tuple[RunDir, int, str | None]]:
    """The store's unfinished runs, with their bytes and the process training each now, if one
    is (those are not to be pruned)."""
    return [
        (run, folder_bytes(run.root), lock_holder(run.root))
        for run in store_runs(runs_dir)
        if not run.complete
    ]


def orphaned_views(runs_dir: str | Path, removed: set[Path]) -> list[Path]:
    """The view seed folders whose every stage's run is gone or in ``removed`` (resolved)."""
    found = []
    for path in sorted(Path(runs_dir).glob(f"*/seed_*/{VIEW}")):
        try:
            stages = read_view(path.parent).get("stages", {})
        except UserError:
            continue
        runs = [entry["dir"] for entry in stages.values()]
        if all(run.root.resolve() in removed or not run.identity.is_file() for run in runs):
            found.append(path.parent)
    return found


def prune(run: RunDir) -> bool:
    """Delete an unfinished run's folder while holding its lock; False (and nothing deleted)
    when a process holds it or it was completed meanwhile."""
    with lock_if_free(run.root) as free:
        if not free or run.complete:
            return False
        shutil.rmtree(run.root)
        return True
