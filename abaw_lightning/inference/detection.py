"""Face detection for inference: a pluggable detector (RGB image -> boxes with optional scores),
OpenCV's bundled Haar cascade by default, and square face crops cut like the training crops."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from abaw_lightning.data.ingest.crops import Square, crop
from abaw_lightning.errors import UserError

Box = tuple[int, int, int, int]
"""A face box ``(x, y, width, height)`` in pixels of the full image."""

Detector = Callable[[np.ndarray], Iterable[Sequence[float]]]
"""Any callable taking an RGB uint8 [H, W, 3] image and returning its face boxes, each
``(x, y, w, h)`` or ``(x, y, w, h, score)`` (higher: more confident); without scores, the most
confident first."""

HAAR_FILE = "haarcascade_frontalface_default.xml"
MARGIN = 0.1
"""Margin added on each side of a detected box, as a fraction of its side."""


class Detection(NamedTuple):
    """One detected face: its box in pixels and the detector's score (NaN when it gives none)."""

    x: int
    y: int
    w: int
    h: int
    score: float = math.nan

    @property
    def box(self) -> Box:
        return (self.x, self.y, self.w, self.h)


def as_detections(boxes: Iterable[Sequence[float]]) -> list[Detection]:
    """A detector's output as Detections, most confident first: by score when every box has one,
    else in the detector's order; a malformed box is a UserError saying what is expected."""
    found = []
    for index, box in enumerate(boxes):
        try:
            values = [float(value) for value in box]
        except (TypeError, ValueError):
            values = []
        if len(values) in (4, 5):
            x, y, w, h = (round(value) for value in values[:4])
            if w >= 1 and h >= 1:
                found.append(Detection(x, y, w, h, values[4] if len(values) == 5 else math.nan))
                continue
        raise UserError(
            f"the face detector returned {box!r} as box {index}: expected (x, y, w, h) or "
            "(x, y, w, h, score) in pixels, with w and h at least 1"
        )
    if found and not any(math.isnan(face.score) for face in found):
        found.sort(key=lambda face: -face.score)
    return found


class HaarDetector:
    """OpenCV's bundled frontal-face Haar cascade (no download): Detections scored by the
    cascade's final-stage weight (not a probability; a larger false detection scores lower than
    a real face), most confident first; large images are detected on a copy whose longer side is
    at most `max_side`, for speed."""

    def __init__(
        self,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 24,
        max_side: int = 640,
        cascade: str | Path | None = None,
    ) -> None:
        path = Path(cascade) if cascade else Path(cv2.data.haarcascades) / HAAR_FILE
        self.classifier = cv2.CascadeClassifier(str(path))
        if self.classifier.empty():
            raise UserError(
                f"cannot load the Haar cascade {path}: reinstall opencv-python-headless"
            )
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.max_side = max_side

    def __call__(self, image: np.ndarray) -> list[Detection]:
        scale = min(1.0, self.max_side / max(image.shape[:2]))
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        found, _, weights = self.classifier.detectMultiScale3(
            gray,
            self.scale_factor,
            self.min_neighbors,
            minSize=(self.min_size, self.min_size),
            outputRejectLevels=True,
        )
        boxes = np.reshape(found, (-1, 4)) / scale
        scores = np.ravel(weights).astype(float)
        return as_detections([*box, score] for box, score in zip(boxes, scores, strict=True))


def face_square(box: Box, margin: float = MARGIN) -> Square:
    """The square on `box`'s centre (pixel-centre coordinates), `margin` of its side added."""
    x, y, width, height = box
    side = max(width, height) * (1 + 2 * margin)
    return Square(x + (width - 1) / 2, y + (height - 1) / 2, float(side))


def crop_face(image: np.ndarray, box: Box, margin: float = MARGIN) -> np.ndarray:
    """The face crop of an image (black where the square leaves the image), cut and stored as
    the training crops of ExpW and AffectNet: at the face's own resolution, at least the
    training resize, so that the validation transform only downsamples."""
    return crop(image, face_square(box, margin))
