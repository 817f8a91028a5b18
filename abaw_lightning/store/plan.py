"""The plan of a job (or a whole sweep): which stage runs it needs, by key, and what each one takes:
train (new), resume (interrupted), or reuse (complete), with an estimate from finished runs.

The stage graph is data: each stage's config names what it builds on (``builds_on: {teacher:
cnn_teacher, features: cnn_student}``); a stage's key includes the keys of those runs, so changing a
teacher setting changes every run that depends on it, and only those.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.markup import escape

from abaw_lightning.configs import check_job
from abaw_lightning.data.loading.feature_cache import MANIFEST, View, default_views
from abaw_lightning.data.loading.transforms import default_resize
from abaw_lightning.errors import UserError, print_user_error
from abaw_lightning.store.identity import data_identity, digest, stage_kind, stage_settings
from abaw_lightning.store.lock import lock_holder
from abaw_lightning.store.runs import RunDir, read_json, run_dir, store_runs
from abaw_lightning.text import plural

ACTIONS = {"new": "train", "interrupted": "resume", "complete": "reuse"}
"""Run status -> what the job does with it."""


@dataclass
class PlannedRun:
    """One stage run a job needs: its stage name in the config, kind, key and folder."""

    name: str
    kind: str
    key: str
    variant: str
    """The key without the seed: the runs of one variant over seeds share it."""
    seed: int
    data: str
    settings: dict
    builds_on: dict[str, PlannedRun]
    dir: RunDir
    in_pipeline: bool = True
    features: Path | None = None
    """The feature cache this run reads (in its source CNN run's folder), when it reads one."""

    @property
    def action(self) -> str:
        return ACTIONS[self.dir.status]

    def identity(self) -> dict:
        """What `identity.json` records: the key and everything hashed into it."""
        return {
            "key": self.key,
            "variant": self.variant,
            "kind": self.kind,
            "seed": self.seed,
            "data": self.data,
            "settings": self.settings,
            "builds_on": {
                role: {"kind": run.kind, "key": run.key, "variant": run.variant}
                for role, run in self.builds_on.items()
            },
        }


@dataclass
class Plan:
    """The runs of one job, pipeline stages in order, with what each needs."""

    experiment: str
    seed: int
    runs: dict[str, PlannedRun]
    """By stage name, each after the runs it builds on (`make_plan` plans those first)."""
    order: list[str]
    estimates: dict[str, float] = field(default_factory=dict)
    """Seconds left to train, per run key, where finished runs of its variant or its own
    progress give one (see `estimates`)."""

    @property
    def steps(self) -> list[PlannedRun]:
        return [self.runs[name] for name in self.order]


def stages_to_run(cfg: DictConfig) -> list[str]:
    """The experiment's stages in order, or just ``cfg.stage``; unknown names are user errors."""
    names = [cfg.stage] if cfg.get("stage") is not None else list(cfg.pipeline)
    for name in names:
        if name not in cfg.stages:
            raise UserError(f"unknown stage {name!r}: choose from {list(cfg.stages)}")
    return names


def _without_seed(cfg: DictConfig) -> DictConfig:
    copy = cfg.copy()
    with open_dict(copy):
        copy.seed = "any"
    return copy


def feature_views(stage: DictConfig) -> tuple[int, list[View]]:
    """The resize and the views of the frames whose features a GRU stage reads."""
    datamodule, features = stage.datamodule, stage.features
    resize = datamodule.resize or default_resize(datamodule.image_size)
    return resize, default_views(datamodule.image_size, resize, features.offsets, features.flip)


def _feature_folder(stage: DictConfig, source: PlannedRun | None) -> Path | None:
    """Where the source CNN run keeps the features of this stage's views: one cache per image
    size, resize and view layout, shared by every stage that reads the same."""
    if source is None or stage.features.mode != "cache":
        return None
    resize, views = feature_views(stage)
    layout = [stage.datamodule.image_size, resize, [[v.top, v.left, v.flip] for v in views]]
    return source.dir.features / digest(layout, length=8)


def make_plan(cfg: DictConfig) -> Plan:
    """Every run the job needs (its stages and what they build on), keyed, with estimates."""
    check_job(cfg)
    names = stages_to_run(cfg)
    data = data_identity(cfg.data.root)
    seedless = _without_seed(cfg)
    planned: dict[str, PlannedRun] = {}

    def plan(name: str, chain: tuple[str, ...]) -> PlannedRun:
        if name in planned:
            return planned[name]
        if name in chain:
            raise UserError(f"the stages build on each other in a circle: {' -> '.join(chain)}")
        if name not in cfg.stages:
            raise UserError(
                f"stage {chain[-1]} builds on {name!r}, which has no settings under `stages`"
            )
        stage = cfg.stages[name]
        builds_on = stage.get("builds_on")
        builds_on = OmegaConf.to_container(builds_on, resolve=True) if builds_on else {}
        upstream = {role: plan(other, (*chain, name)) for role, other in builds_on.items()}
        settings = stage_settings(cfg, name)
        key = digest(
            {
                "data": data,
                "seed": cfg.seed,
                "settings": settings,
                "builds_on": {role: run.key for role, run in upstream.items()},
            }
        )
        variant = digest(
            {
                "data": data,
                "settings": stage_settings(seedless, name),
                "builds_on": {role: run.variant for role, run in upstream.items()},
            }
        )
        kind = stage_kind(stage.module._target_)
        planned[name] = PlannedRun(
            name=name,
            kind=kind,
            key=key,
            variant=variant,
            seed=cfg.seed,
            data=data,
            settings=settings,
            builds_on=upstream,
            dir=run_dir(cfg.runs_dir, kind, key),
            in_pipeline=name in names,
            features=_feature_folder(stage, upstream.get("features")),
        )
        return planned[name]

    for name in names:
        plan(name, ())
    for position, name in enumerate(names):
        for role, run in planned[name].builds_on.items():
            if run.name in names and names.index(run.name) > position:
                raise UserError(
                    f"pipeline: {name} builds on {run.name} ({role}), so {run.name} must come "
                    f"before it, got {names}"
                )
    result = Plan(cfg.experiment_name, cfg.seed, planned, names)
    result.estimates = estimates(cfg.runs_dir, planned.values())
    return result


def finished_runs(runs_dir: str | Path) -> dict[str, list[tuple[float, int]]]:
    """(wall seconds, epochs) of the store's complete runs, by variant (their key without the
    seed: the same stage, settings, data and upstream variants)."""
    finished: dict[str, list[tuple[float, int]]] = {}
    for run in store_runs(runs_dir):
        if not run.complete:
            continue
        try:
            identity, metrics = read_json(run.identity), run.read_metrics()
            record = (float(metrics["wall_seconds"]), int(metrics["epochs"]))
        except (UserError, KeyError, TypeError, ValueError):
            continue
        finished.setdefault(identity.get("variant"), []).append(record)
    return finished


def _max_epochs(run: PlannedRun) -> int | None:
    value = run.settings.get("stage", {}).get("max_epochs")
    return value if isinstance(value, int) else None


def estimates(runs_dir: str | Path, runs: Iterable[PlannedRun]) -> dict[str, float]:
    """Seconds left per run to train or resume, only where there is something to go on: a new
    run takes the median of the finished runs of its variant (other seeds); an interrupted one
    continues at its own pace per epoch for the epochs those runs took (``max_epochs`` when
    none has finished: an upper bound, early stopping may end it sooner)."""
    finished = finished_runs(runs_dir)
    result = {}
    for run in runs:
        siblings = finished.get(run.variant, [])
        if run.action == "train" and siblings:
            result[run.key] = statistics.median(seconds for seconds, _ in siblings)
        elif run.action == "resume":
            done = progress(run.dir)
            epochs_done = done.get("epoch", -1) + 1
            total = (
                statistics.median(epochs for _, epochs in siblings)
                if siblings
                else _max_epochs(run)
            )
            if epochs_done > 0 and total is not None:
                pace = done.get("wall_seconds", 0.0) / epochs_done
                result[run.key] = pace * max(0.0, total - epochs_done)
    return result


def progress(run: RunDir) -> dict:
    """The last validated epoch of a run (``progress.json``, written after every validation)."""
    path = run.root / "progress.json"
    try:
        return read_json(path) if path.is_file() else {}
    except UserError:
        return {}


def duration(seconds: float) -> str:
    """1 h 05 min / 12 min / 40 s."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{round(seconds / 60)} min"
    return f"{math.ceil(seconds)} s"


def summary_line(runs: list[PlannedRun], estimates_: dict[str, float], noun: str = "run") -> str:
    """ "3 runs: 1 to train, 1 to resume, 1 to reuse; about 12 min" for distinct runs."""
    counts = {action: 0 for action in ("train", "resume", "reuse")}
    for run in runs:
        counts[run.action] += 1
    text = f"{plural(len(runs), noun)}: " + ", ".join(
        f"{n} to {action}" for action, n in counts.items()
    )
    pending = [run for run in runs if run.action != "reuse"]
    known = [estimates_[run.key] for run in pending if run.key in estimates_]
    if pending and known:
        unknown = len(pending) - len(known)
        text += f"; about {duration(sum(known))}"
        text += f" + {unknown} without an estimate" if unknown else ""
    return text


def print_plan(plan: Plan, console: Console, view: str | None = None) -> None:
    """One line for the job (its view, e.g. ``demo+lam=0.3``, and seed), one per run: action,
    stage, run folder, estimate or result, and what else it does first or waits for."""
    steps = plan.steps
    name = escape(view or plan.experiment)
    console.print(
        f"[bold]plan[/] {name} seed {plan.seed}: {summary_line(steps, plan.estimates)}",
        highlight=False,
    )
    extracting: set[Path] = set()
    for run in steps:
        console.print(f"  {_run_line(run, plan.estimates, extracting)}", highlight=False)
    for run in plan.runs.values():
        if not run.in_pipeline and run.action != "reuse":
            console.print(
                f"  [yellow]needs[/] {run.name} (store/{run.kind}/{run.key}), not complete",
                highlight=False,
            )


def _run_line(run: PlannedRun, estimates_: dict[str, float], extracting: set[Path]) -> str:
    """A run's plan line; ``extracting``: the feature caches an earlier line extracts (a cache
    shared by the GRU teacher and student is extracted once, before the first)."""
    colour = {"train": "cyan", "resume": "yellow", "reuse": "green"}[run.action]
    where = f"store/{run.kind}/{run.key}"
    if run.action == "reuse":
        detail = ""
        with contextlib.suppress(UserError, KeyError, TypeError):  # unreadable: no figure shown
            detail = f"best val/total {run.dir.read_metrics()['best']['val/total']:.4f}"
    else:
        done = progress(run.dir)
        detail = f"from epoch {done['epoch'] + 1}" if run.action == "resume" and done else ""
        extras = [detail]
        if run.key in estimates_:
            extras.append(f"~{duration(estimates_[run.key])}")
        cache = run.features
        if cache is not None and cache not in extracting and not (cache / MANIFEST).is_file():
            extras.append(f"extracts {run.builds_on['features'].name}'s features first")
            extracting.add(cache)
        holder = lock_holder(run.dir.root)
        if holder is not None:
            extras.append(f"being trained now by {escape(holder)}: the job waits for it")
        detail = ", ".join(filter(None, extras))
    return f"[{colour}]{run.action:6}[/] {run.name:24} {where}  {detail}".rstrip()


def distinct_runs(plans: list[Plan]) -> list[PlannedRun]:
    """The runs of several jobs' pipelines, each key once (jobs share teachers, caches ...)."""
    runs: dict[str, PlannedRun] = {}
    for plan in plans:
        for run in plan.steps:
            runs.setdefault(run.key, run)
    return list(runs.values())


