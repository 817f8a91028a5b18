"""LightningModules of the CNN stages: the teacher (Eq. 7) and the student (Eq. 9 / Eq. 10)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from abaw_lightning.losses import VAAnchors, teacher_loss
from abaw_lightning.models import MultitaskCNN
from abaw_lightning.models.checkpoints import load_cnn
from abaw_lightning.stages.base import AffectStage, Parts, Student


def forward_parts(
    model: Callable[..., dict[str, Tensor]], batches: Parts, channels_last: bool
) -> dict[str, dict[str, Tensor]]:
    """One forward pass over all parts' images together, split back into per-part outputs.

    The model is told the part sizes: with ``batchnorm: per_part`` its training-mode BatchNorms
    normalise (and update their running statistics with) each part on its own, exactly as one
    forward per part; in eval mode, or with ``batchnorm: joint``, the sizes change nothing.
    """
    images = torch.cat([batch["image"] for batch in batches.values()])
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    sizes = [len(batch["image"]) for batch in batches.values()]
    outputs = model(images, part_sizes=sizes)
    split = {key: value.split(sizes) for key, value in outputs.items()}
    return {part: {key: split[key][i] for key in split} for i, part in enumerate(batches)}


class CnnStage(AffectStage):
    """The multitask CNN (given built, or as its settings) trained on image batches of the parts:
    one forward for all parts, with per-part BatchNorm statistics unless ``model.batchnorm`` is
    ``joint``.

    ``model.settings`` (how to rebuild the network), ``image_size`` and ``resize`` (the validation
    transform) are recorded in the hyperparameters so that inference rebuilds the network and crops
    new faces exactly as it was trained. ``compile_backbone`` compiles the backbone in place
    (`nn.Module.compile`: checkpoint keys do not change).
    """

    def __init__(
        self,
        model: MultitaskCNN | Mapping[str, Any],
        optimizer: dict,
        va_anchors: VAAnchors = "linspace",
        channels_last: bool = True,
        image_size: int = 112,
        resize: int | None = None,
        compile_backbone: bool = False,
    ) -> None:
        super().__init__(optimizer, va_anchors)
        if isinstance(model, Mapping):
            model = MultitaskCNN(**model)
        self.hparams["model"] = dict(model.settings)
        self.model = model
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        if compile_backbone:
            self.model.backbone.compile()

    @staticmethod
    def load_network(path: str | Path) -> MultitaskCNN:
        return load_cnn(path)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def training_outputs(self, batch: Parts) -> tuple[dict, Parts]:
        return forward_parts(self.model, batch, self.channels_last), batch

    def validation_outputs(self, batch: Mapping[str, Tensor]) -> tuple[dict, Mapping]:
        return self(batch["image"]), batch


class CnnTeacher(CnnStage):
    """Teacher CNN trained on ground truth only (Eq. 7), with 2 or 3 parts."""

    def loss(self, outputs: Parts, labels: Parts) -> Tensor:
        return teacher_loss(outputs, labels, anchors=self.va_anchors)


class CnnStudent(Student, CnnStage):
    """Student CNN distilled from a frozen teacher (Eq. 10 with shared annotations, else Eq. 9).

    The teacher runs in eval mode, without gradients, on the same augmented batch.
    """

    def attach_frozen(self, name: str, network: nn.Module) -> None:
        super().attach_frozen(name, network)
        if self.channels_last:
            network.to(memory_format=torch.channels_last)

    def loss(self, outputs: Parts, labels: Parts) -> Tensor:
        with torch.no_grad():
            teacher_outputs = forward_parts(self.teacher, labels, self.channels_last)
        return self.distillation_loss(outputs, teacher_outputs, labels)
