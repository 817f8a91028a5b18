"""LightningModules of the CNN stages: the teacher (Eq. 7) and the student (Eq. 9 / Eq. 10)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from abaw_lightning.errors import UserError
from abaw_lightning.losses import student_loss, teacher_loss, va_expectation
from abaw_lightning.metrics import ExprMetric, VAMetric
from abaw_lightning.models import MultitaskCNN

PartBatches = Mapping[str, Mapping[str, Tensor]]


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite; a checkpoint of that moment was saved."""


def forward_parts(
    model: Callable[[Tensor], dict[str, Tensor]], batches: PartBatches, channels_last: bool
) -> dict[str, dict[str, Tensor]]:
    """One forward pass over all parts' images together, split back into per-part outputs."""
    images = torch.cat([batch["image"] for batch in batches.values()])
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    outputs = model(images)
    sizes = [len(batch["image"]) for batch in batches.values()]
    split = {key: value.split(sizes) for key, value in outputs.items()}
    return {part: {key: split[key][i] for key in split} for i, part in enumerate(batches)}


class CnnStage(pl.LightningModule):
    """Shared by both CNN stages: the model, Adam, and the ABAW validation metrics.

    Subclasses define ``loss(outputs, batches)``, the training objective on per-part outputs.
    Validation dataloader 0 is the Aff-Wild2 EXPR set, 1 the VA set; `val/total` = EXPR score +
    CCC_V + CCC_A selects the best epoch.
    """

    def __init__(
        self, model: dict, optimizer: dict, va_anchors: str = "linspace", channels_last: bool = True
    ) -> None:
        super().__init__()
        self.model = MultitaskCNN(**model)
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer_settings = optimizer
        self.va_anchors = va_anchors
        self.val_expr = ExprMetric()
        self.val_va = VAMetric()

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        settings = self.optimizer_settings
        return torch.optim.Adam(
            self.model.parameters(), lr=settings["lr"], betas=tuple(settings["betas"])
        )

    def training_step(self, batch: PartBatches, batch_idx: int) -> Tensor:
        outputs = forward_parts(self.model, batch, self.channels_last)
        loss = self.loss(outputs, batch)
        if not torch.isfinite(loss):
            self._stop_on_non_finite(loss, outputs, batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def _stop_on_non_finite(self, loss: Tensor, outputs: dict, batches: PartBatches) -> None:
        """Save a checkpoint of this moment, then stop naming the step and the offending parts."""
        parts = [
            part
            for part in outputs
            if not torch.isfinite(self.loss({part: outputs[part]}, {part: batches[part]}))
        ]
        path = Path(self.trainer.default_root_dir) / "checkpoints" / "nonfinite.ckpt"
        self.trainer.save_checkpoint(path)
        raise NonFiniteLossError(
            f"training loss is {loss.item()} at global step {self.global_step} "
            f"(epoch {self.current_epoch}), from part(s) {parts or list(outputs)}. The state of "
            f"that step is saved in {path}. Check those parts' data or lower the learning rate; "
            "rerunning the same command resumes from the last good checkpoint."
        )

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        outputs = self(batch["image"])
        if dataloader_idx == 0:
            self.val_expr.update(outputs["expr"], batch["expr"])
        else:
            self.val_va.update(va_expectation(outputs["va"].float(), self.va_anchors), batch["va"])

    def on_validation_epoch_end(self) -> None:
        expr, va = self.val_expr.compute(), self.val_va.compute()
        metrics = {
            "val/expr_f1": expr["f1"],
            "val/expr_acc": expr["acc"],
            "val/expr_score": expr["score"],
            "val/ccc_v": va["ccc_v"],
            "val/ccc_a": va["ccc_a"],
            "val/total": expr["score"] + va["ccc_v"] + va["ccc_a"],
        }
        for key, value in metrics.items():
            self.log(key, float(value), prog_bar=key == "val/total")
        self.val_expr.reset()
        self.val_va.reset()


class CnnTeacher(CnnStage):
    """Teacher CNN trained on ground truth only (Eq. 7), with 2 or 3 parts."""

    def __init__(
        self, model: dict, optimizer: dict, va_anchors: str = "linspace", channels_last: bool = True
    ) -> None:
        super().__init__(model, optimizer, va_anchors, channels_last)
        self.save_hyperparameters()

    def loss(self, outputs: dict, batches: PartBatches) -> Tensor:
        return teacher_loss(outputs, batches, anchors=self.va_anchors)


class CnnStudent(CnnStage):
    """Student CNN distilled from a frozen teacher (Eq. 10 with shared annotations, else Eq. 9).

    The teacher stays outside the module tree: not in the hyperparameters, the optimizer or the
    checkpoint, always in eval mode, without gradients, run on the same augmented batch.
    """

    def __init__(
        self,
        model: dict,
        optimizer: dict,
        va_anchors: str = "linspace",
        channels_last: bool = True,
        lam: float = 0.6,
        temperature: float = 1.5,
        kd_t2: bool = True,
        shared_annotations: bool = True,
        teacher: nn.Module | None = None,
    ) -> None:
        super().__init__(model, optimizer, va_anchors, channels_last)
        self.save_hyperparameters(ignore=["teacher"])
        self.lam = lam
        self.temperature = temperature
        self.kd_t2 = kd_t2
        self.shared_annotations = shared_annotations
        self.__dict__["teacher"] = None
        if teacher is not None:
            self.set_teacher(teacher)

    def set_teacher(self, teacher: nn.Module) -> None:
        """Attach a frozen teacher (kept out of parameters, state dict and optimizer)."""
        teacher.eval().requires_grad_(False)
        if self.channels_last:
            teacher.to(memory_format=torch.channels_last)
        self.__dict__["teacher"] = teacher

    def on_fit_start(self) -> None:
        if self.teacher is None:
            raise UserError("the CNN student needs a teacher: the pipeline attaches it")
        self.teacher.to(self.device)

    def loss(self, outputs: dict, batches: PartBatches) -> Tensor:
        with torch.no_grad():
            teacher_outputs = forward_parts(self.teacher, batches, self.channels_last)
        return student_loss(
            outputs,
            teacher_outputs,
            batches,
            lam=self.lam,
            temperature=self.temperature,
            t2=self.kd_t2,
            shared=self.shared_annotations,
            anchors=self.va_anchors,
        )
