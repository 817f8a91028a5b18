"""Lightning callbacks of every stage run: the validation history that `metrics.json` reports,
checkpoints a resume can trust, a graceful stop on SIGTERM or Ctrl-C, one console line per epoch
(and one when early stopping ends the run), a progress bar counting epochs from 1 as those lines
do, and the library filters in spawned processes."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
from pytorch_lightning.utilities.exceptions import SIGTERMException
from rich.console import Console
from rich.markup import escape

from abaw_lightning.quiet import quiet_libraries
from abaw_lightning.schema import VAL_METRICS
from abaw_lightning.text import decimals, plural


class ValidationHistory(pl.Callback):
    """Validation metrics of every epoch and the training wall time, saved in checkpoints.

    A resumed run restores both, so the final record covers the whole stage, not just its last
    process. After each validation it also writes ``progress.json`` in the run folder.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self.previous_seconds = 0.0
        self._started = time.monotonic()

    @property
    def wall_seconds(self) -> float:
        return self.previous_seconds + time.monotonic() - self._started

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.monotonic()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After the module logged the epoch's metrics (and before checkpoints are written)."""
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        record = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        record |= {key: float(metrics[key]) for key in VAL_METRICS if key in metrics}
        self.epochs = [e for e in self.epochs if e["epoch"] != record["epoch"]] + [record]
        if trainer.is_global_zero:
            self._write_progress(Path(trainer.default_root_dir), record)

    def _write_progress(self, folder: Path, record: dict) -> None:
        """``progress.json``: the last validated epoch, for plans and estimates of a resume."""
        progress = {**record, "wall_seconds": round(self.wall_seconds, 3)}
        temporary = folder / f".progress.json.{os.getpid()}.tmp"
        temporary.write_text(json.dumps(progress) + "\n")
        os.replace(temporary, folder / "progress.json")

    def best(self) -> dict[str, float] | None:
        """The epoch with the highest `val/total` (the first one on ties)."""
        scored = [epoch for epoch in self.epochs if "val/total" in epoch]
        return max(scored, key=lambda epoch: epoch["val/total"]) if scored else None

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "wall_seconds": self.wall_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict["epochs"])
        self.previous_seconds = float(state_dict["wall_seconds"])
        self._started = time.monotonic()


class PeriodicCheckpoint(ModelCheckpoint):
    """``last.ckpt`` at the end of every epoch, and every ``every_n_train_steps`` steps except on
    an epoch's last batch.

    A checkpoint taken on that batch, before the epoch's validation, resumes as an epoch that is
    over: Lightning then never validates it (and a second interruption adds steps). The end of
    an epoch is saved where Lightning saves its own epoch checkpoints, at the epoch's end after
    validation and early stopping. (Lightning's ``save_last`` writes only when a best checkpoint
    is written, so an epoch without progress would leave last.ckpt behind.)
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.dirpath is not None:
            self._save_checkpoint(trainer, os.path.join(self.dirpath, f"{self.filename}.ckpt"))


class SaveOnInterrupt(pl.Callback):
    """SIGTERM (what schedulers send first) or Ctrl-C: finish the current step, save
    ``last.ckpt`` and stop; the pipeline then says how to resume and exits non-zero.

    Ctrl-C is turned into the same graceful stop (Lightning's SIGTERM flag) instead of an
    exception in the middle of a step; a second Ctrl-C interrupts at once and is saved the same
    way (Lightning ignores further presses meanwhile). An interruption during validation keeps
    the previous checkpoint, whose epoch is then validated again in full.
    """

    def __init__(self, dirpath: str | Path, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self.interrupted: dict[str, Any] | None = None
        self._previous_sigint: Any = None
        self._signal = "SIGTERM"

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.interrupted = None
        self._signal = "SIGTERM"
        if trainer.is_global_zero and hasattr(trainer, "_signal_connector"):

            def on_sigint(signum, frame) -> None:
                self._signal = "SIGINT"
                signal.signal(signal.SIGINT, self._previous_sigint or signal.default_int_handler)
                trainer._signal_connector.received_sigterm = True  # stop at the step's end

            self._previous_sigint = signal.signal(signal.SIGINT, on_sigint)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_sigint()

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore_sigint()
        if not isinstance(exception, SIGTERMException | KeyboardInterrupt):
            return
        saved = not (trainer.validating or trainer.sanity_checking)
        if saved:
            trainer.save_checkpoint(self.path, weights_only=False)  # the full state: resumable
        signal_name = "SIGINT" if isinstance(exception, KeyboardInterrupt) else self._signal
        self.interrupted = {
            "signal": signal_name,
            "step": trainer.global_step,
            "saved": saved,
            "path": str(self.path),
        }


class EpochLine(pl.Callback):
    """One console line per validated epoch: the monitored metric, its best so far, the parts."""

    def __init__(self, monitor: str = "val/total") -> None:
        self.monitor = monitor

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
        if self.monitor not in metrics:
            return
        history = next((c for c in trainer.callbacks if isinstance(c, ValidationHistory)), None)
        best = history.best() if history is not None else None
        parts = "  ".join(
            f"{key.removeprefix('val/')} {decimals(metrics[key])}"
            for key in ("val/expr_score", "val/ccc_v", "val/ccc_a")
            if key in metrics
        )
        line = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {self.monitor} "
        line += f"{metrics[self.monitor]:.4f}"
        if best is not None:
            line += f" (best {best[self.monitor]:.4f}, epoch {best['epoch'] + 1})"
        _print(trainer, f"{line}  {parts}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
        if stopper is None or not stopper.stopped_epoch or not trainer.is_global_zero:
            return
        _print(
            trainer,
            f"stopped early after epoch {stopper.stopped_epoch + 1}/{trainer.max_epochs}: "
            f"{stopper.monitor} did not improve for {plural(stopper.patience, 'epoch')}",
        )


def _print(trainer: pl.Trainer, line: str) -> None:
    """A console line that the progress bar, if one is shown, keeps above itself."""
    console = getattr(trainer.progress_bar_callback, "_console", None) or Console(soft_wrap=True)
    console.print(escape(line), highlight=False, soft_wrap=True)


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, numbering epochs from 1 of ``max_epochs`` as the epoch
    lines do (Lightning's own reads ``Epoch 0/7`` for the first of 8), without the logger's
    version number (a run is named by its folder)."""

    def _get_train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            description += f"/{self.trainer.max_epochs}"
        return f"{description:{len(self.validation_description)}}"

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class RngState(pl.Callback):
    """The global torch random state (dropout's) in every checkpoint, restored when training
    resumes: with the samplers' own per-epoch draws, a resumed run computes what an
    uninterrupted one would, step for step."""

    def __init__(self) -> None:
        self._restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {"torch": torch.get_rng_state(), "cuda": cuda}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restore = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After the checkpoint is restored and the loaders are built, before the first step."""
        if self._restore is None:
            return
        torch.set_rng_state(self._restore["torch"])
        if self._restore["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self._restore["cuda"])
        self._restore = None


class ResumeLoggers(pl.Callback):
    """On a resume, hand the restored validation history to the loggers that can use it (to log
    the epochs a killed process never delivered, and nothing twice)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        history = next((c for c in trainer.callbacks if isinstance(c, ValidationHistory)), None)
        if history is None:
            return
        for logger in trainer.loggers:
            resume = getattr(logger, "resume_history", None)
            if callable(resume):
                resume(history.epochs, trainer.global_step)


class QuietLibraries(pl.Callback):
    """Installs `quiet_libraries` at setup: `trainer=ddp` (ddp_spawn) trains in fresh
    interpreters that never ran the command's own call."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        quiet_libraries()
