"""112x112 JPEG face crops (box, landmark square, eye-aligned), in a process pool, resumable."""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import cv2
import numpy as np
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

CROP_SIZE = 112
JPEG_QUALITY = 95
LANDMARK_MARGIN = 0.05
"""Margin added on each side of the landmarks' bounding square (AffectNet crops)."""

LEFT_EYE = slice(36, 40)
RIGHT_EYE = slice(42, 46)
MOUTH_CORNERS = (48, 54)


class CropJob(NamedTuple):
    """One crop to make: read `src`, cut the face by `kind` and `params`, write JPEG `dst`.

    kind "box": params = (top, left, right, bottom) in pixels, the box is resized to 112x112.
    kind "affine": params = (m00, m01, m02, m10, m11, m12, side), the 2x3 matrix maps the image
    onto a side x side square that is then resized to 112x112.
    """

    src: str
    dst: str
    kind: Literal["box", "affine"]
    params: tuple[float, ...]


def landmark_square(landmarks: np.ndarray, margin: float = LANDMARK_MARGIN) -> tuple[float, ...]:
    """(top, left, right, bottom) of the square around the landmarks, `margin` of its side added."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    half = max(x1 - x0, y1 - y0) * (1 + 2 * margin) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (cy - half, cx - half, cx + half, cy + half)


def eye_aligned_affine(landmarks: np.ndarray) -> tuple[float, ...]:
    """Affine params of METHOD.md's AFEW-VA crop: eyes level, square centred between eyes and mouth.

    Eye centres are the means of landmarks 36-39 and 42-45, the mouth centre the midpoint of 48 and
    54; the side is 2 x max(eye distance, eye-centre-to-mouth-centre distance).
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    left, right = points[LEFT_EYE].mean(axis=0), points[RIGHT_EYE].mean(axis=0)
    eyes = (left + right) / 2
    mouth = points[list(MOUTH_CORNERS)].mean(axis=0)
    side = 2 * max(np.linalg.norm(right - left), np.linalg.norm(mouth - eyes))
    centre = (eyes + mouth) / 2
    angle = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1.0)
    matrix[:, 2] += side / 2 - centre
    return (*matrix.reshape(-1).tolist(), float(side))


def _padded_region(image: np.ndarray, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    """image[top:bottom, left:right], black where the region leaves the image."""
    height, width = image.shape[:2]
    region = np.zeros((bottom - top, right - left, 3), dtype=image.dtype)
    y0, y1, x0, x1 = max(top, 0), min(bottom, height), max(left, 0), min(right, width)
    if y1 > y0 and x1 > x0:
        region[y0 - top : y1 - top, x0 - left : x1 - left] = image[y0:y1, x0:x1]
    return region


def _resize(region: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    shrink = region.shape[0] > size or region.shape[1] > size
    return cv2.resize(
        region, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )


def crop(
    image: np.ndarray, kind: str, params: Sequence[float], size: int = CROP_SIZE
) -> np.ndarray:
    """The size x size face crop of a BGR image (see CropJob for `kind` and `params`)."""
    if kind == "box":
        top, left, right, bottom = params
        top_i, left_i = math.floor(top), math.floor(left)
        bottom_i = max(math.ceil(bottom), top_i + 1)
        right_i = max(math.ceil(right), left_i + 1)
        return _resize(_padded_region(image, top_i, left_i, bottom_i, right_i), size)
    if kind == "affine":
        matrix = np.asarray(params[:6], dtype=np.float64).reshape(2, 3)
        side = max(1, round(params[6]))
        square = cv2.warpAffine(
            image, matrix, (side, side), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0)
        )
        return _resize(square, size)
    raise ValueError(f"unknown crop kind {kind!r}")


def read_image(path: str) -> np.ndarray | None:
    """BGR uint8 image, or None when the file is missing, corrupt or not an image."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
        return cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except (OSError, cv2.error):
        return None


def make_one(job: CropJob) -> str | None:
    """Make one crop; None on success, else the reason it could not be made."""
    image = read_image(job.src)
    if image is None:
        return "corrupt or unreadable image"
    ok, encoded = cv2.imencode(
        ".jpg", crop(image, job.kind, job.params), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        return "could not encode crop"
    dst = Path(job.dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(f".{dst.name}.{os.getpid()}.part")
    partial.write_bytes(encoded.tobytes())
    os.replace(partial, dst)
    return None


@dataclass
class CropReport:
    """Outcome of `make_crops`: crops written, crops found on disk, and failures (dst -> reason)."""

    made: int = 0
    reused: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def _init_worker() -> None:
    """Pool worker setup: one OpenCV thread per process, no decoder warnings (failures are
    counted; the warnings would only garble the progress bar)."""
    cv2.setNumThreads(1)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def make_crops(jobs: Sequence[CropJob], workers: int = 1, label: str = "cropping") -> CropReport:
    """Make every crop not already on disk, with `workers` processes and a progress bar."""
    report = CropReport()
    todo = [job for job in jobs if not os.path.exists(job.dst)]
    report.reused = len(jobs) - len(todo)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task(label, total=len(todo))
        if workers <= 1 or len(todo) < 2:
            previous = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
            try:
                _collect(todo, map(make_one, todo), report, progress, task)
            finally:
                cv2.utils.logging.setLogLevel(previous)
        else:
            context = multiprocessing.get_context("spawn")
            with context.Pool(min(workers, len(todo)), initializer=_init_worker) as pool:
                chunk = max(1, min(64, len(todo) // (4 * workers)))
                _collect(todo, pool.imap(make_one, todo, chunksize=chunk), report, progress, task)
    return report


def _collect(
    todo: list[CropJob],
    results: Iterable[str | None],
    report: CropReport,
    progress: Progress,
    task: TaskID,
) -> None:
    """Tally each job's outcome into `report`, advancing the bar."""
    for job, reason in zip(todo, results, strict=True):
        if reason is None:
            report.made += 1
        else:
            report.failed[job.dst] = reason
        progress.advance(task)
