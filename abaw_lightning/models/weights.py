"""Backbone weights: torchvision's ImageNet, a local state dict, or the FER+ ResNet-50 file.

Each choice fixes the input normalisation (mean and std on the 0-255 pixel scale).
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from abaw_lightning.errors import UserError

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
FERPLUS_MEAN = (131.0912, 103.8827, 91.4953)
FERPLUS_STD = (1.0, 1.0, 1.0)
Weights = Literal["none", "imagenet", "file", "ferplus"]
WEIGHT_CHOICES = typing.get_args(Weights)


def normalisation(weights: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std (0-255 scale) the backbone expects for a weights choice."""
    if weights == "ferplus":
        return FERPLUS_MEAN, FERPLUS_STD
    return IMAGENET_MEAN, IMAGENET_STD


def _bn_keys(prefix: str, source: str) -> dict[str, str]:
    names = ("weight", "bias", "running_mean", "running_var")
    return {f"{prefix}.{name}": f"{source}.{name}" for name in names}


def ferplus_key_map(backbone: nn.Module) -> dict[str, str]:
    """torchvision ResNet key -> key of the VGGFace2-style FER+ file (METHOD.md §2)."""
    mapping = {"conv1.weight": "conv1_7x7_s2.weight", **_bn_keys("bn1", "conv1_7x7_s2_bn")}
    convs = {"conv1": "1x1_reduce", "conv2": "3x3", "conv3": "1x1_increase"}
    for stage in range(1, 5):
        for block_index, block in enumerate(getattr(backbone, f"layer{stage}")):
            ours = f"layer{stage}.{block_index}"
            theirs = f"conv{stage + 1}_{block_index + 1}"
            for conv, suffix in convs.items():
                bn = conv.replace("conv", "bn")
                mapping[f"{ours}.{conv}.weight"] = f"{theirs}_{suffix}.weight"
                mapping.update(_bn_keys(f"{ours}.{bn}", f"{theirs}_{suffix}_bn"))
            if block.downsample is not None:
                mapping[f"{ours}.downsample.0.weight"] = f"{theirs}_1x1_proj.weight"
                mapping.update(_bn_keys(f"{ours}.downsample.1", f"{theirs}_1x1_proj_bn"))
    return mapping


def load_tensors(path: Path, what: str, hint: str = "") -> object:
    """``torch.load`` with ``weights_only`` (no code runs); a missing or unreadable file is a
    `UserError` naming ``what`` and the path."""
    if not path.is_file():
        raise UserError(f"{what} not found: {path}{hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"cannot read {what} {path}: {error}") from error


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = load_tensors(path, "backbone weights file", ". Check model.weights_path.")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path} does not hold a state dict (found {type(state).__name__}).")
    return state


def _mismatches(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> list[str]:
    """Missing keys and shape mismatches, in the model's key order."""
    problems = []
    for key, value in expected.items():
        if key not in found:
            problems.append(f"missing {key}")
        elif found[key].shape != value.shape:
            shapes = f"{tuple(found[key].shape)} in file, {tuple(value.shape)} expected"
            problems.append(f"{key}: shape {shapes}")
    return problems


def load_backbone_file(backbone: nn.Module, path: str | Path, keys: str) -> None:
    """Load a local file into ``backbone``; ``keys`` names its key scheme: ``torchvision`` or
    ``ferplus``.

    Any missing key or shape mismatch is a `UserError` naming the file and the first problems.
    """
    path = Path(path)
    found = _read_state_dict(path)
    ours = {
        key: value
        for key, value in backbone.state_dict().items()
        if not key.endswith("num_batches_tracked") and not key.startswith("fc.")
    }
    key_map = ferplus_key_map(backbone) if keys == "ferplus" else {key: key for key in ours}
    problems = _mismatches({key_map[key]: value for key, value in ours.items()}, found)
    if problems:
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise UserError(
            f"backbone weights file {path} does not fit a {keys}-keyed "
            f"{type(backbone).__name__}: {shown}{more}."
        )
    backbone.load_state_dict({key: found[key_map[key]] for key in ours}, strict=False)
