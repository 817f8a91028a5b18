"""Reading a runs directory through its views: one row per (experiment, variant, stage, seed),
validation histories, and per-frame validation predictions; where the training data came from
decides the paper column.

A *variant* is what tells the runs of one experiment's stage apart besides the seed (a sweep's
``lam=0.3`` and ``lam=0.9``): runs share a variant when their keys differ only in the seed, and the
variant's label is the settings in which it differs from its siblings, read from the runs'
``identity.json``. A report row is an experiment, a variant and a stage, e.g.
``paper_student_sharing/cnn_student[lam=0.3]``: the row names the fewest settings that tell the
variant from its siblings, its ``settings`` all those in which it differs (`VariantLabels`).

Epochs shown by the report count from 1 (``best_epoch``, the history's ``epoch``); the files keep
Lightning's 0-based index.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from omegaconf import OmegaConf

from abaw_lightning.errors import UserError
from abaw_lightning.schema import METRIC_NAMES
from abaw_lightning.store.lock import lock_holder
from abaw_lightning.store.runs import VIEW, RunDir, read_view

METRICS = METRIC_NAMES
"""Report column -> key in metrics.json's `best` and `history` records."""
PAPER = {
    "teacher CNN, 2 tasks": (0.498, 0.374, 0.407),
    "teacher CNN, 3 tasks": (0.513, 0.438, 0.398),
    "student CNN, no sharing (Eq. 9)": (0.513, 0.472, 0.412),
    "student CNN, sharing (Eq. 10)": (0.525, 0.471, 0.421),
    "teacher CNN+GRU": (0.555, 0.523, 0.543),
    "student CNN+GRU": (0.555, 0.526, 0.551),
}
"""The paper's EXPR score, CCC valence and CCC arousal (METHOD.md section 7, mean of 10 runs)."""
SEED_DIR = re.compile(r"seed_(-?\d+)")
PREDICTIONS = "val_predictions.parquet"
COLUMNS = [
    "row",
    "experiment",
    "variant",
    "settings",
    "stage",
    "seed",
    "kind",
    "key",
    "status",
    "complete",
    "path",
    "data",
    "paper_row",
    *METRICS,
    "best_epoch",
    "epochs",
    "wall_seconds",
]


def _seed_dirs(folder: Path) -> dict[int, Path]:
    dirs = (p for p in folder.iterdir() if p.is_dir() and SEED_DIR.fullmatch(p.name))
    return {int(SEED_DIR.fullmatch(p.name).group(1)): p for p in dirs if (p / VIEW).is_file()}


def find_views(runs_dir: Path) -> list[Path]:
    """Every view folder (``<view>/seed_<s>/`` with a view.json) under ``runs_dir``, which is
    abaw-train's runs_dir, one view's folder in it, or one of a view's seed folders."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"runs folder {runs_dir} does not exist: pass the runs_dir of abaw-train")
    if (runs_dir / VIEW).is_file():
        return [runs_dir]
    own = _seed_dirs(runs_dir)
    if own:
        return [own[seed] for seed in sorted(own)]
    views = [
        seeds[seed]
        for child in sorted(runs_dir.iterdir())
        if child.is_dir() and (seeds := _seed_dirs(child))
        for seed in sorted(seeds)
    ]
    if not views:
        legacy = sorted(runs_dir.glob("*/seed_*/*/metrics.json")) or sorted(
            runs_dir.glob("seed_*/*/metrics.json")
        )
        hint = (
            f"; {legacy[0].parent} and others are runs of the layout before the stage store, "
            "which the report no longer reads: train them again with the same command (the store "
            "keeps them by key from now on)"
            if legacy
            else ""
        )
        raise UserError(
            f"no experiment in {runs_dir}: pass abaw-train's runs_dir, a view in it "
            f"(<runs_dir>/<view>/) or a view's seed folder (<runs_dir>/<view>/seed_<s>/, holding "
            f"view.json){hint}"
        )
    return views


@cache
def data_source(root: str) -> str:
    """Where a prepared folder's data came from: "abaw2021", "synthetic" or "unknown".

    Real ABAW 2021 data: `<root>/manifest.json` (written by `abaw prepare`) names an Aff-Wild2
    source, every source folder exists, and none lies in an `abaw synth` output (a folder with
    `synth.json` at its top). Synthetic: some source lies in one. Anything else is unknown.
    """
    try:
        manifest = json.loads((Path(root) / "manifest.json").read_text())
        sources = [Path(path) for path in manifest["sources"].values() if path]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "unknown"
    if any((source.parent / "synth.json").is_file() for source in sources):
        return "synthetic"
    if "affwild2" in manifest["sources"] and all(source.is_dir() for source in sources):
        return "abaw2021"
    return "unknown"


def paper_row(kind: str, settings: dict) -> str | None:
    """The paper's table row that a run of this kind and these identity settings reproduces."""
    try:
        stage = settings["stage"]
        if kind == "cnn_teacher":
            parts = set(stage["datamodule"]["parts"])
            return {3: "teacher CNN, 3 tasks", 2: "teacher CNN, 2 tasks"}.get(len(parts))
        if kind == "cnn_student":
            shared = stage["module"]["distillation"]["shared_annotations"]
            return "student CNN, sharing (Eq. 10)" if shared else "student CNN, no sharing (Eq. 9)"
    except (KeyError, TypeError):
        return None
    return {"gru_teacher": "teacher CNN+GRU", "gru_student": "student CNN+GRU"}.get(kind)


