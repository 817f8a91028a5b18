"""Backgrounds and per-frame nuisance (jitter, lighting, noise, occlusion) around drawn faces.

The nuisance is strong on purpose: a single Aff-Wild2 frame is ambiguous (colour casts compete with
the expression tint, occluders hide the mouth or the eyes), while the label changes slowly, so a
temporal model over a window of frames has something to gain over a per-frame CNN.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from abaw_lightning.data.synth.faces import Affect, Identity, draw_face, face_matrix

CROP = 112
"""Side of the Aff-Wild2 aligned crops."""


@dataclass(frozen=True)
class Nuisance:
    """Strength of the per-frame disturbances."""

    shift: float
    angle: float
    cast: float
    noise: float
    occlusion: float


STRONG = Nuisance(shift=0.045, angle=6.0, cast=30.0, noise=14.0, occlusion=0.3)
"""Aff-Wild2 video frames."""

MILD = Nuisance(shift=0.0, angle=0.0, cast=12.0, noise=5.0, occlusion=0.0)
"""Still images of ExpW, AffectNet and AFEW-VA ("in the wild", but each face is labelled alone)."""


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A cluttered backdrop: a colour gradient with a few muted rectangles and discs."""
    top, bottom = rng.uniform(30, 220, 3), rng.uniform(30, 220, 3)
    ramp = np.linspace(0, 1, height)[:, None, None]
    image = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3)).copy()
    for _ in range(int(rng.integers(2, 6))):
        color = tuple(float(c) for c in rng.uniform(40, 200, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(max(4, min(height, width) // 8), max(5, min(height, width) // 3)))
        if rng.random() < 0.5:
            cv2.rectangle(image, (x, y), (x + size, y + size // 2), color, -1)
        else:
            cv2.circle(image, (x, y), size // 2, color, -1)
    return image


def occlude(image: np.ndarray, rng: np.random.Generator, matrix: np.ndarray) -> None:
    """Cover the upper, lower, left or right part of the face with a hand-like blob (in place)."""
    region = int(rng.integers(0, 4))
    boxes = {0: (0.2, 0.3, 0.8, 0.52), 1: (0.25, 0.62, 0.75, 0.95), 2: (0.1, 0.3, 0.5, 0.9)}
    x0, y0, x1, y1 = boxes.get(region, (0.5, 0.3, 0.9, 0.9))
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    corners = corners + rng.uniform(-0.04, 0.04, corners.shape)
    pixels = corners @ matrix[:, :2].T + matrix[:, 2]
    color = tuple(float(c) for c in rng.uniform(40, 220, 3))
    cv2.fillPoly(image, [np.round(pixels).astype(np.int32)], color, cv2.LINE_AA)


def finish(image: np.ndarray, rng: np.random.Generator, nuisance: Nuisance) -> np.ndarray:
    """Lighting (gain, colour cast, side light), sensor noise, then 8-bit BGR."""
    width = image.shape[1]
    gain = rng.uniform(0.75, 1.25)
    cast = rng.uniform(-nuisance.cast, nuisance.cast, 3)
    side = rng.uniform(-0.25, 0.25) * np.linspace(-1, 1, width)[None, :, None]
    out = image * gain * (1 + side) + cast
    if nuisance.noise:
        out = out + rng.normal(0, nuisance.noise, image.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def draw_frame(
    image: np.ndarray,
    rng: np.random.Generator,
    identity: Identity,
    affect: Affect,
    box: tuple[float, float, float],
    nuisance: Nuisance,
    angle: float = 0.0,
) -> np.ndarray:
    """Draw one jittered, maybe occluded face whose aligned box is (x, y, size), rolled by `angle`
    degrees; return its 68 landmarks in pixels."""
    x, y, size = box
    dx, dy = rng.normal(0, nuisance.shift * size, 2)
    scale = 1 + rng.normal(0, nuisance.shift)
    matrix = face_matrix(
        x + dx - size * (scale - 1) / 2,
        y + dy - size * (scale - 1) / 2,
        size * scale,
        angle + float(rng.normal(0, nuisance.angle)),
    )
    landmarks = draw_face(image, matrix, identity, affect)
    if rng.random() < nuisance.occlusion:
        occlude(image, rng, matrix)
    return landmarks


def render_crop(
    rng: np.random.Generator,
    identity: Identity,
    affect: Affect,
    backdrop: np.ndarray,
    nuisance: Nuisance = STRONG,
) -> np.ndarray:
    """One 112x112 aligned crop: the face fills the box, drawn over `backdrop` (float, 112x112)."""
    image = backdrop.copy()
    draw_frame(image, rng, identity, affect, (0.0, 0.0, float(CROP)), nuisance)
    return finish(image, rng, nuisance)
