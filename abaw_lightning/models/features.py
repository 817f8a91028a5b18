"""The multitask CNN's two 128-d head features, the GRU stage's input: their order, and computing
them from images (directly, without a Trainer)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

HEADS = ("expr_feature", "va_feature")
"""Axis 2 of the cache: 0 = EXPR head feature, 1 = VA head feature."""


def head_features(model: nn.Module, images: Tensor, channels_last: bool = True) -> Tensor:
    """uint8 images [N, 3, H, W] -> the two 128-d head features [N, 2, 128] of a multitask CNN."""
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    outputs = model(images)
    return torch.stack([outputs[head] for head in HEADS], dim=1)


@torch.inference_mode()
def extract_online(
    model: nn.Module, images: Tensor, batch_size: int = 256, channels_last: bool = False
) -> np.ndarray:
    """Head features [N, 2, 128] (float32) of uint8 images [N, 3, H, W], computed directly."""
    model.eval()
    device = next(model.parameters()).device
    chunks = [
        head_features(model, chunk.to(device), channels_last).float().cpu()
        for chunk in images.split(batch_size)
    ]
    return torch.cat(chunks).numpy()
