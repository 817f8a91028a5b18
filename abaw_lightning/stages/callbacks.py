"""Callbacks that keep what `metrics.json` reports across interruptions and resumes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

VAL_METRICS = (
    "val/expr_f1",
    "val/expr_acc",
    "val/expr_score",
    "val/ccc_v",
    "val/ccc_a",
    "val/total",
)


class ValidationHistory(pl.Callback):
    """Validation metrics of every epoch and the training wall time, saved in checkpoints.

    A resumed run restores both, so the final record covers the whole stage, not just its last
    process.
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
