"""The multitask CNN of Figure 2: a backbone, an EXPR head (7 logits), a VA head (40 logits)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from abaw_lightning.models.backbone import Architecture, Backbone, Layout
from abaw_lightning.models.batchnorm import BatchNormMode, norm_layers, part_statistics
from abaw_lightning.models.heads import Head
from abaw_lightning.models.weights import Weights

NUM_EXPR = 7
NUM_VA_LOGITS = 40
"""20 valence bins then 20 arousal bins."""


class MultitaskCNN(nn.Module):
    """Images -> logits ``expr`` [N, 7], ``va`` [N, 40] and head features ``*_feature`` [N, 128].

    ``batchnorm``: ``per_part`` (as released) normalises each part of a training batch with its
    own statistics when `forward` is given ``part_sizes``; ``joint`` always uses the whole batch.
    ``layout``: the backbone's computation (None: from ``weights``, see `Backbone`).
    """

    def __init__(
        self,
        arch: Architecture = "resnet50",
        weights: Weights = "none",
        weights_path: str | None = None,
        dropout: float = 0.5,
        batchnorm: BatchNormMode = "per_part",
        layout: Layout | None = None,
    ) -> None:
        super().__init__()
        self.settings = {
            "arch": arch,
            "weights": weights,
            "weights_path": weights_path,
            "dropout": dropout,
            "batchnorm": batchnorm,
        }
        """The constructor's arguments: stage checkpoints record them to rebuild this network."""
        self.batchnorm = batchnorm
        norm1d, norm2d = norm_layers(batchnorm)
        self.backbone = Backbone(arch, weights, weights_path, layout, norm2d)
        self.settings["layout"] = self.backbone.layout  # resolved: the network it computes
        self.expr_head = Head(self.backbone.num_features, NUM_EXPR, dropout, norm1d)
        self.va_head = Head(self.backbone.num_features, NUM_VA_LOGITS, dropout, norm1d)

    @classmethod
    def check_settings(
        cls, dropout: float = 0.5, weights: str = "none", **settings: object
    ) -> None:
        """Raise ValueError for settings that would fail only when the network is built."""
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout} must lie in [0, 1)")
        if weights in ("file", "ferplus") and not settings.get("weights_path"):
            raise ValueError(f"weights_path=null: weights={weights} reads its file from it")

    def forward(self, images: Tensor, part_sizes: Sequence[int] | None = None) -> dict[str, Tensor]:
        """``part_sizes``: the batch is consecutive parts of these sizes (per-part BatchNorm)."""
        with part_statistics(self, part_sizes):
            pooled = self.backbone(images)
            expr, expr_feature = self.expr_head(pooled)
            va, va_feature = self.va_head(pooled)
        return {"expr": expr, "va": va, "expr_feature": expr_feature, "va_feature": va_feature}
