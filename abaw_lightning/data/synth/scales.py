"""How much data each `--scale` writes."""

from __future__ import annotations

from dataclasses import dataclass

GROUPS = (
    "both_train",
    "expr_train_va_validation",
    "va_train_expr_validation",
    "expr_train",
    "va_train",
    "both_validation",
    "expr_validation",
    "va_validation",
)
"""Aff-Wild2 video roles: which task annotates the stem, and in which split."""

SPLITS = {
    "both_train": ("train", "train"),
    "expr_train_va_validation": ("train", "validation"),
    "va_train_expr_validation": ("validation", "train"),
    "expr_train": ("train", None),
    "va_train": (None, "train"),
    "both_validation": ("validation", "validation"),
    "expr_validation": ("validation", None),
    "va_validation": (None, "validation"),
}
"""Group -> (EXPR split, VA split); None = no annotation file for that task."""


@dataclass(frozen=True)
class Scale:
    """Sizes of the four synthetic datasets."""

    groups: tuple[int, ...]
    frames: tuple[int, int]
    test_videos: int
    expw_images: int
    afew_clips: int
    afew_frames: int
    affectnet_train: int
    affectnet_validation_per_code: int


SCALES = {
    "tiny": Scale((2, 1, 1, 1, 1, 1, 1, 1), (16, 28), 2, 16, 3, 8, 30, 1),
    "small": Scale((6, 2, 2, 6, 6, 4, 4, 4), (80, 200), 4, 240, 6, 40, 240, 6),
    "medium": Scale((36, 10, 10, 36, 36, 24, 24, 24), (100, 300), 12, 1800, 40, 60, 1800, 40),
}
"""`tiny` is for tests (every quirk still present); `small` is the demo default."""

SCALE_USES = {
    "tiny": "seconds; for tests and `abaw demo --scale tiny`",
    "small": "the default; the CPU demo, about 20 s",
    "medium": "about 8 times small",
}
"""What each scale is for, shown by `abaw synth --help`."""


def describe(name: str) -> str:
    """One scale's sizes and use, from the sizes themselves (the help cannot drift from them)."""
    scale = SCALES[name]
    affectnet_rows = scale.affectnet_train + 11 * scale.affectnet_validation_per_code
    return (
        f"{name}: {sum(scale.groups)} Aff-Wild2 videos of {scale.frames[0]}-{scale.frames[1]} "
        f"frames (+{scale.test_videos} test), {scale.expw_images} ExpW images, "
        f"{scale.afew_clips} AFEW-VA clips of {scale.afew_frames} frames, {affectnet_rows} "
        f"AffectNet rows ({SCALE_USES[name]})"
    )
