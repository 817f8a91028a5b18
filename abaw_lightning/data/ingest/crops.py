"""Square JPEG face crops (box, landmark square, eye-aligned; METHOD.md section 1), in a process
pool, resumable: a crop already on disk is reused only when it decodes at the expected size."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from abaw_lightning.data.ingest.image_files import jpeg_problem
from abaw_lightning.data.ingest.pool import map_with_progress

CROP_FORMAT = 2
"""Version of the crop rule; crops of another version (or of none: the 112x112 stretched crops of
format 1) are redone. Bump it whenever the pixels a job produces change."""
CROP_MIN = 134
"""Smallest stored side: the training resize (`transforms.RESIZE`, not imported: pool workers
would import albumentations and torch), so training never upsamples a stored crop."""
CROP_MAX = 2 * CROP_MIN
"""Largest stored side (268): the training resize to 134 is then at most a 2x reduction, where
OpenCV's bilinear resize still averages every source pixel; more would only cost disk and decode."""
JPEG_QUALITY = 95
LANDMARK_MARGIN = 0.05
"""Margin added on each side of the landmarks' bounding square (AffectNet crops)."""

LEFT_EYE_CORNERS = (36, 39)
RIGHT_EYE_CORNERS = (42, 45)
MOUTH_CORNERS = (48, 54)
FORMAT_MARKER = ".crop_format"
"""File in each source's crop folder naming the CROP_FORMAT of the crops in it."""


class Square(NamedTuple):
    """A square face region: centre (x, y) in pixel-centre coordinates (pixel i spans i +- 0.5),
    side in pixels, and the image rotation in degrees (counter-clockwise as displayed) that makes
    the region axis-aligned."""

    x: float
    y: float
    side: float
    angle: float = 0.0


class CropJob(NamedTuple):
    """One crop to make: read `src`, cut `square`, write it as a square JPEG `dst`."""

    src: str
    dst: str
    square: Square


def box_square(top: int, left: int, right: int, bottom: int) -> Square:
    """The centred square of an integer box (pixel rows top..bottom-1, columns left..right-1) with
    the box's shorter side: the released resize-shorter-side-then-crop, never a stretch."""
    side = max(1, min(right - left, bottom - top))
    top, left = top + (bottom - top - side) // 2, left + (right - left - side) // 2
    return Square(left + (side - 1) / 2, top + (side - 1) / 2, float(side))


def landmark_square(landmarks: np.ndarray, margin: float = LANDMARK_MARGIN) -> Square:
    """The square around the landmarks' bounding box, `margin` of its side added on each side."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    return Square((x0 + x1) / 2, (y0 + y1) / 2, float(side))


def eye_aligned_square(landmarks: np.ndarray) -> Square:
    """METHOD.md's AFEW-VA crop: eyes level, square centred between eye centre and mouth centre.

    Eye centres are the midpoints of the eye corners (36, 39) and (42, 45), the mouth centre the
    midpoint of (48, 54); after the rotation the side is 2 x max(horizontal eye distance, vertical
    eye-to-mouth distance).
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    left, right, mouth = (
        points[list(pair)].mean(axis=0)
        for pair in (LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS, MOUTH_CORNERS)
    )
    eyes = (left + right) / 2
    axis = right - left
    eye_distance = float(np.hypot(*axis))
    angle = math.atan2(axis[1], axis[0])
    # the eye-to-mouth vector's component across the eye axis: its vertical extent once level
    to_mouth = mouth - eyes
    vertical = abs(-math.sin(angle) * to_mouth[0] + math.cos(angle) * to_mouth[1])
    centre = (eyes + mouth) / 2
    return Square(
        float(centre[0]), float(centre[1]), 2 * max(eye_distance, vertical), math.degrees(angle)
    )


def stored_side(square: Square) -> int:
    """Side of the stored crop: the region's own pixels, kept within [CROP_MIN, CROP_MAX]."""
    return min(max(round(square.side), CROP_MIN), CROP_MAX)


