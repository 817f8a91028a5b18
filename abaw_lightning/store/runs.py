"""The store's folders: one per stage run, ``<runs_dir>/store/<kind>/<key>/``, and the experiments'
views on them, ``<runs_dir>/<experiment>/seed_<s>/``.

A run folder holds ``identity.json`` (its key and the settings hashed into it), ``config.yaml``
(the resolved config of the job that started it), ``wandb_id``, ``checkpoints/{last,best}.ckpt``,
``val_predictions.parquet``, ``features/`` (a CNN run's GRU feature caches) and, written last,
``metrics.json``: a run with it is complete. A view folder holds ``view.json`` (which run each
stage of the experiment uses, by path relative to the view) and, where the file system allows,
one relative symbolic link per stage to its run folder. Every path stored inside a runs folder is
relative, so the folder can be moved or copied.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abaw_lightning.errors import UserError
from abaw_lightning.files import write_json_atomic

STORE = "store"
VIEW = "view.json"
METRICS = "metrics.json"


def read_json(path: Path) -> Any:
    """A JSON file written by the store; an unreadable one is a UserError naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path} ({error}): delete it and rerun") from error


@dataclass(frozen=True)
class RunDir:
    """Where one stage run keeps its artifacts."""

    root: Path

    @property
    def kind(self) -> str:
        return self.root.parent.name

    @property
    def key(self) -> str:
        return self.root.name

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def predictions(self) -> Path:
        return self.root / "val_predictions.parquet"

    @property
    def wandb_id(self) -> Path:
        return self.root / "wandb_id"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def identity(self) -> Path:
        return self.root / "identity.json"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def complete(self) -> bool:
        return self.metrics.is_file()

    @property
    def interrupted(self) -> bool:
        return not self.complete and self.last.is_file()

    @property
    def status(self) -> str:
        """``complete``, ``interrupted`` (a ``last.ckpt`` to resume from) or ``new``."""
        if self.complete:
            return "complete"
        return "interrupted" if self.interrupted else "new"

    def read_metrics(self) -> dict:
        return read_json(self.metrics)

    def best_checkpoint(self) -> Path:
        """The best checkpoint named in ``metrics.json`` (relative to the run folder)."""
        path = self.root / self.read_metrics()["best_checkpoint"]
        if not path.is_file():
            raise UserError(
                f"the checkpoint {path} named in {self.metrics} is missing: delete {self.root} "
                "and rerun to train that stage again."
            )
        return path


def store_dir(runs_dir: str | Path) -> Path:
    return Path(runs_dir) / STORE


def run_dir(runs_dir: str | Path, kind: str, key: str) -> RunDir:
    return RunDir(store_dir(runs_dir) / kind / key)


def store_runs(runs_dir: str | Path) -> list[RunDir]:
    """Every run folder in the store (those with an identity.json), by kind then key."""
    root = store_dir(runs_dir)
    if not root.is_dir():
        return []
    return [RunDir(path.parent) for path in sorted(root.glob(f"*/*/{'identity.json'}"))]


def write_view(
    view_dir: Path,
    experiment: str,
    seed: int,
    overrides: list[str],
    stages: dict[str, tuple[RunDir, str]],
) -> list[Path]:
    """Record which run (and variant key) each stage of an experiment's seed uses, merged into
    an existing view, and link ``<view>/<stage>`` to the run folder where the file system
    supports links. Returns the stage paths where a real folder (the previous layout) is in the
    way of the link."""
    view_dir.mkdir(parents=True, exist_ok=True)
    path = view_dir / VIEW
    view = read_json(path) if path.is_file() else {}
    entries = dict(view.get("stages", {}))
    blocked = []
    for stage, (run, variant) in stages.items():
        entries[stage] = {
            "kind": run.kind,
            "key": run.key,
            "variant": variant,
            "run": os.path.relpath(run.root, view_dir),
        }
        if not _link(view_dir / stage, run.root):
            blocked.append(view_dir / stage)
    write_json_atomic(
        path,
        {"experiment": experiment, "seed": seed, "overrides": overrides, "stages": entries},
    )
    return blocked


def remove_view(view_dir: Path) -> None:
    """Delete a view's seed folder (its view.json and links, never what they point at), and the
    experiment's folder with it when that is left empty."""
    for entry in view_dir.iterdir() if view_dir.is_dir() else []:
        if entry.is_symlink() or entry.name == VIEW:
            entry.unlink()
    with contextlib.suppress(OSError):  # not empty: something else lives there
        view_dir.rmdir()
        view_dir.parent.rmdir()


def _link(link: Path, target: Path) -> bool:
    """A relative symbolic link ``link`` -> ``target`` (replaced when it pointed elsewhere);
    False when a real folder is in the way. Where the file system has no links there is none:
    view.json alone says which run the stage uses."""
    relative = os.path.relpath(target, link.parent)
    if link.is_symlink():
        if os.readlink(link) == relative:
            return True
        link.unlink()
    elif link.exists():
        return False
    with contextlib.suppress(OSError):
        link.symlink_to(relative, target_is_directory=True)
    return True


def read_view(view_dir: Path) -> dict:
    """A view's record, with each stage's run folder resolved relative to the view."""
    view = read_json(view_dir / VIEW)
    for entry in view.get("stages", {}).values():
        entry["dir"] = RunDir(Path(os.path.normpath(view_dir / entry["run"])))
    return view
