"""Plain nn.Modules: the ResNet backbone, the task heads and the multitask CNN."""

from abaw_lightning.models.backbone import Backbone
from abaw_lightning.models.heads import Head
from abaw_lightning.models.multitask import MultitaskCNN

__all__ = ["Backbone", "Head", "MultitaskCNN"]
