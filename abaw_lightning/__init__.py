"""abaw-lightning: multitask multi-database facial-affect recognition (ABAW 2021)."""

from __future__ import annotations

from typing import Any

from abaw_lightning.schema import EXPR_CLASSES

__all__ = ["EXPR_CLASSES", "Predictor"]
__version__ = "0.1.0"

_LAZY = {"Predictor": "abaw_lightning.inference.predictor"}
"""Public names imported on first use, so that `import abaw_lightning` stays light (no torch)."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'abaw_lightning' has no attribute {name!r}")
