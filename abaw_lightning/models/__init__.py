"""Plain nn.Modules: the ResNet backbone, the task heads, the multitask CNN and the GRU model."""

from abaw_lightning.models.backbone import Backbone
from abaw_lightning.models.heads import Head
from abaw_lightning.models.multitask import MultitaskCNN
from abaw_lightning.models.temporal import TaskGRU, TemporalModel

__all__ = ["Backbone", "Head", "MultitaskCNN", "TaskGRU", "TemporalModel"]
