"""LightningModules of the temporal stages: GRU teacher and GRU student (METHOD.md §4).

Batches are windows: ``features`` [B, T, 2, 128] from the feature cache (or ``image``
[B, T, 3, H, W] in online mode, run through the frozen CNN student), ``expr`` [B, T],
``va`` [B, T, 2] and ``mask`` [B, T]. Outputs are flattened to the masked frames before the
losses and metrics of the CNN stages are applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from abaw_lightning.errors import UserError
from abaw_lightning.losses import VAAnchors, teacher_loss
from abaw_lightning.models import TemporalModel
from abaw_lightning.models.checkpoints import load_temporal
from abaw_lightning.models.features import head_features
from abaw_lightning.stages.base import AffectStage, Parts, Student


def flatten_frames(values: Mapping[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
    """[B, T, ...] per key -> [frames, ...] over the frames the mask keeps."""
    return {key: value[mask] for key, value in values.items()}


class GruStage(AffectStage):
    """A `TemporalModel` trained on windows of the frozen CNN's head features.

    ``window_length`` is recorded in the hyperparameters for inference (non-overlapping windows).
    """

    def __init__(
        self,
        optimizer: dict,
        va_anchors: VAAnchors = "linspace",
        hidden_size: int = 64,
        window_length: int = 32,
    ) -> None:
        super().__init__(optimizer, va_anchors)
        self.model = TemporalModel(hidden_size)

    @staticmethod
    def load_network(path: str | Path) -> TemporalModel:
        return load_temporal(path)

    def features(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The window features [B, T, 2, 128]: cached, or computed by the frozen CNN."""
        if "features" in batch:
            return batch["features"].float()
        cnn = self.frozen.get("cnn")
        if cnn is None:
            raise UserError("online feature mode needs the frozen CNN: the pipeline attaches it")
        images = batch["image"]
        with torch.no_grad():
            features = head_features(cnn, images.flatten(0, 1))
        return features.unflatten(0, images.shape[:2]).float()

    def frames(self, batch: Mapping[str, Tensor]) -> tuple[dict, dict, Tensor]:
        """Frame outputs and labels of one window batch, and its features."""
        features = self.features(batch)
        mask = batch["mask"]
        outputs = flatten_frames(self.model(features), mask)
        labels = flatten_frames({"expr": batch["expr"], "va": batch["va"]}, mask)
        return outputs, labels, features

    def training_outputs(self, batch: Parts) -> tuple[dict, dict]:
        outputs, labels = {}, {}
        for part, windows in batch.items():
            outputs[part], labels[part], _ = self.frames(windows)
        return outputs, labels

    def validation_outputs(self, batch: Mapping[str, Tensor]) -> tuple[dict, dict]:
        outputs, labels, _ = self.frames(batch)
        return outputs, labels


class GruTeacher(GruStage):
    """GRU teacher: ground truth only (Eq. 7) on the frames of the window parts."""

    def loss(self, outputs: Parts, labels: Parts) -> Tensor:
        return teacher_loss(outputs, labels, anchors=self.va_anchors)


class GruStudent(Student, GruStage):
    """GRU student distilled from this seed's frozen GRU teacher (Eq. 10, or Eq. 9)."""

    def training_outputs(self, batch: Parts) -> tuple[dict, dict]:
        """Also runs the teacher on the same features; its frame outputs ride with the labels."""
        outputs, labels = {}, {}
        for part, windows in batch.items():
            outputs[part], part_labels, features = self.frames(windows)
            with torch.no_grad():
                teacher = flatten_frames(self.teacher(features), windows["mask"])
            labels[part] = {**part_labels, "teacher": teacher}
        return outputs, labels

    def loss(self, outputs: Parts, labels: Parts) -> Tensor:
        teacher_outputs = {part: labels[part]["teacher"] for part in outputs}
        return self.distillation_loss(outputs, teacher_outputs, labels)