def print_sweep_plan(plans: list[Plan], console: Console) -> None:
    """The plan of a whole sweep: distinct runs by kind and action, with the estimate."""
    runs = distinct_runs(plans)
    estimates_ = {key: value for plan in plans for key, value in plan.estimates.items()}
    slots = sum(len(plan.steps) for plan in plans)
    console.print(
        f"[bold]{'plan of the sweep' if len(plans) > 1 else 'plan'}[/]: "
        f"{plural(len(plans), 'job')}, {plural(slots, 'stage')}, "
        + summary_line(runs, estimates_, noun="distinct run"),
        highlight=False,
    )
    for kind in dict.fromkeys(run.kind for run in runs):
        of_kind = [run for run in runs if run.kind == kind]
        console.print(f"  {kind:14} {summary_line(of_kind, estimates_)}", highlight=False)


class PrintSweepPlan(Callback):
    """Hydra callback: before a multirun starts, print the plan of all its jobs; a job that
    cannot run (a mistyped setting, no prepared data) stops the sweep before any job starts."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from abaw_lightning.configs import compose_job, sweep_jobs

        console = Console(soft_wrap=True)
        try:
            configs = [compose_job(job) for job in sweep_jobs(list(config.hydra.overrides.task))]
            for cfg in configs:  # every job's settings before any job's data
                check_job(cfg)
            plans = [make_plan(cfg) for cfg in configs]
        except UserError as error:  # a job that cannot run: stop before the first one starts
            print_user_error(error)
            sys.exit(2)
        print_sweep_plan(plans, console)
