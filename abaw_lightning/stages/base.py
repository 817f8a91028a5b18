"""What every training stage shares: Adam, the ABAW validation metrics, frozen helper networks,
and stopping on a non-finite loss."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from abaw_lightning.errors import UserError
from abaw_lightning.losses import Distillation, VAAnchors, va_expectation
from abaw_lightning.metrics import ExprMetric, VAMetric
from abaw_lightning.schema import METRIC_NAMES, MONITOR

Parts = Mapping[str, Mapping[str, Tensor]]
"""Per-part tensors: model outputs ({"expr", "va"} logits) or labels ({"expr", "va"})."""


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite; a checkpoint of that moment was saved."""


class AffectStage(pl.LightningModule):
    """Base of the CNN and GRU stages; ``self.model`` is the network being trained.

    Subclasses define ``training_outputs(batch) -> (outputs, labels)`` (per part, rows or frames),
    ``validation_outputs(batch) -> (outputs, labels)`` (one validation set) and
    ``loss(outputs, labels)``. Validation dataloader 0 is the Aff-Wild2 EXPR set, 1 the VA set;
    `val/total` = EXPR score + CCC_V + CCC_A selects the best epoch. ``load_network(path)`` reads
    the trained network back from a checkpoint of the stage (for the stages that build on it).
    """

    def __init__(self, optimizer: dict, va_anchors: VAAnchors = "linspace") -> None:
        super().__init__()
        # The subclasses' plain __init__ arguments too; networks and settings objects are recorded
        # by their owners as plain dicts (checkpoints load with weights_only=True).
        self.save_hyperparameters(ignore=["model", "distillation"])
        self.optimizer_settings = optimizer
        self.va_anchors = va_anchors
        self.val_expr = ExprMetric()
        self.val_va = VAMetric()
        self.frozen: dict[str, nn.Module] = {}

    def attach_frozen(self, name: str, network: nn.Module) -> None:
        """Attach a frozen network (a teacher, a feature CNN): eval mode, no gradients, and kept
        out of the parameters, the optimizer, the hyperparameters and the checkpoint."""
        self.frozen[name] = network.eval().requires_grad_(False)

    @property
    def teacher(self) -> nn.Module | None:
        return self.frozen.get("teacher")

    def on_fit_start(self) -> None:
        for network in self.frozen.values():
            network.to(self.device)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        settings = self.optimizer_settings
        return torch.optim.Adam(
            self.model.parameters(), lr=settings["lr"], betas=tuple(settings["betas"])
        )

    @classmethod
    def check_settings(cls, optimizer: Mapping, **_: object) -> None:
        """Raise ValueError, naming the setting, for ``optimizer`` settings Adam would refuse
        only when the stage starts (`check_job` calls it before anything runs)."""
        lr, betas = optimizer.get("lr"), optimizer.get("betas")
        if not _number(lr) or lr <= 0:
            raise ValueError(f"optimizer.lr={lr!r} must be a positive number")
        if not (isinstance(betas, list | tuple) and len(betas) == 2):
            raise ValueError(f"optimizer.betas={betas!r} must be two numbers in [0, 1)")
        if not all(_number(beta) and 0 <= beta < 1 for beta in betas):
            raise ValueError(f"optimizer.betas={betas!r} must be two numbers in [0, 1)")

    def training_step(self, batch: Mapping, batch_idx: int) -> Tensor:
        outputs, labels = self.training_outputs(batch)
        loss = self.loss(outputs, labels)
        if not torch.isfinite(loss):
            self._stop_on_non_finite(loss, outputs, labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def _stop_on_non_finite(self, loss: Tensor, outputs: Parts, labels: Parts) -> None:
        """Save a checkpoint of this moment, then stop naming the step and the offending parts."""
        parts = [
            part
            for part in outputs
            if not torch.isfinite(self.loss({part: outputs[part]}, {part: labels[part]}))
        ]
        path = Path(self.trainer.default_root_dir) / "checkpoints" / "nonfinite.ckpt"
        self.trainer.save_checkpoint(path)
        raise NonFiniteLossError(
            f"training loss is {loss.item()} at global step {self.global_step} "
            f"(epoch {self.current_epoch}), from part(s) {parts or list(outputs)}. The state of "
            f"that step is saved in {path}. Check those parts' data or lower the learning rate; "
            "rerunning the same command resumes from the last good checkpoint."
        )

    def validation_step(self, batch: Mapping, batch_idx: int, dataloader_idx: int = 0) -> None:
        outputs, labels = self.validation_outputs(batch)
        if dataloader_idx == 0:
            self.val_expr.update(outputs["expr"], labels["expr"])
        else:
            expectation = va_expectation(outputs["va"].float(), self.va_anchors)
            self.val_va.update(expectation, labels["va"])

    def on_validation_epoch_end(self) -> None:
        expr, va = self.val_expr.compute(), self.val_va.compute()
        values = {
            "expr_f1": expr["f1"],
            "expr_acc": expr["acc"],
            "expr_score": expr["score"],
            "ccc_v": va["ccc_v"],
            "ccc_a": va["ccc_a"],
            "total": expr["score"] + va["ccc_v"] + va["ccc_a"],
        }
        for name, key in METRIC_NAMES.items():
            self.log(key, float(values[name]), prog_bar=key == MONITOR)
        self.val_expr.reset()
        self.val_va.reset()


class Student:
    """Mixin of the student stages: distils the frozen ``teacher`` with one `Distillation`."""

    def __init__(self, *, distillation: Distillation | None = None, **settings: Any) -> None:
        super().__init__(**settings)
        self.distillation = distillation or Distillation()
        self.hparams["distillation"] = dataclasses.asdict(self.distillation)

    def distillation_loss(self, outputs: Parts, teacher_outputs: Parts, labels: Parts) -> Tensor:
        """Eq. 10 (or Eq. 9) with this student's distillation settings."""
        return self.distillation.loss(outputs, teacher_outputs, labels, self.va_anchors)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
