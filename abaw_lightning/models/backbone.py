"""ResNet backbone (torchvision) with global average pooling and on-device input normalisation."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision import models

from abaw_lightning.errors import UserError
from abaw_lightning.models.weights import WEIGHT_CHOICES, load_backbone_file, normalisation

ARCHITECTURES = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V2),
}


class Backbone(nn.Module):
    """A torchvision ResNet without classifier: uint8 (or 0-255 float) images -> pooled features.

    Normalisation lives here, on the device, and follows the weights (ImageNet or FER+ statistics);
    its statistics are saved with the weights, so a checkpoint restores them.
    """

    def __init__(
        self, arch: str = "resnet50", weights: str = "none", weights_path: str | None = None
    ) -> None:
        super().__init__()
        if arch not in ARCHITECTURES:
            raise UserError(f"model.arch must be one of {sorted(ARCHITECTURES)}, got {arch!r}")
        if weights not in WEIGHT_CHOICES:
            raise UserError(f"model.weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
        if weights in ("file", "ferplus") and not weights_path:
            raise UserError(f"model.weights={weights} needs model.weights_path=<file>")
        build, imagenet = ARCHITECTURES[arch]
        self.resnet = build(weights=imagenet if weights == "imagenet" else None)
        if weights in ("file", "ferplus"):
            layout = "ferplus" if weights == "ferplus" else "torchvision"
            load_backbone_file(self.resnet, Path(weights_path), layout)
        self.num_features = self.resnet.fc.in_features
        self.resnet.fc = nn.Identity()
        mean, std = normalisation(weights)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        normalised = (images.to(self.mean.dtype) - self.mean) / self.std
        return self.resnet(normalised)