def _config_root(run: RunDir) -> str | None:
    try:
        config = OmegaConf.to_container(OmegaConf.load(run.config)) if run.config.is_file() else {}
    except (OSError, ValueError, yaml.YAMLError):  # costs only the data and paper columns
        return None
    data = config.get("data") if isinstance(config, dict) else None
    return data.get("root") if isinstance(data, dict) else None


def _identity(run: RunDir) -> dict:
    try:
        return json.loads(run.identity.read_text())
    except (OSError, ValueError):
        return {}


def _run_row(experiment: str, stage: str, seed: int, run: RunDir, variant: str) -> dict:
    identity = _identity(run)
    root = _config_root(run)
    row = {
        "experiment": experiment,
        "stage": stage,
        "seed": seed,
        "kind": run.kind,
        "key": run.key,
        "variant_key": variant,
        "status": "not started",
        "complete": False,
        "path": str(run.root),
        "data": data_source(str(Path(root).resolve())) if root else "unknown",
        "paper_row": paper_row(run.kind, identity.get("settings", {})),
        **dict.fromkeys(METRICS, np.nan),
        "best_epoch": np.nan,
        "epochs": np.nan,
        "wall_seconds": np.nan,
    }
    if run.metrics.is_file():
        try:
            record = json.loads(run.metrics.read_text())
            best = record["best"]
            values = {name: float(best[key]) for name, key in METRICS.items()}
            best_epoch = int(best["epoch"]) + 1  # Lightning's index counts from 0
        except (OSError, ValueError, KeyError, TypeError) as error:
            row["status"] = f"unreadable metrics.json ({error})"
            return row
        row |= values | {"status": "complete", "complete": True, "best_epoch": best_epoch}
        row |= {"epochs": record.get("epochs"), "wall_seconds": record.get("wall_seconds")}
    elif (holder := lock_holder(run.root)) is not None:
        row["status"] = f"running: {holder}"
    elif run.last.is_file():
        row["status"] = "interrupted"
    elif run.root.is_dir():
        row["status"] = "started"
    return row


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings as {"a.b.c": leaf}; seeds are left out (they are not a variant)."""
    if isinstance(node, dict):
        flat = {}
        for key, value in node.items():
            if key != "seed":
                flat |= _flat(value, f"{prefix}{key}.")
        return flat
    return {prefix[:-1]: json.dumps(node, sort_keys=True)}


def _variant_settings(run: RunDir, depth: int = 0) -> dict[str, Any]:
    """A run's identity settings, flattened, with those of the runs it builds on under their
    role (``teacher.``), so a teacher setting tells the students' variants apart too."""
    identity = _identity(run)
    flat = _flat({"data": identity.get("data"), **identity.get("settings", {})})
    for role, upstream in identity.get("builds_on", {}).items():
        if depth < 5:
            other = RunDir(run.root.parent.parent / upstream["kind"] / upstream["key"])
            flat |= {f"{role}.{k}": v for k, v in _variant_settings(other, depth + 1).items()}
    return flat


def _role(path: str) -> tuple[str, str]:
    """``teacher.stage.module.x`` -> (``teacher``, ``stage.module.x``): the roles of the runs a
    setting comes from (`_variant_settings`), and the setting in its own run."""
    parts = path.split(".")
    own = next((i for i, part in enumerate(parts) if part in ("stage", "data")), 0)
    return ".".join(parts[:own]), ".".join(parts[own:])


