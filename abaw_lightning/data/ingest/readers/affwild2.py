"""Aff-Wild2 (ABAW 2021 release): per-video EXPR / VA annotation files and cropped_aligned jpgs."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import numpy as np

from abaw_lightning.data.ingest.readers import (
    AFFWILD2_IMAGES,
    Read,
    Skipped,
    frame_table,
    read_text_lines,
    require_dir,
)
from abaw_lightning.errors import UserError

Task = Literal["expr", "va"]
Split = Literal["train", "val"]

TASK_DIRS = {"expr": "EXPR_Set", "va": "VA_Set"}
SPLIT_DIRS = {"train": ("Train_Set", "Training_Set"), "val": ("Validation_Set",)}
"""Accepted split folder names, first found wins (the 2020 release said `Training_Set`)."""

HEADERS = {
    "expr": "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise",
    "va": "valence,arousal",
}
VA_MISSING = -5.0


def annotations_dir(root: Path) -> Path:
    """`<root>/annotations`, or `<root>/annotations/annotations` as some archives unpack."""
    base = require_dir(
        root / "annotations",
        "Aff-Wild2 annotations",
        "--affwild2 must be the folder that holds annotations/ and cropped_aligned/.",
    )
    nested = base / "annotations"
    return nested if nested.is_dir() and not (base / "EXPR_Set").is_dir() else base


def split_dir(root: Path, task: Task, split: Split) -> Path:
    """Folder of one task's annotation files for one split; a UserError names what is missing."""
    task_dir = require_dir(
        annotations_dir(root) / TASK_DIRS[task],
        f"Aff-Wild2 {TASK_DIRS[task]}",
        "Unpack the ABAW 2021 annotations archive there.",
    )
    for name in SPLIT_DIRS[split]:
        if (task_dir / name).is_dir():
            return task_dir / name
    raise UserError(
        f"Aff-Wild2 {split} split not found: {task_dir} has none of {', '.join(SPLIT_DIRS[split])}."
    )


def images_dir(root: Path) -> Path:
    """`<root>/cropped_aligned`, the organisers' face crops."""
    return require_dir(
        root / "cropped_aligned",
        "Aff-Wild2 cropped_aligned",
        "Unpack the cropped_aligned archive next to annotations/.",
    )


def _parse_expr(fields: list[str]) -> tuple[int, float, float] | str:
    """(expr, nan, nan), or the skip reason."""
    if len(fields) != 1:
        return "unparsable line"
    try:
        value = float(fields[0])
    except ValueError:
        return "unparsable line"
    if value == -1:
        return "not annotated (-1)"
    if not value.is_integer() or not 0 <= value <= 6:
        return "expression outside 0-6"
    return int(value), math.nan, math.nan


def _parse_va(fields: list[str]) -> tuple[int, float, float] | str:
    """(-1, valence, arousal), or the skip reason."""
    if len(fields) != 2:
        return "unparsable line"
    try:
        valence, arousal = float(fields[0]), float(fields[1])
    except ValueError:
        return "unparsable line"
    if VA_MISSING in (valence, arousal):
        return "not annotated (-5)"
    if not (-1 <= valence <= 1 and -1 <= arousal <= 1):
        return "valence/arousal outside [-1, 1]"
    return -1, valence, arousal


PARSERS = {"expr": _parse_expr, "va": _parse_va}


def read_annotation_file(
    path: Path, task: Task, skipped: Skipped
) -> list[tuple[int, int, float, float]]:
    """Labelled frames (1-based frame, expr, valence, arousal) of one file; bad lines counted."""
    lines = read_text_lines(path)
    if not lines or lines[0].replace(" ", "").strip().lower() != HEADERS[task].lower():
        found = repr(lines[0].strip()) if lines else "an empty file"
        raise UserError(
            f"{path}:1: expected the {TASK_DIRS[task]} header {HEADERS[task]!r}, found {found}. "
            f"Is this file in the right folder?"
        )
    parse = PARSERS[task]
    frames = []
    for number, line in enumerate(lines[1:], start=1):
        parsed = parse(line.replace(" ", "").strip().split(","))
        if isinstance(parsed, str):
            skipped.add(parsed, f"{path}:{number + 1}")
        else:
            frames.append((number, *parsed))
    return frames


def read_affwild2(root: Path | str, task: Task, split: Split) -> Read:
    """Labelled frames that have a jpg, of every video of one task and split, in stem/frame order.

    Frames annotated but without a jpg are skipped and counted; jpgs past the last line are ignored.
    """
    root = Path(root)
    folder = split_dir(root, task, split)
    images = images_dir(root)
    skipped = Skipped()
    records: dict[str, list] = {c: [] for c in ("image", "video", "frame", "expr", "va")}
    for path in sorted(folder.glob("*.txt")):
        stem = path.stem
        frames = read_annotation_file(path, task, skipped)
        try:
            jpgs = set(os.listdir(images / stem))
        except OSError:
            jpgs = set()
        for frame, expr, valence, arousal in frames:
            name = f"{frame:05d}.jpg"
            if name not in jpgs:
                skipped.add("annotated frame has no jpg", f"{images / stem / name}")
                continue
            records["image"].append(f"{AFFWILD2_IMAGES}/{stem}/{name}")
            records["video"].append(stem)
            records["frame"].append(frame)
            records["expr"].append(expr)
            records["va"].append((valence, arousal))
    va = np.array(records.pop("va"), dtype=np.float64).reshape(-1, 2)
    table = frame_table(
        {**records, "source": ["affwild2"] * len(va), "valence": va[:, 0], "arousal": va[:, 1]}
    )
    return Read(table, skipped)
