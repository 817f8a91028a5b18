"""The per-output head of Figure 2: BN-FC128-ReLU-BN-Dropout(0.5)-FC."""

from __future__ import annotations

from torch import Tensor, nn

HEAD_FEATURES = 128


class Head(nn.Module):
    """One task head on the pooled backbone feature; also returns its 128-d feature.

    The feature is the activation after the second BatchNorm: the GRU stage's input.
    ``norm_layer`` is the class of both BatchNorms.
    """

    def __init__(
        self,
        in_features: int,
        num_outputs: int,
        dropout: float = 0.5,
        norm_layer: type[nn.BatchNorm1d] = nn.BatchNorm1d,
    ) -> None:
        super().__init__()
        self.embed = nn.Sequential(
            norm_layer(in_features),
            nn.Linear(in_features, HEAD_FEATURES),
            nn.ReLU(inplace=True),
            norm_layer(HEAD_FEATURES),
        )
        self.classify = nn.Sequential(nn.Dropout(dropout), nn.Linear(HEAD_FEATURES, num_outputs))

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        feature = self.embed(pooled)
        return self.classify(feature), feature