def _short(path: str) -> str:
    """A setting without the ``stage.module.`` (etc.) every setting has, its roles kept."""
    role, own = _role(path)
    for prefix in ("stage.module.", "stage.datamodule.", "stage.", ""):
        if own.startswith(prefix):
            own = own[len(prefix) :]
            break
    return f"{role}.{own}" if role else own


def _last(path: str) -> str:
    """A setting by its last part, its roles kept: ``teacher.lr``."""
    role, own = _role(path)
    end = own.rsplit(".", 1)[-1]
    return f"{role}.{end}" if role else end


MAX_LABEL = 40
"""Longest variant label shown in a row's name; a longer one is shown by its short name."""
UNSET = "unset"
"""How a label shows a setting that the variant's runs lack and its siblings have."""
UNKNOWN = "unknown: no run of it has an identity.json (not started, or stopped before training)"
"""The settings of a variant none of whose runs got as far as writing its identity."""


def _key_prefixes(variants: list[str], length: int = 8) -> dict[str, str]:
    """Per variant key its first `length` characters, more where two would read the same."""
    while len({variant[:length] for variant in variants}) < len(variants):
        length += 1
    return {variant: variant[:length] for variant in variants}


@dataclass(frozen=True)
class VariantLabels:
    """Per variant key: ``settings``, every setting in which it differs from its siblings, and
    ``names``, what its rows carry: the fewest of those settings that tell it from every sibling
    (``lam=0.3``), or where even they are longer than `MAX_LABEL` (or its settings are unknown)
    ``v`` and the first characters of its key, a name that does not change as variants come."""

    settings: dict[str, str]
    names: dict[str, str]


def variant_labels(representatives: dict[str, RunDir]) -> VariantLabels:
    """The labels of an experiment's stage's variants, from one run of each (its identity): a
    setting is named by its last part (``teacher.lr`` for one of the run it builds on) unless
    two would read the same, one a variant lacks is ``=unset``; a variant with no identity is
    `UNKNOWN` and leaves the others' labels as they would be without it."""
    known = {variant: run for variant, run in representatives.items() if _identity(run)}
    settings = dict.fromkeys(representatives, UNKNOWN if len(representatives) > 1 else "")
    prefixes = _key_prefixes(list(representatives))
    names = {v: f"v{prefixes[v]}" if label else "" for v, label in settings.items()}
    if len(known) < 2:
        return VariantLabels(settings | dict.fromkeys(known, ""), names | dict.fromkeys(known, ""))
    flats = {variant: _variant_settings(run) for variant, run in known.items()}
    paths = sorted({path for flat in flats.values() for path in flat})
    differing = [p for p in paths if len({flat.get(p) for flat in flats.values()}) > 1]
    shown = [_short(p) for p in differing]
    last = [_last(p) for p in differing]
    shown = [end if last.count(end) == 1 else name for name, end in zip(shown, last, strict=True)]
    values = {
        variant: [json.loads(flat[path]) if path in flat else UNSET for path in differing]
        for variant, flat in flats.items()
    }
    for variant, own in values.items():
        parts = [f"{name}={value}" for name, value in zip(shown, own, strict=True)]
        settings[variant] = ",".join(parts) or variant
        name = ",".join(parts[i] for i in _distinguishing(variant, values))
        names[variant] = name if 0 < len(name) <= MAX_LABEL else f"v{prefixes[variant]}"
    return VariantLabels(settings, names)


def _distinguishing(variant: str, values: dict[str, list]) -> list[int]:
    """The fewest settings (by index, greedily: the one telling most of the rest apart first)
    in which ``variant`` differs from each of its siblings."""
    own = values[variant]
    others = [other for key, other in values.items() if key != variant]
    chosen: list[int] = []
    while others:
        counts = [sum(other[i] != own[i] for other in others) for i in range(len(own))]
        best = max(range(len(own)), key=lambda i: counts[i])
        if counts[best] == 0:  # the same settings as a sibling: nothing tells them apart
            break
        chosen.append(best)
        others = [other for other in others if other[best] == own[best]]
    return sorted(chosen)


def _representative(rows: pd.DataFrame) -> RunDir:
    """A run of a variant that has its identity written (one that started), else the first."""
    runs = [RunDir(Path(path)) for path in rows["path"]]
    return next((run for run in runs if run.identity.is_file()), runs[0])


