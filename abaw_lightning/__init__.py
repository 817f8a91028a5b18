"""abaw-lightning: multitask multi-database facial-affect recognition (ABAW 2021)."""

__version__ = "0.1.0"

EXPR_CLASSES = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
"""Expression classes in the Aff-Wild2 order used everywhere in the project."""
