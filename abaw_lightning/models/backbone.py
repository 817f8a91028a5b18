"""ResNet backbone (torchvision) with global average pooling and on-device input normalisation."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision import models

from abaw_lightning.errors import UserError
from abaw_lightning.models.weights import WEIGHT_CHOICES, Weights, load_backbone_file, normalisation


def resnet10(weights: None = None, **settings) -> models.ResNet:
    """ResNet-10: torchvision's ResNet with one basic block per stage (half of ResNet-18's
    weights); no pretrained weights exist. For quick CPU runs (tests, trials)."""
    return models.ResNet(models.resnet.BasicBlock, [1, 1, 1, 1], **settings)


Architecture = Literal["resnet10", "resnet18", "resnet34", "resnet50"]
ARCHITECTURES = {
    "resnet10": (resnet10, None),
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V2),
}
Layout = Literal["torchvision", "caffe"]
LAYOUTS = typing.get_args(Layout)
"""``torchvision``: ResNet v1.5 (stride in the 3x3, padded stem pool); ``caffe``: the layout of the
FER+ conversion (METHOD.md §2)."""


def default_layout(weights: str) -> str:
    """The network layout a weights choice was trained in: ``caffe`` for FER+, else torchvision."""
    return "caffe" if weights == "ferplus" else "torchvision"


def to_caffe_layout(resnet: models.ResNet) -> None:
    """Turn a torchvision bottleneck ResNet into the Caffe layout, in place, keeping every weight:
    stages 3-5 stride in the first block's 1x1 reduce (not its 3x3), stem pool 3x3/2, no padding,
    ceil mode. The projections already stride 2 and BatchNorm eps is 1e-5 in both."""
    if not isinstance(resnet.layer1[0], models.resnet.Bottleneck):
        raise UserError("model.layout=caffe needs a bottleneck ResNet: use model.arch=resnet50")
    resnet.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    for stage in (resnet.layer2, resnet.layer3, resnet.layer4):
        first = stage[0]
        first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1)


def _download_imagenet(build, weights: models.WeightsEnum, arch: str, **kwargs) -> models.ResNet:
    """torchvision's ResNet with its ImageNet weights; a failed download is one `UserError` line
    saying where the file goes instead."""
    try:
        return build(weights=weights, **kwargs)
    except OSError as error:  # URLError, timeouts, an unwritable cache folder
        name = Path(urlparse(weights.url).path).name
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        raise UserError(
            f"cannot fetch torchvision's ImageNet weights of {arch} ({error}): pass "
            f"model.weights=none to start from random weights, or download {weights.url} and "
            f"put it at {folder / name} (torchvision's cache, $TORCH_HOME/hub/checkpoints/)"
        ) from error


class Backbone(nn.Module):
    """A torchvision ResNet without classifier: uint8 (or 0-255 float) images -> pooled features.

    Normalisation lives here, on the device, and follows the weights (ImageNet or FER+ statistics);
    its statistics are saved with the weights, so a checkpoint restores them. ``layout`` (default:
    from ``weights``) selects torchvision's or the FER+ file's Caffe computation; ``norm_layer``
    is the BatchNorm class of every layer.
    """

    def __init__(
        self,
        arch: Architecture = "resnet50",
        weights: Weights = "none",
        weights_path: str | None = None,
        layout: Layout | None = None,
        norm_layer: type[nn.BatchNorm2d] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if arch not in ARCHITECTURES:
            raise UserError(f"model.arch must be one of {sorted(ARCHITECTURES)}, got {arch!r}")
        if weights not in WEIGHT_CHOICES:
            raise UserError(f"model.weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
        self.layout = default_layout(weights) if layout is None else layout
        if self.layout not in LAYOUTS:
            raise UserError(f"model.layout must be one of {LAYOUTS} or null, got {layout!r}")
        if weights in ("file", "ferplus") and not weights_path:
            raise UserError(f"model.weights={weights} needs model.weights_path=<file>")
        build, imagenet = ARCHITECTURES[arch]
        if weights == "imagenet" and imagenet is None:
            raise UserError(
                f"model.arch={arch} has no ImageNet weights: pass model.weights=none, or "
                "model.arch=resnet18 / resnet34 / resnet50"
            )
        if weights == "imagenet":
            self.resnet = _download_imagenet(build, imagenet, arch, norm_layer=norm_layer)
        else:
            self.resnet = build(weights=None, norm_layer=norm_layer)
        if self.layout == "caffe":
            to_caffe_layout(self.resnet)
        if weights in ("file", "ferplus"):
            keys = "ferplus" if weights == "ferplus" else "torchvision"
            load_backbone_file(self.resnet, Path(weights_path), keys)
        self.num_features = self.resnet.fc.in_features
        self.resnet.fc = nn.Identity()
        mean, std = normalisation(weights)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        normalised = (images.to(self.mean.dtype) - self.mean) / self.std
        return self.resnet(normalised)