def row_id(experiment: str, stage: str, variant: str) -> str:
    """``experiment/stage`` or ``experiment/stage[variant]``: a row, in tables and --compare."""
    return f"{experiment}/{stage}" + (f"[{variant}]" if variant else "")


def load_runs(runs_dir: str | Path) -> pd.DataFrame:
    """One row per (experiment, variant, stage, seed) found through the views under `runs_dir`:
    status, best validation metrics (NaN unless complete), best epoch (from 1), data source, run
    folder and key; ``variant`` is the name in the row, ``settings`` the variant's full label."""
    records, seen = [], set()
    for view_dir in find_views(Path(runs_dir)):
        view = read_view(view_dir)
        experiment, seed = view.get("experiment", view_dir.parent.name), int(view.get("seed", 0))
        for stage, entry in view.get("stages", {}).items():
            run = entry["dir"]
            if (experiment, stage, run.key) in seen:  # the same run through two views
                continue
            seen.add((experiment, stage, run.key))
            variant = entry.get("variant") or _identity(run).get("variant", run.key)
            records.append(_run_row(experiment, stage, seed, run, variant))
    frame = pd.DataFrame(records, columns=[*COLUMNS, "variant_key"])
    frame["variant"], frame["settings"] = "", ""
    for (_experiment, _stage), group in frame.groupby(["experiment", "stage"], sort=False):
        representatives = {
            variant: _representative(rows)
            for variant, rows in group.groupby("variant_key", sort=False)
        }
        labels = variant_labels(representatives)
        frame.loc[group.index, "settings"] = group["variant_key"].map(labels.settings)
        frame.loc[group.index, "variant"] = group["variant_key"].map(labels.names)
    frame["row"] = [
        row_id(e, s, v)
        for e, s, v in zip(frame["experiment"], frame["stage"], frame["variant"], strict=True)
    ]
    frame = frame.drop(columns="variant_key")[COLUMNS]
    return frame.astype({"seed": "int64", "complete": "bool"}).sort_values(
        ["experiment", "stage", "settings", "seed"], key=_order, ignore_index=True
    )


STAGE_ORDER = (
    "cnn_teacher_2task",
    "cnn_teacher",
    "cnn_student_no_sharing",
    "cnn_student",
    "gru_teacher",
    "gru_student",
)


def _order(column: pd.Series) -> pd.Series:
    """Stages in pipeline order (known ones first), everything else as it sorts."""
    if column.name != "stage":
        return column
    rank = {stage: f"{index:02d}" for index, stage in enumerate(STAGE_ORDER)}
    return column.map(lambda stage: rank.get(stage, "99") + stage)


def load_history(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch validation metrics of the complete runs (row, experiment, stage, seed, epoch,
    ...), epochs counted from 1 (metrics.json's history holds Lightning's 0-based index)."""
    records = []
    for run in runs[runs["complete"]].itertuples():
        history = json.loads((Path(run.path) / "metrics.json").read_text()).get("history", [])
        for entry in history:
            values = {name: entry.get(key, np.nan) for name, key in METRICS.items()}
            key = {
                "row": run.row,
                "experiment": run.experiment,
                "stage": run.stage,
                "seed": run.seed,
            }
            records.append(key | {"epoch": entry["epoch"] + 1} | values)
    return pd.DataFrame(records, columns=["row", "experiment", "stage", "seed", "epoch", *METRICS])


def best_seed(runs: pd.DataFrame, row: str) -> int | None:
    """The complete seed of a report row with the highest val/total (the lowest on ties)."""
    done = runs[(runs["row"] == row) & runs["complete"]]
    if done.empty:
        return None
    return int(done.sort_values(["total", "seed"], ascending=[False, True]).iloc[0]["seed"])


def load_predictions(runs: pd.DataFrame, row: str, seed: int) -> pd.DataFrame | None:
    """The run's `val_predictions.parquet` (one row per scored validation frame), or None when
    it has none."""
    match = runs[(runs["row"] == row) & (runs["seed"] == seed)]
    if match.empty:
        raise UserError(f"no run of {row} with seed {seed}")
    path = Path(match.iloc[0]["path"]) / PREDICTIONS
    if not path.is_file():
        return None
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path} ({error}): delete it and rerun the stage") from error
