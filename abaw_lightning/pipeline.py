"""The per-seed stage graph: artifact paths, skipping finished stages, resuming interrupted ones.

Layout: ``<runs_dir>/<experiment_name>/seed_<seed>/<stage>/`` holds ``config.yaml``, ``wandb_id``,
``checkpoints/{last,best}.ckpt`` and, once the stage is complete, ``val_predictions.parquet`` then
``metrics.json``. A stage with ``metrics.json`` is skipped; one with ``last.ckpt`` resumes from it
under the same W&B run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from rich.console import Console
from torch import nn

from abaw_lightning.data.datamodules import CnnDataModule, GruDataModule
from abaw_lightning.data.features import FeatureCache, default_views, ensure_features
from abaw_lightning.data.transforms import default_resize
from abaw_lightning.errors import UserError
from abaw_lightning.hardware import check_trainer_settings
from abaw_lightning.quiet import quiet_wandb_logger
from abaw_lightning.stages.callbacks import ValidationHistory
from abaw_lightning.stages.checkpoints import load_cnn, load_temporal, read_checkpoint
from abaw_lightning.stages.quiet_callback import QuietLibraries
from abaw_lightning.validation import predict_validation, write_predictions

console = Console()
MONITOR = "val/total"


@dataclass(frozen=True)
class StagePaths:
    """Where a stage keeps its artifacts."""

    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def predictions(self) -> Path:
        return self.root / "val_predictions.parquet"

    @property
    def wandb_id(self) -> Path:
        return self.root / "wandb_id"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"


@dataclass(frozen=True)
class StageSpec:
    """How to build a stage: its datamodule, and which earlier stages' networks it needs."""

    datamodule: Callable[[DictConfig, str], pl.LightningDataModule]
    teacher: str | None = None
    load_teacher: Callable[[Path], nn.Module] | None = None
    temporal: bool = False
    """GRU stages: trained on the features of the CNN stage ``features.source``."""


def cnn_datamodule(cfg: DictConfig, stage: str) -> CnnDataModule:
    data = cfg.data
    return CnnDataModule(
        root=data.root,
        parts=list(data.parts),
        batch_size=data.batch_size,
        val_batch_size=data.val_batch_size,
        seed=cfg.seed,
        **_loading(data),
    )


def _loading(data: DictConfig) -> dict:
    """Image and DataLoader settings that both datamodules take."""
    keys = ("image_size", "resize", "num_workers", "pin_memory", "persistent_workers")
    return {key: data[key] for key in (*keys, "prefetch_factor")}


def gru_datamodule(cfg: DictConfig, stage: str) -> GruDataModule:
    """Windows of cached features (extracted first if needed), or of images in online mode."""
    data, windows = cfg.data, cfg.data.windows
    features = None
    if cfg.features.mode == "cache":
        features = _ensure_features(cfg, stage).folder
    elif cfg.features.mode != "online":
        raise UserError(f"features.mode must be 'cache' or 'online', got {cfg.features.mode!r}")
    return GruDataModule(
        root=data.root,
        tasks=list(cfg.gru_tasks),
        features=features,
        length=windows.length,
        train_stride=windows.train_stride,
        batch_size=windows.batch_size,
        val_batch_size=windows.val_batch_size,
        seed=cfg.seed,
        **_loading(data),
    )


def _ensure_features(cfg: DictConfig, stage: str) -> FeatureCache:
    data, settings = cfg.data, cfg.features
    resize = data.resize or default_resize(data.image_size)
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    return ensure_features(
        seed_dir(cfg) / "features",
        checkpoint=_finished_checkpoint(cfg, stage, settings.source),
        prepared_root=Path(data.root),
        tables=[f"affwild2/{name}" for name in FEATURE_TABLES],
        image_size=data.image_size,
        resize=resize,
        views=default_views(data.image_size, resize, settings.offsets, settings.flip),
        batch_size=settings.batch_size,
        num_workers=data.num_workers,
        trainer_kwargs={key: trainer[key] for key in ("accelerator", "devices", "precision")},
    )


