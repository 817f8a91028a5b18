"""The per-seed pipeline on the stage store: plan the job's runs, then train, resume or reuse each.

A stage run lives once in ``<runs_dir>/store/<kind>/<key>/`` (see `abaw_lightning.store`); the
experiment's view ``<runs_dir>/<experiment>/seed_<s>/`` says which runs it uses. Everything a run
is built from comes from the config by ``_target_``: the stage's datamodule and LightningModule
(``stages.<name>.datamodule`` / ``.module``), the trainer, the callbacks and the logger. This module
only orders the stages, skips complete runs, resumes interrupted ones and records results.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.callbacks import ProgressBar as ProgressBarBase
from pytorch_lightning.utilities.exceptions import SIGTERMException
from rich.console import Console
from rich.markup import escape
from torch import nn

from abaw_lightning.configs import swept_keys
from abaw_lightning.data.loading.feature_cache import FeatureCache
from abaw_lightning.errors import UserError
from abaw_lightning.files import write_json_atomic
from abaw_lightning.hardware import check_trainer_settings
from abaw_lightning.models.checkpoints import read_checkpoint
from abaw_lightning.stages.features import ensure_features
from abaw_lightning.stages.predictions import predict_validation, write_predictions
from abaw_lightning.store.lock import discard_unstarted, run_lock
from abaw_lightning.store.plan import Plan, PlannedRun, feature_views, make_plan, print_plan
from abaw_lightning.store.runs import RunDir, remove_view, write_view
from abaw_lightning.store.views import view_name
from abaw_lightning.training.callbacks import SaveOnInterrupt, ValidationHistory
from abaw_lightning.training.checkpoint_io import remove_temporary_files
from abaw_lightning.training.resume import resume_checkpoint

console = Console(soft_wrap=True)
MONITOR = "val/total"
FEATURE_TABLES = ("train_expr", "train_va", "val_expr", "val_va")
"""The Aff-Wild2 tables whose frames the GRU stages read."""


def job_overrides() -> list[str]:
    """The command line's overrides of this job (empty outside a Hydra application)."""
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def job_sweep() -> frozenset[str]:
    """The keys this job's multirun sweeps, from the command line that launched it where the
    job runs in that process (Hydra's basic launcher); empty where it is not known."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return frozenset()
    return swept_keys(sys.argv[1:])


def run_pipeline(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, dict]:
    """Plan the job, record its view, then run (or resume, or reuse) every stage for ``cfg.seed``;
    return each stage's metrics (none with ``dry_run``: it prints the plan and writes nothing).
    ``overrides`` name the view (default: the Hydra command line's)."""
    try:
        check_trainer_settings(OmegaConf.to_container(cfg.trainer, resolve=True))
    except UserError as error:
        if not cfg.get("dry_run"):
            raise
        _warn(f"on this machine the job would stop here: {error}")
    plan = make_plan(cfg)
    overrides = job_overrides() if overrides is None else overrides
    name = view_name(cfg.experiment_name, overrides, job_sweep())
    print_plan(plan, console, name)
    if cfg.get("dry_run"):
        return {}
    _require_upstream(plan, cfg.get("stage"))
    view = Path(cfg.runs_dir) / name / f"seed_{cfg.seed}"
    new_view = not view.exists()
    stages = {run.name: (run.dir, run.variant) for run in plan.steps}
    blocked = write_view(view, cfg.experiment_name, cfg.seed, overrides, stages)
    for path in blocked:
        console.print(
            f"[yellow]{path} is a folder of the previous runs layout[/]: it is left as it is and "
            "not reused; view.json beside it names the run this stage uses.",
            highlight=False,
        )
    try:
        return {run.name: run_stage(cfg, run, view.parent.name) for run in plan.steps}
    except BaseException:
        if new_view and not any(run.dir.identity.is_file() for run in plan.steps):
            remove_view(view)  # the job stopped before any of its runs started: no trace
        raise


def _require_upstream(plan: Plan, stage: str | None) -> None:
    """Refuse, before anything trains, a job that needs runs outside its pipeline that are not
    complete, naming all of them in the order to run them."""
    missing = {
        run.name for run in plan.runs.values() if not run.in_pipeline and not run.dir.complete
    }
    if not missing:
        return
    order = [name for name in plan.runs if name in missing]  # each after what it builds on
    if not stage:
        how = f"the same command with them added to the pipeline, pipeline=[{','.join(order)},...]"
    elif len(order) == 1:
        how = f"the same command with stage={order[0]} in place of stage={stage}"
    else:
        how = f"the same command with pipeline=[{','.join(order)}] in place of stage={stage}"
    raise UserError(
        f"{', '.join(plan.order)} builds on {', '.join(order)}, not complete for seed "
        f"{plan.seed}: run {'them' if len(order) > 1 else 'it'} first, {how}"
    )


def _build(node: DictConfig, what: str, **kwargs: Any) -> Any:
    """``instantiate`` with config mistakes (an unknown key, a wrong target) as user errors."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise UserError(f"cannot build the {what} from the config: {error}") from error


def _require_complete(run: PlannedRun, needed_by: PlannedRun, role: str) -> RunDir:
    if not run.dir.complete:
        raise UserError(
            f"{needed_by.name} builds on {run.name} ({role}), whose run {run.dir.root} is "
            f"{run.dir.status}: run it first, with the same command and stage={run.name}"
        )
    return run.dir


def _network(cfg: DictConfig, run: PlannedRun) -> nn.Module:
    """The trained network of a complete run, read back by its stage class."""
    stage_class = get_class(cfg.stages[run.name].module._target_)
    return stage_class.load_network(run.dir.best_checkpoint())


def _feature_cache(cfg: DictConfig, stage: DictConfig, run: PlannedRun) -> FeatureCache:
    """The cache of the source CNN run's features in this stage's views (extracted if needed);
    it lives in the source run's folder and is shared by every stage that reads the same views."""
    datamodule = stage.datamodule
    resize, views = feature_views(stage)
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    return ensure_features(
        run.features,
        checkpoint=run.builds_on["features"].dir.best_checkpoint(),
        prepared_root=Path(datamodule.root),
        tables=[f"affwild2/{name}" for name in FEATURE_TABLES],
        image_size=datamodule.image_size,
        resize=resize,
        views=views,
        batch_size=stage.features.batch_size,
        num_workers=datamodule.num_workers,
        trainer_kwargs={key: trainer[key] for key in ("accelerator", "devices", "precision")},
    )


def _inputs(cfg: DictConfig, run: PlannedRun) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """What the runs it builds on give this stage: frozen networks to attach, datamodule
    arguments (the feature cache folder)."""
    stage = cfg.stages[run.name]
    frozen, datamodule_args = {}, {}
    for role, upstream in run.builds_on.items():
        _require_complete(upstream, run, role)
        if role == "teacher":
            frozen["teacher"] = _network(cfg, upstream)
        elif role == "features":
            mode = stage.features.mode
            if mode == "cache":
                datamodule_args["features"] = str(_feature_cache(cfg, stage, run).folder)
            elif mode == "online":
                frozen["cnn"] = _network(cfg, upstream)
            else:
                raise UserError(f"features.mode must be 'cache' or 'online', got {mode!r}")
        else:
            raise UserError(
                f"stages.{run.name}.builds_on: unknown role {role!r}; roles are teacher, features"
            )
    return frozen, datamodule_args


def _wandb_id(run: RunDir) -> str:
    """The run's W&B id: created once, reused on every resume."""
    if run.wandb_id.is_file():
        return run.wandb_id.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    run.wandb_id.write_text(run_id + "\n")
    return run_id


def _set_run(cfg: DictConfig, run: PlannedRun, view: str) -> None:
    """The ``run`` node that the logger and callback configs read (``${run.dir}`` ...)."""
    with open_dict(cfg):
        cfg.run = {
            "dir": str(run.dir.root),
            "checkpoints": str(run.dir.checkpoints),
            "stage": run.name,
            "kind": run.kind,
            "key": run.key,
            "wandb_id": _wandb_id(run.dir),
            "name": f"{view}/seed_{cfg.seed}/{run.name}",
            "group": view,
            "patience": cfg.stages[run.name].patience,
        }


def _job_config(cfg: DictConfig, run: PlannedRun) -> dict[str, Any]:
    """The resolved config of this stage run for its logger (W&B's run config): the job's
    settings, the ``run`` node (variant, key, kind), and of ``stages`` only this stage's."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config["stages"] = {run.name: config["stages"][run.name]}
    return config


def _callbacks(cfg: DictConfig) -> dict[str, pl.Callback]:
    callbacks = {
        name: _build(node, f"callback {name}")
        for name, node in (cfg.get("callbacks") or {}).items()
        if node is not None
    }
    if cfg.trainer.get("enable_progress_bar") is False:  # Lightning refuses a bar it must hide
        callbacks = {k: c for k, c in callbacks.items() if not isinstance(c, ProgressBarBase)}
    for name, kind in (("best_checkpoint", ModelCheckpoint), ("history", ValidationHistory)):
        if not isinstance(callbacks.get(name), kind):
            raise UserError(f"callbacks.{name} must be a {kind.__name__}: the pipeline reads it")
    return callbacks


def _finish_wandb() -> None:
    """Close this process's W&B run, if W&B was used at all (it need not be installed)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def run_stage(cfg: DictConfig, run: PlannedRun, view: str | None = None) -> dict:
    """Train one stage run unless it is complete; resume it if it was interrupted. One process
    writes a run at a time: a second one waits for the first, then reuses or resumes."""
    view = view or cfg.experiment_name
    if run.dir.complete:
        console.print(f"[green]✓[/] {run.name} (seed {cfg.seed}) is complete: {run.dir.root}")
        return run.dir.read_metrics()

    def waiting(holder: str) -> None:
        console.print(f"{run.name} (seed {cfg.seed}): waiting for {holder} ({run.dir.root})")

    with run_lock(run.dir.root, waiting):
        if run.dir.complete:
            console.print(f"[green]✓[/] {run.name} (seed {cfg.seed}) was completed meanwhile")
            return run.dir.read_metrics()
        try:
            return _train(cfg, run, view)
        except BaseException:
            discard_unstarted(run.dir.root, run.dir.identity.is_file)
            raise


def _train(cfg: DictConfig, run: PlannedRun, view: str) -> dict:
    stage = cfg.stages[run.name]
    frozen, datamodule_args = _inputs(cfg, run)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # the stage line names the seed
    datamodule = _build(stage.datamodule, f"datamodule of {run.name}", **datamodule_args)
    module = _build(stage.module, f"module of {run.name}")
    for name, network in frozen.items():
        module.attach_frozen(name, network)
    _set_run(cfg, run, view)
    if not run.dir.identity.is_file():
        OmegaConf.save(cfg, run.dir.config, resolve=True)
        write_json_atomic(run.dir.identity, run.identity())
    logger = _build(cfg.logger, "logger") if cfg.get("logger") is not None else None
    callbacks = _callbacks(cfg)
    trainer = _build(
        cfg.trainer,
        "trainer",
        max_epochs=stage.max_epochs,
        callbacks=list(callbacks.values()),
        logger=logger if logger is not None else False,
        default_root_dir=str(run.dir.root),
    )
    for path in (
        *remove_temporary_files(run.dir.checkpoints),
        *remove_temporary_files(run.dir.root),
    ):
        console.print(f"removed {path}, left by a process that died while writing it")
    resume = resume_checkpoint(run.dir, _warn)
    verb = f"resuming from {resume}" if resume else "starting"
    console.print(f"[bold]{run.name}[/] (seed {cfg.seed}): {verb}", highlight=False)
    try:
        if logger is not None:
            logger.log_hyperparams(_job_config(cfg, run))
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    except SIGTERMException:
        _stopped(cfg, run, callbacks)
    except SystemExit:  # Lightning's exit(1) after a second Ctrl-C, once it saved the checkpoint
        if _interruption(callbacks) is not None:
            _stopped(cfg, run, callbacks)
        raise
    finally:
        _finish_wandb()
    history, epochs, global_step = _fit_record(run.dir, trainer, callbacks["history"])
    best = callbacks["best_checkpoint"].best_model_path
    if history.best() is None or not best:
        raise UserError(
            f"stage in {run.dir.root} finished without a validation score: the validation tables "
            "are empty or limit_val_batches is 0."
        )
    best_path = Path(best).resolve()
    predictions = predict_validation(trainer, module, datamodule, best_path)
    write_predictions(predictions, run.dir.predictions)
    return _write_metrics(run.dir, history, best_path, epochs, global_step)


def _warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)


