"""Byte-exact file writing shared by the dataset writers, and per-job random generators."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

JPEG_QUALITY = 92
DATASET_CODES = {"affwild2": 1, "affwild2_test": 2, "expw": 3, "afew_va": 4, "affectnet": 5}


def job_rng(seed: int, dataset: str, index: int) -> np.random.Generator:
    """An independent generator per (seed, dataset, job): output does not depend on worker count."""
    return np.random.default_rng([seed, DATASET_CODES[dataset], index])


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text with LF line endings exactly as given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


def write_image(path: Path, image: np.ndarray) -> None:
    """Encode by the file extension (fixed JPEG quality and PNG compression) and write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    params = {
        ".jpg": [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
        ".png": [cv2.IMWRITE_PNG_COMPRESSION, 3],
    }.get(path.suffix.lower(), [])
    ok, encoded = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path.suffix} for {path}")
    path.write_bytes(encoded.tobytes())


def write_corrupt_image(path: Path, image: np.ndarray, keep: int = 200) -> None:
    """Write only the first `keep` bytes of the encoded image: a file no decoder can read."""
    write_image(path, image)
    path.write_bytes(path.read_bytes()[:keep])


def lines_text(lines: list[str], trailing_newline: bool = True, blank_line: bool = False) -> str:
    """Join lines with LF; optionally omit the final newline or add one empty trailing line."""
    text = "\n".join(lines)
    if trailing_newline or blank_line:
        text += "\n"
    if blank_line:
        text += "\n"
    return text