FEATURE_TABLES = ("train_expr", "train_va", "val_expr", "val_va")
"""The Aff-Wild2 tables whose frames the GRU stages read."""

STAGES: dict[str, StageSpec] = {
    "cnn_teacher": StageSpec(cnn_datamodule),
    "cnn_student": StageSpec(cnn_datamodule, teacher="cnn_teacher", load_teacher=load_cnn),
    "gru_teacher": StageSpec(gru_datamodule, temporal=True),
    "gru_student": StageSpec(
        gru_datamodule, teacher="gru_teacher", load_teacher=load_temporal, temporal=True
    ),
}
"""Every stage the pipeline knows, in the order they depend on each other."""


def seed_dir(cfg: DictConfig) -> Path:
    return Path(cfg.runs_dir) / cfg.experiment_name / f"seed_{cfg.seed}"


def stage_paths(cfg: DictConfig, stage: str) -> StagePaths:
    return StagePaths(seed_dir(cfg) / stage)


def stages_to_run(cfg: DictConfig) -> list[str]:
    """The experiment's stages in order, or just ``cfg.stage``; unknown names are user errors."""
    names = [cfg.stage] if cfg.get("stage") is not None else list(cfg.pipeline)
    for name in names:
        if name not in STAGES:
            raise UserError(f"unknown stage {name!r}: choose from {list(STAGES)}")
        if name not in cfg.stages:
            raise UserError(f"stage {name!r} has no settings under `stages` in the config")
    return names


def run_pipeline(cfg: DictConfig) -> dict[str, dict]:
    """Run (or skip, or resume) every stage for ``cfg.seed``; return each stage's metrics."""
    check_trainer_settings(OmegaConf.to_container(cfg.trainer, resolve=True))
    return {stage: run_stage(cfg, stage) for stage in stages_to_run(cfg)}


def _read_metrics(paths: StagePaths) -> dict:
    return json.loads(paths.metrics.read_text())


def _finished_checkpoint(cfg: DictConfig, stage: str, teacher: str) -> Path:
    """The best checkpoint of the finished stage ``teacher`` that ``stage`` builds on."""
    paths = stage_paths(cfg, teacher)
    if not paths.metrics.is_file():
        raise UserError(
            f"stage {stage} needs the finished {teacher} stage of this seed, but "
            f"{paths.metrics} does not exist. Run it first: abaw-train "
            f"experiment={cfg.experiment_name} seed={cfg.seed} stage={teacher}"
        )
    best = Path(_read_metrics(paths)["best_checkpoint"])
    if not best.is_file():
        raise UserError(
            f"the {teacher} checkpoint {best} named in {paths.metrics} is missing: delete "
            f"{paths.root} and rerun to train the {teacher} stage again."
        )
    return best


def _wandb_id(paths: StagePaths) -> str:
    """The stage's W&B run id: created once, reused on every resume."""
    if paths.wandb_id.is_file():
        return paths.wandb_id.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    paths.wandb_id.write_text(run_id + "\n")
    return run_id


def _logger(cfg: DictConfig, stage: str, paths: StagePaths):
    if cfg.get("logger") is None:
        return None
    target = cfg.logger["_target_"]
    if target.endswith("WandbLogger"):
        logger = instantiate(
            cfg.logger,
            id=_wandb_id(paths),
            name=f"{cfg.experiment_name}/seed_{cfg.seed}/{stage}",
            group=f"{cfg.experiment_name}/seed_{cfg.seed}",
            job_type=stage,
            save_dir=str(paths.root),
            resume="allow",
        )
        return quiet_wandb_logger(logger)
    return instantiate(cfg.logger, save_dir=str(paths.root), version="")