def _interruption(callbacks: dict[str, pl.Callback]) -> dict | None:
    """What `SaveOnInterrupt` recorded of the signal that stopped the fit, if one did."""
    return next((c.interrupted for c in callbacks.values() if isinstance(c, SaveOnInterrupt)), None)


def _stopped(cfg: DictConfig, run: PlannedRun, callbacks: dict[str, pl.Callback]) -> None:
    """A SIGTERM or Ctrl-C stopped the fit: say what was saved and how to resume; exit 128 + n."""
    stop = _interruption(callbacks) or {"signal": "SIGTERM", "step": None, "saved": False}
    saved = (
        f"saved {stop['path']} at step {stop['step']}"
        if stop["saved"]
        else "kept the last checkpoint (stopped during validation)"
    )
    console.print(
        f"[yellow]{run.name} (seed {cfg.seed}) stopped by {stop['signal']}[/]: {escape(saved)}; "
        "run the same command again to resume it",
        highlight=False,
    )
    signal_number = 2 if stop["signal"] == "SIGINT" else 15
    raise SystemExit(128 + signal_number)


def _fit_record(
    run: RunDir, trainer: pl.Trainer, history: ValidationHistory
) -> tuple[ValidationHistory, int, int]:
    """The validation history, epochs and global step of the finished fit.

    With a spawning strategy (``trainer=ddp``: ddp_spawn) the fit ran in child processes and
    only the best checkpoint path comes back, so they are read from the final ``last.ckpt``.
    """
    if history.epochs or not run.last.is_file():
        return history, trainer.current_epoch, trainer.global_step
    checkpoint = read_checkpoint(run.last)
    history.load_state_dict(checkpoint["callbacks"][history.state_key])
    return history, checkpoint["epoch"] + 1, checkpoint["global_step"]


def _write_metrics(
    run: RunDir, history: ValidationHistory, best_path: Path, epochs: int, global_step: int
) -> dict:
    """Record the finished run, last: best validation metrics, checkpoint, epochs, wall time."""
    best = history.best()
    result = {
        "best": best,
        "best_checkpoint": str(best_path.relative_to(run.root.resolve())),
        "epochs": epochs,
        "global_step": global_step,
        "wall_seconds": round(history.wall_seconds, 3),
        "history": history.epochs,
    }
    write_json_atomic(run.metrics, result)
    console.print(f"[green]✓[/] {run.kind} {run.key}: best {MONITOR} {best[MONITOR]:.4f}")
    return result
