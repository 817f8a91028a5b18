"""LightningModules of the training stages (CNN teacher/student; GRU teacher/student)."""

from abaw_lightning.stages.cnn import CnnStudent, CnnTeacher

__all__ = ["CnnStudent", "CnnTeacher"]