def _callbacks(cfg: DictConfig, stage_cfg: DictConfig, paths: StagePaths, logged: bool) -> list:
    best = ModelCheckpoint(
        dirpath=paths.checkpoints,
        filename="best",
        monitor=MONITOR,
        mode="max",
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    periodic = ModelCheckpoint(
        dirpath=paths.checkpoints,
        filename="last",
        every_n_train_steps=cfg.checkpoint_every_n_steps,
        save_top_k=1,
        enable_version_counter=False,
    )
    early = EarlyStopping(monitor=MONITOR, mode="max", patience=stage_cfg.patience)
    callbacks = [best, periodic, early, ValidationHistory(), QuietLibraries()]
    return [*callbacks, LearningRateMonitor()] if logged else callbacks


def _finish_wandb() -> None:
    import wandb

    if wandb.run is not None:
        wandb.finish()


def run_stage(cfg: DictConfig, stage: str) -> dict:
    """Train one stage for one seed unless it is complete; resume it if it was interrupted."""
    paths = stage_paths(cfg, stage)
    if paths.metrics.is_file():
        console.print(f"[green]✓[/] {stage} (seed {cfg.seed}) is complete: {paths.metrics}")
        return _read_metrics(paths)
    spec, stage_cfg = STAGES[stage], cfg.stages[stage]
    frozen = {}
    if spec.teacher is not None:
        frozen["teacher"] = spec.load_teacher(_finished_checkpoint(cfg, stage, spec.teacher))
    if spec.temporal and cfg.features.mode == "online":
        frozen["cnn"] = load_cnn(_finished_checkpoint(cfg, stage, cfg.features.source))
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = spec.datamodule(cfg, stage)
    module = instantiate(stage_cfg.module, _convert_="all")
    for name, network in frozen.items():
        module.attach_frozen(name, network)
    paths.root.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, paths.config, resolve=True)
    logger = _logger(cfg, stage, paths)
    callbacks = _callbacks(cfg, stage_cfg, paths, logged=logger is not None)
    trainer = pl.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        max_epochs=stage_cfg.max_epochs,
        callbacks=callbacks,
        logger=logger if logger is not None else False,
        default_root_dir=paths.root,
    )
    resume = paths.last if paths.last.is_file() else None
    verb = f"resuming from {resume}" if resume else "starting"
    console.print(f"[bold]{stage}[/] (seed {cfg.seed}): {verb}")
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    finally:
        _finish_wandb()
    history, epochs, global_step = _fit_record(paths, trainer, callbacks)
    best_checkpoint = next(c for c in callbacks if isinstance(c, ModelCheckpoint))
    if history.best() is None or not best_checkpoint.best_model_path:
        raise UserError(
            f"stage in {paths.root} finished without a validation score: the validation tables "
            "are empty or limit_val_batches is 0."
        )
    best_path = Path(best_checkpoint.best_model_path).resolve()
    predictions = predict_validation(trainer, module, datamodule, best_path)
    write_predictions(predictions, paths.predictions)
    return _write_metrics(paths, history, best_path, epochs, global_step)


def _fit_record(
    paths: StagePaths, trainer: pl.Trainer, callbacks: list
) -> tuple[ValidationHistory, int, int]:
    """The validation history, epochs and global step of the finished fit.

    With a spawning strategy (``trainer=ddp``: ddp_spawn) the fit ran in child processes and
    only the best checkpoint path comes back, so they are read from the final ``last.ckpt``.
    """
    history = next(c for c in callbacks if isinstance(c, ValidationHistory))
    if history.epochs or not paths.last.is_file():
        return history, trainer.current_epoch, trainer.global_step
    checkpoint = read_checkpoint(paths.last)
    history.load_state_dict(checkpoint["callbacks"][history.state_key])
    return history, checkpoint["epoch"] + 1, checkpoint["global_step"]


def _write_metrics(
    paths: StagePaths, history: ValidationHistory, best_path: Path, epochs: int, global_step: int
) -> dict:
    """Record the finished stage: best validation metrics, checkpoint, epochs, wall time."""
    best = history.best()
    result = {
        "best": best,
        "best_checkpoint": str(best_path),
        "epochs": epochs,
        "global_step": global_step,
        "wall_seconds": round(history.wall_seconds, 3),
        "history": history.epochs,
    }
    temporary = paths.metrics.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    temporary.replace(paths.metrics)
    console.print(f"[green]✓[/] {paths.root.name}: best {MONITOR} {best[MONITOR]:.4f}")
    return result
