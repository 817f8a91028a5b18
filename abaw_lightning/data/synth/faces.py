"""Cartoon faces drawn with OpenCV whose features encode expression, valence and arousal.

A face lives in "unit" coordinates (the aligned crop is the unit square); a 2x3 affine matrix maps
it into any image, so the 68 landmarks returned always match what was drawn. Valence bends the mouth
and tilts the eyebrows, arousal opens the mouth and the eyes, and every expression class adds a skin
tint and a distinct mark (frown lines, nose wrinkles, sweat drops, rosy cheeks, tears, forehead
wrinkles).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

EXPRESSIONS = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
"""Aff-Wild2 class order, used for every label inside the generator."""

CLASS_PRIOR = np.array([0.34, 0.08, 0.06, 0.06, 0.2, 0.16, 0.1])
"""Class frequencies: Neutral first, then Happiness and Sadness, like the real data."""

EXPR_TINT = np.array(
    [
        [0, 0, 0],
        [-25, -25, 45],
        [-25, 35, -20],
        [40, -15, 25],
        [-35, 25, 35],
        [45, 5, -30],
        [20, 20, 20],
    ],
    dtype=np.float64,
)
"""Additive BGR skin tint per class."""

EXPR_VA_MEAN = np.array(
    [[0.0, 0.0], [-0.5, 0.6], [-0.6, 0.3], [-0.4, 0.7], [0.7, 0.4], [-0.6, -0.3], [0.3, 0.8]]
)
"""Typical (valence, arousal) per class, for labels that only carry an expression."""

_DARK = (40, 30, 30)
_SHIFT = 4
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Identity:
    """The fixed look of one person: colours and proportions."""

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    lip: tuple[float, float, float]
    iris: tuple[float, float, float]
    half_width: float
    half_height: float
    eye_gap: float
    hair_style: int


@dataclass(frozen=True)
class Affect:
    """What a face shows: expression class (Aff-Wild2 order), valence and arousal in [-1, 1]."""

    expr: int
    valence: float
    arousal: float


def random_identity(rng: np.random.Generator) -> Identity:
    """A random person: skin tone, hair colour, face proportions."""
    tone = rng.uniform(0.35, 1.0)
    skin = (60 + 120 * tone, 90 + 110 * tone, 120 + 110 * tone)
    hair = tuple(float(c) for c in rng.uniform(10, 110, 3))
    lip = (float(rng.uniform(60, 100)), float(rng.uniform(60, 100)), float(rng.uniform(150, 200)))
    iris = tuple(float(c) for c in rng.uniform(20, 120, 3))
    return Identity(
        skin=skin,
        hair=hair,
        lip=lip,
        iris=iris,
        half_width=float(rng.uniform(0.32, 0.37)),
        half_height=float(rng.uniform(0.41, 0.45)),
        eye_gap=float(rng.uniform(0.14, 0.16)),
        hair_style=int(rng.integers(0, 3)),
    )


def _mouth_curves(affect: Affect, xr: np.ndarray) -> dict[str, np.ndarray]:
    """Lip curves (y in unit coordinates) at relative positions xr in [-1, 1]."""
    curve = 0.07 * affect.valence
    mid = 0.76 - curve * xr**2 + curve / 2
    half_open = (0.004 + 0.075 * (affect.arousal + 1) / 2) / 2 * np.sqrt(np.clip(1 - xr**2, 0, 1))
    lip = 0.022 * (1 - 0.6 * xr**2)
    return {
        "upper_outer": mid - half_open - lip,
        "lower_outer": mid + half_open + lip,
        "upper_inner": mid - half_open,
        "lower_inner": mid + half_open,
    }


def _eye_half_height(affect: Affect) -> float:
    return 0.012 + 0.04 * (affect.arousal + 1) / 2


def _brow_y(affect: Affect, t: np.ndarray) -> np.ndarray:
    """Brow height at t in [0, 1] from outer (0) to inner (1) end: valence sets the slope."""
    base = 0.3 - (0.035 if affect.expr == 6 else 0.0)
    slope = -0.045 * affect.valence
    return base + slope * (2 * t - 1) - 0.015 * (1 - (2 * t - 1) ** 2)


def landmarks_unit(identity: Identity, affect: Affect) -> np.ndarray:
    """The 68 iBUG landmarks of the face in unit coordinates, Float[68, 2]."""
    pts = np.zeros((68, 2))
    w, h, cy = identity.half_width, identity.half_height, 0.52
    delta = np.arcsin(0.1 / h)
    phi = (np.pi + delta) - np.arange(17) * (np.pi + 2 * delta) / 16
    pts[0:17] = np.stack([0.5 + w * np.cos(phi), cy + h * np.sin(phi)], 1)
    t = np.linspace(0, 1, 5)
    gap = identity.eye_gap
    brow_x = np.linspace(0.5 - gap - 0.09, 0.5 - gap + 0.07, 5)
    pts[17:22] = np.stack([brow_x, _brow_y(affect, t)], 1)
    pts[22:27] = np.stack([1 - brow_x[::-1], _brow_y(affect, t[::-1])], 1)
    pts[27:31] = np.stack([np.full(4, 0.5), np.linspace(0.44, 0.6, 4)], 1)
    pts[31:36] = np.stack(
        [0.5 + np.array([-0.06, -0.03, 0, 0.03, 0.06]), [0.625, 0.64, 0.645, 0.64, 0.625]], 1
    )
    eh = _eye_half_height(affect) * np.sqrt(8 / 9)
    ew = 0.075
    for start, cx, sign in ((36, 0.5 - gap, 1), (42, 0.5 + gap, -1)):
        xs = cx + sign * ew * np.array([-1, -1 / 3, 1 / 3, 1, 1 / 3, -1 / 3])
        ys = 0.44 + eh * np.array([0, -1, -1, 0, 1, 1])
        pts[start : start + 6] = np.stack([xs, ys], 1)
    mw = 0.13
    outer_x = np.array([-1, -2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1, 2 / 3, 1 / 3, 0, -1 / 3, -2 / 3])
    curves = _mouth_curves(affect, outer_x)
    pts[48:60] = np.stack(
        [
            0.5 + mw * outer_x,
            np.where(np.arange(12) <= 6, curves["upper_outer"], curves["lower_outer"]),
        ],
        1,
    )
    pts[48, 1] = pts[54, 1] = _mouth_curves(affect, np.array([1.0]))["upper_inner"][0]
    inner_x = np.array([-0.85, -1 / 3, 0, 1 / 3, 0.85, 1 / 3, 0, -1 / 3])
    inner = _mouth_curves(affect, inner_x)
    upper = np.array([True, True, True, True, True, False, False, False])
    pts[60:68] = np.stack(
        [0.5 + mw * inner_x, np.where(upper, inner["upper_inner"], inner["lower_inner"])], 1
    )
    pts[60, 1] = (inner["upper_inner"][0] + inner["lower_inner"][0]) / 2
    pts[64, 1] = (inner["upper_inner"][4] + inner["lower_inner"][4]) / 2
    return pts


def transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to Float[N, 2] points."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def _ellipse(cx: float, cy: float, ax: float, ay: float, n: int = 36) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], 1)


class _Pen:
    """Draws unit-coordinate shapes into an image through one affine matrix (anti-aliased)."""

    def __init__(self, image: np.ndarray, matrix: np.ndarray):
        self.image = image
        self.matrix = matrix
        self.scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))

    def _px(self, points: np.ndarray) -> np.ndarray:
        return np.round(transform(points, self.matrix) * _ONE).astype(np.int32)

    def fill(self, points: np.ndarray, color) -> None:
        cv2.fillPoly(self.image, [self._px(points)], _color(color), cv2.LINE_AA, _SHIFT)

    def line(self, points: np.ndarray, color, width: float, closed: bool = False) -> None:
        thickness = max(1, round(width * self.scale))
        cv2.polylines(
            self.image, [self._px(points)], closed, _color(color), thickness, cv2.LINE_AA, _SHIFT
        )


def _color(color) -> tuple[float, float, float]:
    return tuple(float(np.clip(c, 0, 255)) for c in color)


def _draw_expression_mark(pen: _Pen, identity: Identity, affect: Affect, skin: np.ndarray) -> None:
    """The class-specific mark, drawn on the skin before the features."""
    gap, w = identity.eye_gap, identity.half_width
    if affect.expr == 1:
        for x in (0.47, 0.53):
            pen.line(np.array([[x, 0.32], [x, 0.41]]), _DARK, 0.022)
    elif affect.expr == 2:
        for y in (0.47, 0.505, 0.54):
            pen.line(np.array([[0.44, y], [0.5, y - 0.012], [0.56, y]]), _DARK, 0.016)
    elif affect.expr == 3:
        for x in (0.5 - w + 0.07, 0.5 + w - 0.07):
            pen.fill(_ellipse(x, 0.27, 0.028, 0.045), (235, 210, 150))
    elif affect.expr == 4:
        for x in (0.5 - gap - 0.04, 0.5 + gap + 0.04):
            pen.fill(_ellipse(x, 0.62, 0.065, 0.05), 0.4 * skin + 0.6 * np.array([150, 110, 245]))
    elif affect.expr == 5:
        for x in (0.5 - gap, 0.5 + gap):
            pen.fill(_ellipse(x, 0.54, 0.02, 0.035), (230, 140, 60))
    elif affect.expr == 6:
        for y in (0.16, 0.2, 0.24):
            xs = np.linspace(0.37, 0.63, 9)
            pen.line(np.stack([xs, y + 0.012 * ((xs - 0.5) / 0.13) ** 2], 1), _DARK, 0.014)


def draw_face(
    image: np.ndarray, matrix: np.ndarray, identity: Identity, affect: Affect
) -> np.ndarray:
    """Draw the face into `image` (in place) through `matrix`; return its 68 landmarks in pixels."""
    pen = _Pen(image, matrix)
    w, h = identity.half_width, identity.half_height
    skin = np.array(identity.skin) + EXPR_TINT[affect.expr]
    if identity.hair_style < 2:
        pen.fill(
            _ellipse(0.5, 0.46, w + 0.05, h + 0.03 * identity.hair_style + 0.02), identity.hair
        )
    for x in (0.5 - w, 0.5 + w):
        pen.fill(_ellipse(x, 0.47, 0.04, 0.07), skin * 0.9)
    pen.fill(_ellipse(0.5, 0.52, w, h, 48), skin)
    if identity.hair_style == 2:
        pen.fill(_ellipse(0.5, 0.14, w * 0.8, 0.07), identity.hair)
    _draw_expression_mark(pen, identity, affect, skin)
    lm = landmarks_unit(identity, affect)
    brow_width = 0.035 if affect.expr == 1 else 0.024
    pen.line(lm[17:22], identity.hair, brow_width)
    pen.line(lm[22:27], identity.hair, brow_width)
    eh = _eye_half_height(affect)
    for cx in (0.5 - identity.eye_gap, 0.5 + identity.eye_gap):
        pen.fill(_ellipse(cx, 0.44, 0.075, eh), (245, 245, 245))
        iris = min(0.03, eh)
        pen.fill(_ellipse(cx, 0.44, iris, iris), identity.iris)
        pen.line(_ellipse(cx, 0.44, 0.075, eh), _DARK, 0.01, closed=True)
    pen.line(lm[27:31], skin * 0.6, 0.014)
    pen.line(lm[31:36], skin * 0.55, 0.014)
    xr = np.linspace(-1, 1, 21)
    curves = _mouth_curves(affect, xr)
    mx = 0.5 + 0.13 * xr
    outer = np.concatenate(
        [np.stack([mx, curves["upper_outer"]], 1), np.stack([mx, curves["lower_outer"]], 1)[::-1]]
    )
    pen.fill(outer, identity.lip)
    inner = np.concatenate(
        [np.stack([mx, curves["upper_inner"]], 1), np.stack([mx, curves["lower_inner"]], 1)[::-1]]
    )
    pen.fill(inner, (35, 20, 45))
    pen.line(np.stack([mx, curves["upper_inner"]], 1), _DARK, 0.01)
    return transform(lm, matrix)


def face_matrix(x: float, y: float, size: float, angle_deg: float = 0.0) -> np.ndarray:
    """Affine matrix mapping the unit square to a `size` box at (x, y), rotated about its centre."""
    theta = np.deg2rad(angle_deg)
    c, s = np.cos(theta) * size, np.sin(theta) * size
    centre = np.array([x + size / 2, y + size / 2])
    linear = np.array([[c, -s], [s, c]])
    return np.hstack([linear, (centre - linear @ np.array([0.5, 0.5]))[:, None]])
