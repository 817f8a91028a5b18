"""ABAW 2021 test submission files (FORMATS.md) from the `cropped_aligned` crops of the test videos:
one line per video frame, frames without a crop filled from the nearest predicted frame."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abaw_lightning import EXPR_CLASSES
from abaw_lightning.errors import UserError
from abaw_lightning.inference.media import VIDEO_SUFFIXES, read_rgb, video_frame_count
from abaw_lightning.inference.predictor import Predictor
from abaw_lightning.inference.tracking import nearest

TASKS = {"expr": "EXPR_Set", "va": "VA_Set"}
"""Task -> submission folder."""
HEADERS = {"expr": ",".join(EXPR_CLASSES), "va": "valence,arousal"}
SIDE_SUFFIXES = ("_left", "_right")
"""Aff-Wild2 stems of two people in one video: `<video>_left`, `<video>_right`."""


@dataclass(frozen=True)
class StemReport:
    """What was written for one test video."""

    stem: str
    frames: int
    crops: int
    unreadable: int
    files: tuple[Path, ...]


def read_test_list(path: Path) -> list[str]:
    """The stems of a test list (one per line, blank lines ignored), in order, without repeats."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"test list not found: {path}")
    stems = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not stems:
        raise UserError(f"test list {path} names no video: expected one video stem per line")
    return list(dict.fromkeys(stems))


def crop_frames(folder: Path) -> tuple[np.ndarray, list[Path]]:
    """Frame numbers (sorted) and paths of the numbered jpgs (`00001.jpg` = frame 1) of a video."""
    if not folder.is_dir():
        raise UserError(
            f"no face crops for {folder.name}: {folder} does not exist; check --abaw-test (the "
            "cropped_aligned folder) and the test list"
        )
    numbered = sorted(
        (int(path.stem), path)
        for path in folder.iterdir()
        if path.suffix.lower() == ".jpg" and path.stem.isdigit()
    )
    if not numbered:
        raise UserError(f"no numbered jpg in {folder}: expected 00001.jpg, 00002.jpg, ...")
    return np.array([number for number, _ in numbered], dtype=np.int64), [p for _, p in numbered]


def video_index(videos: Path) -> dict[str, Path]:
    """Video file stem -> path, for every video under `videos` (any depth, e.g. batch1/)."""
    if not Path(videos).is_dir():
        raise UserError(f"videos folder not found: {videos}")
    found: dict[str, Path] = {}
    for path in sorted(Path(videos).rglob("*")):
        if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
            found.setdefault(path.stem, path)
    return found


def find_video(index: dict[str, Path], stem: str) -> Path | None:
    """The video of a stem; `<video>_left` / `<video>_right` use `<video>`'s file."""
    if stem in index:
        return index[stem]
    for suffix in SIDE_SUFFIXES:
        if stem.endswith(suffix) and stem[: -len(suffix)] in index:
            return index[stem[: -len(suffix)]]
    return None


def submission_text(task: str, values: np.ndarray) -> str:
    """A submission file: header, then one class index (expr) or `v,a` with 3 decimals (va)."""
    if task == "expr":
        lines = [str(int(value)) for value in values]
    else:
        rounded = np.round(np.clip(values, -1.0, 1.0), 3) + 0.0  # no "-0.000"
        lines = [f"{valence:.3f},{arousal:.3f}" for valence, arousal in rounded]
    return "\n".join([HEADERS[task], *lines]) + "\n"


def predict_stem(
    predictor: Predictor,
    cropped: Path,
    stem: str,
    tasks: tuple[str, ...],
    out: Path,
    videos: dict[str, Path] | None = None,
) -> StemReport:
    """Write the submission files of one test video; a missing folder or video is a UserError."""
    numbers, paths = crop_frames(Path(cropped) / stem)
    frames = int(numbers[-1])
    if videos is not None:
        video = find_video(videos, stem)
        if video is None:
            raise UserError(
                f"no video file for {stem} in the --videos folder: its frame count is needed "
                "for the line count; give the right folder, or leave --videos out to count "
                "frames from the jpgs only"
            )
        frames = max(frames, video_frame_count(video))
    images = (read_rgb(path) for path in paths)
    present, outputs = predictor.cnn_outputs(images, len(paths), stem)
    if not present.any():
        raise UserError(f"none of the {len(paths)} jpgs in {Path(cropped) / stem} is readable")
    probs, va = predictor.decode(outputs)
    rows = nearest(numbers[present], frames)
    written = []
    for task in tasks:
        values = probs.argmax(axis=1) if task == "expr" else va
        path = Path(out) / TASKS[task] / f"{stem}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(submission_text(task, values[rows]))
        written.append(path)
    return StemReport(stem, frames, int(present.sum()), int((~present).sum()), tuple(written))
