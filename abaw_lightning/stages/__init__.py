"""LightningModules of the training stages: CNN teacher/student, GRU teacher/student."""

from abaw_lightning.stages.cnn import CnnStudent, CnnTeacher
from abaw_lightning.stages.gru import GruStudent, GruTeacher

__all__ = ["CnnStudent", "CnnTeacher", "GruStudent", "GruTeacher"]
