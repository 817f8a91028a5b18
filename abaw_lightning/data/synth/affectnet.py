"""AffectNet writer: `Manually_Annotated_Images/<subdir>/<hash>.jpg` and the two CSV file lists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abaw_lightning.data.synth.faces import EXPR_VA_MEAN, Affect, random_identity
from abaw_lightning.data.synth.output import (
    job_rng,
    lines_text,
    write_corrupt_image,
    write_image,
    write_text,
)
from abaw_lightning.data.synth.scales import Scale
from abaw_lightning.data.synth.scenes import MILD, background, draw_frame, finish

HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
    "expression,valence,arousal"
)
AFFWILD2_FROM_AFFECTNET = (0, 4, 5, 6, 3, 2, 1)
"""AffectNet code 0-6 -> Aff-Wild2 class."""

TRAIN_PRIOR = np.array([0.22, 0.3, 0.08, 0.05, 0.03, 0.02, 0.07, 0.03, 0.07, 0.06, 0.07])
"""Codes 0-10 in training.csv (Neutral and Happy dominate, like the release)."""

QUIRK_ROWS = {
    "null_landmarks": (2, 0),
    "missing_image": (4, 1),
    "corrupt_image": (6, 2),
    "tif_image": (7, 3),
    "bmp_image": (8, 6),
    "unannotated_va": (9, 0),
    "code_7": (10, 7),
    "code_8": (11, 8),
    "code_9": (12, 9),
    "code_10": (13, 10),
}
"""Quirk -> (0-based data row of training.csv, forced expression code)."""

DUPLICATE = (15, 5)
"""Data row 15 of training.csv repeats data row 5 exactly."""


@dataclass(frozen=True)
class RowPlan:
    """One CSV row: its file, position, code, and the quirk planted in it (if any)."""

    index: int
    split: str
    row: int
    code: int
    quirk: str | None = None


def plan_rows(rng: np.random.Generator, scale: Scale) -> list[RowPlan]:
    """Training rows with the quirks at fixed rows, then validation rows (codes 0-10 in turn)."""
    codes = rng.choice(11, scale.affectnet_train, p=TRAIN_PRIOR)
    by_row = {row: (quirk, code) for quirk, (row, code) in QUIRK_ROWS.items()}
    plans = []
    for row in range(scale.affectnet_train):
        if row == DUPLICATE[0]:
            continue
        quirk, code = by_row.get(row, (None, int(codes[row])))
        plans.append(RowPlan(len(plans), "training", row, code, quirk))
    for row in range(11 * scale.affectnet_validation_per_code):
        plans.append(RowPlan(len(plans), "validation", row, row % 11))
    return plans


def _va_text(value: float) -> str:
    return "-2" if value == -2 else f"{value:.6f}"


def render_row(root: Path, seed: int, plan: RowPlan) -> dict:
    """Draw and write the image of one row (unless it is the missing one); return the CSV line."""
    rng = job_rng(seed, "affectnet", plan.index)
    height, width = int(rng.integers(180, 300)), int(rng.integers(180, 300))
    image = background(rng, height, width)
    size = int(min(height, width) * rng.uniform(0.5, 0.8))
    x, y = int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
    expr = AFFWILD2_FROM_AFFECTNET[plan.code] if plan.code <= 6 else 0
    va = np.clip(EXPR_VA_MEAN[expr] + rng.normal(0, 0.3 if plan.code <= 6 else 0.5, 2), -1, 1)
    va = np.round(va, 6) + 0.0
    identity = random_identity(rng)
    angle = float(rng.uniform(-10, 10))
    landmarks = draw_frame(image, rng, identity, Affect(expr, *va), (x, y, size), MILD, angle)
    if plan.code == 10:
        image = background(rng, height, width)
    if plan.code in (9, 10) or plan.quirk == "unannotated_va":
        va = np.array([-2.0, -2.0])
    extension = {"tif_image": ".tif", "bmp_image": ".bmp"}.get(plan.quirk or "", ".jpg")
    name = f"{int(rng.integers(1, 1300))}/{rng.bytes(28).hex()}{extension}"
    pixels = finish(image, rng, MILD)
    path = root / "Manually_Annotated_Images" / name
    if plan.quirk == "corrupt_image":
        write_corrupt_image(path, pixels)
    elif plan.quirk != "missing_image":
        write_image(path, pixels)
    points = (
        "NULL"
        if plan.quirk == "null_landmarks"
        else ";".join(f"{v:.2f}" for v in landmarks.reshape(-1))
    )
    line = f"{name},{x},{y},{size},{size},{points},{plan.code},{_va_text(va[0])},{_va_text(va[1])}"
    return {"line": line, "name": name}


def record(root: Path, plans: list[RowPlan], results: list[dict]) -> dict:
    """Write both CSVs (header only in training.csv) and describe quirks and expected counts."""
    train = [r["line"] for p, r in zip(plans, results, strict=True) if p.split == "training"]
    train.insert(DUPLICATE[0], train[DUPLICATE[1]])
    validation = [r["line"] for p, r in zip(plans, results, strict=True) if p.split == "validation"]
    lists = root / "Manually_Annotated_file_lists"
    write_text(lists / "training.csv", lines_text([HEADER, *train]))
    write_text(lists / "validation.csv", lines_text(validation))
    quirks: dict = {
        quirk: {"file": "training.csv", "line": row + 2, "image": results[row]["name"]}
        for quirk, (row, _) in QUIRK_ROWS.items()
    }
    quirks["duplicate"] = {
        "file": "training.csv",
        "line": DUPLICATE[0] + 2,
        "duplicate_of_line": DUPLICATE[1] + 2,
    }
    broken = {"null_landmarks", "missing_image", "corrupt_image"}
    usable = {"training.csv": [0] * 7, "validation.csv": [0] * 7}
    with_va = dict.fromkeys(usable, 0)
    for plan in plans:
        if plan.code > 6 or plan.quirk in broken:
            continue
        key = f"{plan.split}.csv"
        usable[key][AFFWILD2_FROM_AFFECTNET[plan.code]] += 1
        with_va[key] += plan.quirk != "unannotated_va"
    return {
        "quirks": quirks,
        "expected": {
            "rows": {"training.csv": len(train), "validation.csv": len(validation)},
            "codes": {
                "training.csv": _code_counts(train),
                "validation.csv": _code_counts(validation),
            },
            "usable_rows": {k: sum(v) for k, v in usable.items()},
            "usable_rows_with_va": with_va,
            "usable_class_counts": usable,
        },
    }


def _code_counts(lines: list[str]) -> list[int]:
    counts = [0] * 11
    for line in lines:
        counts[int(line.split(",")[6])] += 1
    return counts
