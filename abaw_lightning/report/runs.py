"""Reading a runs directory: one row per (experiment, stage, seed), validation histories, and
per-frame validation predictions; where the training data came from decides the paper column."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from omegaconf import OmegaConf

from abaw_lightning.errors import UserError

STAGE_ORDER = ("cnn_teacher", "cnn_student", "gru_teacher", "gru_student")
METRICS = {
    "expr_score": "val/expr_score",
    "expr_f1": "val/expr_f1",
    "expr_acc": "val/expr_acc",
    "ccc_v": "val/ccc_v",
    "ccc_a": "val/ccc_a",
    "total": "val/total",
}
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


def _seed_dirs(folder: Path) -> dict[int, Path]:
    dirs = (p for p in folder.iterdir() if p.is_dir() and SEED_DIR.fullmatch(p.name))
    return {int(SEED_DIR.fullmatch(p.name).group(1)): p for p in dirs}


def find_experiments(runs_dir: Path) -> dict[str, Path]:
    """Experiment folders (those holding `seed_<s>` folders): `runs_dir` itself or its children."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"runs folder {runs_dir} does not exist: pass the runs_dir of abaw-train")
    if _seed_dirs(runs_dir):
        return {runs_dir.resolve().name: runs_dir}
    found = {p.name: p for p in sorted(runs_dir.iterdir()) if p.is_dir() and _seed_dirs(p)}
    if not found:
        raise UserError(
            f"no experiment in {runs_dir}: expected <runs_dir>/<experiment>/seed_<s>/<stage>/ "
            "folders as abaw-train writes them"
        )
    return found


def _is_stage(folder: Path) -> bool:
    return folder.is_dir() and any(
        (folder / name).exists() for name in ("metrics.json", "config.yaml", "checkpoints")
    )


def _stage_key(stage: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


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


def paper_row(stage: str, config: dict) -> str | None:
    """The paper's table row that a stage with this resolved config reproduces."""
    try:
        if stage == "cnn_teacher":
            parts = set(config["data"]["parts"])
            return {3: "teacher CNN, 3 tasks", 2: "teacher CNN, 2 tasks"}.get(len(parts))
        if stage == "cnn_student":
            shared = config["stages"]["cnn_student"]["module"]["shared_annotations"]
            return "student CNN, sharing (Eq. 10)" if shared else "student CNN, no sharing (Eq. 9)"
    except (KeyError, TypeError):
        return None
    return {"gru_teacher": "teacher CNN+GRU", "gru_student": "student CNN+GRU"}.get(stage)


def _config(stage_dir: Path) -> dict:
    path = stage_dir / "config.yaml"
    try:
        return OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else {}
    except (OSError, ValueError, yaml.YAMLError):  # costs only the data and paper columns
        return {}


def _stage_row(experiment: str, stage: str, seed: int, stage_dir: Path) -> dict:
    config = _config(stage_dir)
    root = config.get("data", {}).get("root") if isinstance(config.get("data"), dict) else None
    row = {
        "experiment": experiment,
        "stage": stage,
        "seed": seed,
        "status": "not started",
        "complete": False,
        "path": str(stage_dir),
        "data": data_source(str(Path(root).resolve())) if root else "unknown",
        "paper_row": paper_row(stage, config),
        **dict.fromkeys(METRICS, np.nan),
        "best_epoch": np.nan,
        "epochs": np.nan,
        "wall_seconds": np.nan,
    }
    metrics = stage_dir / "metrics.json"
    if metrics.is_file():
        try:
            record = json.loads(metrics.read_text())
            best = record["best"]
            values = {name: float(best[key]) for name, key in METRICS.items()}
        except (OSError, ValueError, KeyError, TypeError) as error:
            row["status"] = f"unreadable metrics.json ({error})"
            return row
        row |= values | {"status": "complete", "complete": True, "best_epoch": best["epoch"]}
        row |= {"epochs": record.get("epochs"), "wall_seconds": record.get("wall_seconds")}
    elif (stage_dir / "checkpoints" / "last.ckpt").is_file():
        row["status"] = "interrupted"
    elif stage_dir.is_dir():
        row["status"] = "started"
    return row


def load_runs(runs_dir: str | Path) -> pd.DataFrame:
    """One row per (experiment, stage, seed) found under `runs_dir` (a runs folder or one
    experiment's folder): status, best validation metrics (NaN unless complete), data source."""
    rows = []
    for experiment, folder in find_experiments(Path(runs_dir)).items():
        seeds = _seed_dirs(folder)
        stages = {p.name for seed_dir in seeds.values() for p in seed_dir.iterdir() if _is_stage(p)}
        for stage in sorted(stages, key=_stage_key):
            for seed in sorted(seeds):
                rows.append(_stage_row(experiment, stage, seed, seeds[seed] / stage))
    columns = ["experiment", "stage", "seed", "status", "complete", "path", "data", "paper_row"]
    frame = pd.DataFrame(rows, columns=[*columns, *METRICS, "best_epoch", "epochs", "wall_seconds"])
    return frame.astype({"seed": "int64", "complete": "bool"})


def load_history(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch validation metrics of the complete runs (experiment, stage, seed, epoch, ...)."""
    records = []
    for run in runs[runs["complete"]].itertuples():
        history = json.loads((Path(run.path) / "metrics.json").read_text()).get("history", [])
        for entry in history:
            values = {name: entry.get(key, np.nan) for name, key in METRICS.items()}
            key = {"experiment": run.experiment, "stage": run.stage, "seed": run.seed}
            records.append(key | {"epoch": entry["epoch"]} | values)
    return pd.DataFrame(records, columns=["experiment", "stage", "seed", "epoch", *METRICS])


def best_seed(runs: pd.DataFrame, experiment: str, stage: str) -> int | None:
    """The complete seed with the highest val/total (the lowest seed on ties), if any."""
    done = runs[(runs["experiment"] == experiment) & (runs["stage"] == stage) & runs["complete"]]
    if done.empty:
        return None
    return int(done.sort_values(["total", "seed"], ascending=[False, True]).iloc[0]["seed"])


def load_predictions(
    runs: pd.DataFrame, experiment: str, stage: str, seed: int
) -> pd.DataFrame | None:
    """The stage's `val_predictions.parquet` (one row per scored validation frame), or None when
    the run has none (a stage finished before predictions were saved)."""
    match = runs[(runs["experiment"] == experiment) & (runs["stage"] == stage)]
    match = match[match["seed"] == seed]
    if match.empty:
        raise UserError(f"no run of {experiment}/{stage} with seed {seed}")
    path = Path(match.iloc[0]["path"]) / PREDICTIONS
    if not path.is_file():
        return None
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path} ({error}): delete it and rerun the stage") from error
