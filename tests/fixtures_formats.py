"""Writers of tiny datasets in the real on-disk formats of FORMATS.md, for reader/prepare tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"
VA_HEADER = "valence,arousal"
AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
    "expression,valence,arousal"
)


def write_image(path: Path, size: tuple[int, int] = (8, 8), value: int = 128) -> Path:
    """A small uniform image, encoded by its extension (jpg, png, tif, bmp)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((*size, 3), value, dtype=np.uint8))
    return path


def write_text(
    path: Path, lines: list[str], newline_at_end: bool = True, bom: bool = False
) -> Path:
    """Lines joined by LF, with or without the final newline, optionally with a UTF-8 BOM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + ("\n" if newline_at_end else "")
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


def affwild2_annotation(
    root: Path,
    task: str,
    split_dir: str,
    stem: str,
    lines: list[str],
    header: str | None = None,
    nested: bool = False,
    **kwargs,
) -> Path:
    """`<root>/annotations[/annotations]/<EXPR_Set|VA_Set>/<split_dir>/<stem>.txt`."""
    base = root / "annotations" / ("annotations" if nested else "")
    task_dir = {"expr": "EXPR_Set", "va": "VA_Set"}[task]
    header = header if header is not None else {"expr": EXPR_HEADER, "va": VA_HEADER}[task]
    return write_text(base / task_dir / split_dir / f"{stem}.txt", [header, *lines], **kwargs)


def affwild2_frames(root: Path, stem: str, frames: list[int]) -> None:
    """`<root>/cropped_aligned/<stem>/{frame:05d}.jpg` for each 1-based frame."""
    for frame in frames:
        write_image(root / "cropped_aligned" / stem / f"{frame:05d}.jpg")


def face_landmarks(
    centre: tuple[float, float] = (100.0, 100.0), scale: float = 1.0, angle_deg: float = 0.0
) -> np.ndarray:
    """68 landmarks of an upright face: eye centres (+-20, -11), mouth corners (+-15, 25), about
    `centre`, rotated by `angle_deg` (clockwise as displayed, y down) and scaled."""
    points = np.zeros((68, 2))
    points[0:17] = [(-40 + 5 * i, 20 - abs(8 - i) * 3) for i in range(17)]  # jaw
    points[17:27] = [(-30 + 6.5 * i, -25) for i in range(10)]  # brows
    points[27:36] = [(0, -10 + 3 * i) for i in range(9)]  # nose
    eye = [(-6, 1), (-2, -1), (2, -1), (6, 1), (2, 3), (-2, 3)]  # mean of the first 4: (0, 0)
    points[36:42] = [(-20 + x, -11 + y) for x, y in eye]
    points[42:48] = [(20 + x, -11 + y) for x, y in eye]
    points[48:68] = [(-15 + 30 * i / 19, 25 + (3 if i % 2 else -3)) for i in range(20)]
    points[48] = (-15, 25)
    points[54] = (15, 25)
    theta = math.radians(angle_deg)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return (points @ rotation.T) * scale + np.asarray(centre)


def expw_dataset(
    root: Path, lines: list[str], images: dict[str, np.ndarray | bytes], data_layout: bool = False
) -> Path:
    """`<root>[/data]/label/label.lst` and `<root>[/data]/image/origin/<name>` (array or bytes)."""
    base = root / "data" if data_layout else root
    write_text(base / "label" / "label.lst", lines)
    for name, content in images.items():
        path = base / "image" / "origin" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            assert cv2.imwrite(str(path), content)
    return root


def afew_va_clip(
    root: Path,
    clip: str,
    frames: dict[str, object],
    pngs: list[str],
    group: str | None = "01",
    image: np.ndarray | None = None,
) -> Path:
    """`<root>/<group>/<clip>/` (or flat when group is None) with `<clip>.json` and PNG frames."""
    folder = root / group / clip if group else root / clip
    folder.mkdir(parents=True, exist_ok=True)
    data = {"actor": "someone", "video_id": clip, "frames": frames}
    (folder / f"{clip}.json").write_text(json.dumps(data), encoding="utf-8")
    for key in pngs:
        if image is None:
            write_image(folder / f"{key}.png")
        else:
            assert cv2.imwrite(str(folder / f"{key}.png"), image)
    return folder


def afew_va_frame(valence: int, arousal: int, landmarks: np.ndarray | None = None) -> dict:
    """One entry of an AFEW-VA json `frames` object."""
    points = face_landmarks() if landmarks is None else landmarks
    return {"valence": valence, "arousal": arousal, "landmarks": points.round(3).tolist()}


def affectnet_row(
    path: str,
    expression: int | str,
    valence: float | str,
    arousal: float | str,
    landmarks: np.ndarray | None = None,
) -> str:
    """One csv line of an AffectNet file list (box, `;`-joined 136 landmark numbers, labels)."""
    points = face_landmarks(centre=(50, 50), scale=0.8) if landmarks is None else landmarks
    joined = ";".join(f"{v:.2f}" for v in points.reshape(-1))
    return f"{path},10,10,80,80,{joined},{expression},{valence},{arousal}"


def affectnet_dataset(
    root: Path,
    training: list[str],
    validation: list[str],
    images: dict[str, np.ndarray | bytes],
    wrapper: str = "Manually_Annotated",
    validation_header: bool = False,
) -> Path:
    """File lists (training.csv with header, validation.csv without by default) and images."""
    lists = root / "Manually_Annotated_file_lists"
    write_text(lists / "training.csv", [AFFECTNET_HEADER, *training])
    write_text(
        lists / "validation.csv",
        [AFFECTNET_HEADER, *validation] if validation_header else validation,
    )
    for relative, content in images.items():
        path = root / wrapper / "Manually_Annotated_Images" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            assert cv2.imwrite(str(path), content)
    return root