def crop(image: np.ndarray, square: Square) -> np.ndarray:
    """The stored crop of a BGR image: `square` cut at its native resolution (black outside the
    image), then resized to `stored_side` (area filter down, bilinear up)."""
    side = max(square.side, 1.0)
    native = round(side)
    matrix = cv2.getRotationMatrix2D((square.x, square.y), square.angle, native / side)
    matrix[:, 2] += (native - 1) / 2 - np.array([square.x, square.y])
    region = cv2.warpAffine(
        image, matrix, (native, native), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0)
    )
    size = stored_side(square)
    if size == native:
        return region
    interpolation = cv2.INTER_AREA if native > size else cv2.INTER_LINEAR
    return cv2.resize(region, (size, size), interpolation=interpolation)


def decode_source(path: str) -> np.ndarray | None:
    """BGR uint8 image, or None when the file is missing, corrupt, truncated or not an image."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0 or (data[:2].tobytes() == b"\xff\xd8" and jpeg_problem(data.tobytes())):
        return None
    try:
        return cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:
        return None


def crop_problem(path: str, size: int) -> str | None:
    """Why the crop file at `path` cannot be reused (None: a complete size x size colour JPEG)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return f"unreadable ({error.strerror})"
    problem = jpeg_problem(data)
    if problem is not None:
        return problem
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return "JPEG does not decode"
    if image.shape[:2] != (size, size):
        return f"{image.shape[1]}x{image.shape[0]}, expected {size}x{size}"
    return None


MADE, REUSED, REDONE = "made", "reused", "redone"


def make_one(job: CropJob) -> str:
    """Make one crop unless a valid one is there: MADE, REUSED, REDONE (the file there was not a
    valid crop of the expected size), or the reason it could not be made."""
    existed = os.path.exists(job.dst)
    if existed and crop_problem(job.dst, stored_side(job.square)) is None:
        return REUSED
    image = decode_source(job.src)
    if image is None:
        return "corrupt or unreadable image"
    ok, encoded = cv2.imencode(
        ".jpg", crop(image, job.square), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        return "could not encode crop"
    dst = Path(job.dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(f".{dst.name}.{os.getpid()}.part")
    partial.write_bytes(encoded.tobytes())
    os.replace(partial, dst)
    return REDONE if existed else MADE


@dataclass
class CropReport:
    """Outcome of `make_crops`: crops written anew, valid crops found on disk, crops on disk that
    were stale or invalid and were made again, and failures (dst -> reason)."""

    made: int = 0
    reused: int = 0
    redone: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def make_crops(jobs: Sequence[CropJob], workers: int = 1, label: str = "cropping") -> CropReport:
    """Make every crop that is not on disk as a valid crop, with `workers` processes and a progress
    bar (the check of a crop on disk runs in the workers too)."""
    report = CropReport()
    outcomes = map_with_progress(make_one, jobs, workers=workers, label=label)
    for job, outcome in zip(jobs, outcomes, strict=True):
        if outcome == MADE:
            report.made += 1
        elif outcome == REUSED:
            report.reused += 1
        elif outcome == REDONE:
            report.redone += 1
        else:
            report.failed[job.dst] = outcome
    return report


def clear_stale_crops(folder: Path) -> int:
    """Make `folder` a crop folder of this CROP_FORMAT: when its marker names another format (or
    none: format 1 wrote none), delete its crops first. Returns the number of files deleted."""
    marker = folder / FORMAT_MARKER
    try:
        current = marker.read_text().strip() == str(CROP_FORMAT)
    except OSError:
        current = False
    deleted = 0
    if not current and folder.exists():
        deleted = sum(len(files) for _, _, files in os.walk(folder))
        shutil.rmtree(folder)
    if not current:
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{CROP_FORMAT}\n")
    return deleted


def remove_partial_crops(folder: Path) -> None:
    """Delete the temporary files of crops whose writing a killed run left behind."""
    for parent, _, files in os.walk(folder):
        for name in files:
            if name.startswith(".") and name.endswith(".part"):
                os.remove(os.path.join(parent, name))
