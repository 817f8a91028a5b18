"""The temporal model of Section 2.4: one bidirectional GRU per task over the CNN head features."""

from __future__ import annotations

from torch import Tensor, nn

from abaw_lightning.models.heads import HEAD_FEATURES
from abaw_lightning.models.multitask import NUM_EXPR, NUM_VA_LOGITS

TASK_OUTPUTS = {"expr": NUM_EXPR, "va": NUM_VA_LOGITS}
"""Task -> outputs per frame; also the order of the tasks on the feature axis."""


class TaskGRU(nn.Module):
    """``GRU(128, 64, bidirectional) -> ReLU -> Linear(128, n)``: one output per frame."""

    def __init__(self, num_outputs: int, hidden_size: int = 64, input_size: int = HEAD_FEATURES):
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, batch_first=True, bidirectional=True)
        self.classify = nn.Sequential(nn.ReLU(), nn.Linear(2 * hidden_size, num_outputs))

    def forward(self, features: Tensor) -> Tensor:
        sequence, _ = self.gru(features)
        return self.classify(sequence)


class TemporalModel(nn.Module):
    """Features [B, T, 2, 128] (EXPR then VA head feature) -> ``expr`` [B, T, 7], ``va`` [B, T, 40].

    The EXPR GRU reads the EXPR head feature and the VA GRU the VA head feature.
    """

    def __init__(self, hidden_size: int = 64) -> None:
        super().__init__()
        self.tasks = nn.ModuleDict(
            {task: TaskGRU(outputs, hidden_size) for task, outputs in TASK_OUTPUTS.items()}
        )

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        return {
            task: network(features[:, :, index])
            for index, (task, network) in enumerate(self.tasks.items())
        }
