"""The multitask CNN of Figure 2: a backbone, an EXPR head (7 logits), a VA head (40 logits)."""

from __future__ import annotations

from torch import Tensor, nn

from abaw_lightning.models.backbone import Backbone
from abaw_lightning.models.heads import Head

NUM_EXPR = 7
NUM_VA_LOGITS = 40
"""20 valence bins then 20 arousal bins."""


class MultitaskCNN(nn.Module):
    """Images -> logits ``expr`` [N, 7], ``va`` [N, 40] and head features ``*_feature`` [N, 128]."""

    def __init__(
        self,
        arch: str = "resnet50",
        weights: str = "none",
        weights_path: str | None = None,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.settings = {
            "arch": arch,
            "weights": weights,
            "weights_path": weights_path,
            "dropout": dropout,
        }
        """The constructor's arguments: stage checkpoints record them to rebuild this network."""
        self.backbone = Backbone(arch, weights, weights_path)
        self.expr_head = Head(self.backbone.num_features, NUM_EXPR, dropout)
        self.va_head = Head(self.backbone.num_features, NUM_VA_LOGITS, dropout)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        pooled = self.backbone(images)
        expr, expr_feature = self.expr_head(pooled)
        va, va_feature = self.va_head(pooled)
        return {"expr": expr, "va": va, "expr_feature": expr_feature, "va_feature": va_feature}
