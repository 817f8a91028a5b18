"""The inputs of `abaw predict` as RGB arrays: videos (OpenCV), image folders, single images."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from abaw_lightning.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class VideoInfo:
    """What the container says: frames per second and frame count (0 when it does not know)."""

    fps: float
    frames: int


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _open(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        raise UserError(f"video not found: {path}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UserError(f"cannot open video {path}: not a video OpenCV can decode")
    return capture


def video_info(path: Path) -> VideoInfo:
    """Frame rate and frame count of a video; an unopenable file is a UserError naming it."""
    capture = _open(Path(path))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    return VideoInfo(fps if fps > 0 else 0.0, max(frames, 0))


def video_frame_count(path: Path) -> int:
    """Frames of a video: the container's count, or every frame grabbed when it has none."""
    frames = video_info(path).frames
    if frames > 0:
        return frames
    capture = _open(Path(path))
    try:
        while capture.grab():
            frames += 1
    finally:
        capture.release()
    return frames


def read_video(path: Path) -> Iterator[np.ndarray]:
    """Every frame of a video as RGB uint8 [H, W, 3]; a video without a decodable frame is a
    UserError."""
    path = Path(path)
    capture = _open(path)
    count = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
    if count == 0:
        raise UserError(f"cannot read any frame of {path}: the video is empty or corrupt")


def list_images(folder: Path) -> list[Path]:
    """The image files of a folder (not recursive), in name order; none is a UserError."""
    folder = Path(folder)
    images = sorted(p for p in folder.iterdir() if p.is_file() and is_image(p))
    if not images:
        raise UserError(
            f"no images in {folder}: expected files ending in {', '.join(IMAGE_SUFFIXES)}"
        )
    return images


NUMBERED = re.compile(r"^(.*?)(\d+)$")


def numbered_frames(images: list[Path]) -> bool:
    """Whether the names look like the frames of one video: one prefix then a number
    (00001.jpg, frame_0002.png); a folder of photos named otherwise is probably not one."""
    names = [NUMBERED.match(path.stem) for path in images]
    return all(names) and len({name.group(1) for name in names}) == 1


def read_rgb(path: Path) -> np.ndarray | None:
    """One image as RGB uint8, or None when the file is missing or not a decodable image."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
