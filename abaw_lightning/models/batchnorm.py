"""BatchNorm with per-part statistics (METHOD.md §3): one forward over the concatenated parts that
normalises, and updates the running statistics, exactly as one forward per part would."""

from __future__ import annotations

import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

from abaw_lightning.errors import UserError

BatchNormMode = Literal["per_part", "joint"]
BATCHNORM_CHOICES = typing.get_args(BatchNormMode)
"""``per_part``: each part normalised with its own statistics (as released); ``joint``: shared."""


class _PartStatistics:
    """Mixin over a BatchNorm class: in training, with ``part_sizes`` set, each chunk of the batch
    goes through the plain BatchNorm on its own, in order (one running-statistics update each)."""

    part_sizes: tuple[int, ...] | None = None

    def forward(self, input: Tensor) -> Tensor:
        sizes = self.part_sizes
        if not self.training or sizes is None or len(sizes) < 2:
            return super().forward(input)
        plain = super().forward
        return torch.cat([plain(part) for part in input.split(sizes)])


class PartBatchNorm1d(_PartStatistics, nn.BatchNorm1d):
    """`nn.BatchNorm1d` with per-part statistics (same parameters, buffers and state-dict keys)."""


class PartBatchNorm2d(_PartStatistics, nn.BatchNorm2d):
    """`nn.BatchNorm2d` with per-part statistics (same parameters, buffers and state-dict keys)."""


def norm_layers(batchnorm: str) -> tuple[type[nn.BatchNorm1d], type[nn.BatchNorm2d]]:
    """The (1-d, 2-d) BatchNorm classes of a ``model.batchnorm`` choice."""
    if batchnorm == "per_part":
        return PartBatchNorm1d, PartBatchNorm2d
    if batchnorm == "joint":
        return nn.BatchNorm1d, nn.BatchNorm2d
    raise UserError(f"model.batchnorm must be one of {BATCHNORM_CHOICES}, got {batchnorm!r}")


@contextmanager
def part_statistics(module: nn.Module, sizes: Sequence[int] | None) -> Iterator[None]:
    """Within the block, every per-part BatchNorm of ``module`` treats its input batch as
    consecutive parts of ``sizes`` rows (None: one batch)."""
    layers = [layer for layer in module.modules() if isinstance(layer, _PartStatistics)]
    parts = None if sizes is None else tuple(int(size) for size in sizes)
    for layer in layers:
        layer.part_sizes = parts
    try:
        yield
    finally:
        for layer in layers:
            layer.part_sizes = None
