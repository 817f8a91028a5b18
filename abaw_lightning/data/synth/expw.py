"""ExpW writer: scene images with one to three faces and `label/label.lst` (8 fields per face)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abaw_lightning.data.synth.faces import CLASS_PRIOR, EXPR_VA_MEAN, Affect, random_identity
from abaw_lightning.data.synth.output import job_rng, lines_text, write_image, write_text
from abaw_lightning.data.synth.scales import Scale
from abaw_lightning.data.synth.scenes import MILD, background, draw_frame, finish

EXPW_FROM_AFFWILD2 = (6, 0, 1, 2, 3, 4, 5)
"""Aff-Wild2 class -> ExpW label (ExpW: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise,
6 neutral)."""

WORDS = ("angry", "disgusted", "fearful", "happy", "sad", "surprised", "neutral")
QUERIES = ("actor", "boy", "girl", "man", "woman", "family", "crowd", "teacher", "player")


@dataclass(frozen=True)
class ImagePlan:
    """One ExpW image: how many faces, and whether its file is left out (listed but missing)."""

    index: int
    faces: int
    missing: bool


def plan_images(scale: Scale) -> list[ImagePlan]:
    """Every 6th image has two faces, every 15th three; image 3 is listed but not written."""
    plans = []
    for i in range(scale.expw_images):
        faces = 3 if i % 15 == 7 else 2 if i % 6 == 1 else 1
        plans.append(ImagePlan(i, faces, missing=i == 3))
    return plans


def render_image(root: Path, seed: int, plan: ImagePlan) -> dict:
    """Draw and write one image; return its label lines (expression in Aff-Wild2 order kept too)."""
    rng = job_rng(seed, "expw", plan.index)
    height = int(rng.integers(160, 260))
    width = int(rng.integers(max(180, 110 * plan.faces), max(181, 130 * plan.faces) + 60))
    image = background(rng, height, width)
    column = width // plan.faces
    faces = []
    for face_id in range(plan.faces):
        expr = int(rng.choice(7, p=CLASS_PRIOR))
        va = np.clip(EXPR_VA_MEAN[expr] + rng.normal(0, 0.25, 2), -1, 1)
        size = int(rng.integers(56, min(column - 4, height - 4, 120) + 1))
        left = face_id * column + int(rng.integers(0, column - size + 1))
        top = int(rng.integers(0, height - size + 1))
        draw_frame(image, rng, random_identity(rng), Affect(expr, *va), (left, top, size), MILD)
        confidence = float(
            rng.choice([rng.uniform(0.3, 1.0), rng.uniform(1.0, 80.0)], p=[0.1, 0.9])
        )
        faces.append(
            {
                "face_id": face_id,
                "box": (top, left, left + size, top + size),
                "confidence": confidence,
                "expr": expr,
            }
        )
    word = WORDS[EXPW_FROM_AFFWILD2[faces[0]["expr"]]]
    name = f"{word}_{QUERIES[plan.index % len(QUERIES)]}_{plan.index + 1}.jpg"
    pixels = finish(image, rng, MILD)
    if not plan.missing:
        write_image(root / "image" / "origin" / name, pixels)
    lines = [
        f"{name} {f['face_id']} {' '.join(map(str, f['box']))} {f['confidence']:.4f} "
        f"{EXPW_FROM_AFFWILD2[f['expr']]}"
        for f in faces
    ]
    return {
        "name": name,
        "lines": lines,
        "expr": [f["expr"] for f in faces],
        "missing": plan.missing,
    }


def record(root: Path, results: list[dict]) -> dict:
    """Write `label/label.lst` and describe the quirks and the expected kept faces."""
    lines = [line for r in results for line in r["lines"]]
    write_text(root / "label" / "label.lst", lines_text(lines))
    classes = [0] * 7
    for r in results:
        if not r["missing"]:
            for expr in r["expr"]:
                classes[expr] += 1
    confidences = [float(line.split(" ")[6]) for line in lines]
    return {
        "quirks": {
            "multi_face_images": [r["name"] for r in results if len(r["lines"]) > 1],
            "missing_images": [r["name"] for r in results if r["missing"]],
            "confidence_above_1": sum(c > 1 for c in confidences),
        },
        "expected": {
            "lines": len(lines),
            "images": len(results),
            "kept_faces": sum(classes),
            "class_counts": classes,
        },
    }
