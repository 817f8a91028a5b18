"""Face detection for inference: a pluggable detector (RGB image -> boxes), OpenCV's bundled Haar
cascade by default, and square face crops cut like the training crops."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from abaw_lightning.data.crops import CROP_SIZE, crop
from abaw_lightning.errors import UserError

Box = tuple[int, int, int, int]
"""A face box ``(x, y, width, height)`` in pixels of the full image."""

Detector = Callable[[np.ndarray], Sequence[Box]]
"""Any callable taking an RGB uint8 [H, W, 3] image and returning face boxes (x, y, w, h), the
most confident first: the first box is the face that is predicted."""

HAAR_FILE = "haarcascade_frontalface_default.xml"
MARGIN = 0.1
"""Margin added on each side of a detected box, as a fraction of its side."""


class HaarDetector:
    """OpenCV's bundled frontal-face Haar cascade (no download), boxes ordered by the cascade's
    confidence (its final-stage weight); large images are detected on a copy whose longer side is
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

    def __call__(self, image: np.ndarray) -> list[Box]:
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
        order = np.argsort(-np.ravel(weights), kind="stable")
        boxes = np.reshape(found, (-1, 4))[order]
        return [tuple(round(float(v) / scale) for v in box) for box in boxes]


def main_face(boxes: Sequence[Box]) -> Box | None:
    """The face to predict: the detector's first (most confident) box, or None without one."""
    return tuple(int(v) for v in boxes[0]) if len(boxes) else None


def square_box(box: Box, margin: float = MARGIN) -> tuple[float, float, float, float]:
    """(top, left, right, bottom): the square on `box`'s centre, `margin` of its side added."""
    x, y, width, height = box
    half = max(width, height) * (1 + 2 * margin) / 2
    cx, cy = x + width / 2, y + height / 2
    return (cy - half, cx - half, cx + half, cy + half)


def crop_face(image: np.ndarray, box: Box, margin: float = MARGIN) -> np.ndarray:
    """The 112x112 face crop of an RGB image (black where the square leaves the image), as the
    training crops were cut from ExpW and AffectNet boxes."""
    return crop(image, "box", square_box(box, margin), CROP_SIZE)
