"""Reading the images of a prepared folder: RGB uint8 arrays through OpenCV, and for one that
cannot be read, the advice that actually fixes it (the `abaw prepare` command it needs)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import cv2
import numpy as np

from abaw_lightning.data.manifest import prepare_command
from abaw_lightning.errors import UserError


def read_image(path: Path) -> np.ndarray:
    """Decode a JPEG/PNG into HWC RGB uint8; a missing or unreadable file is a UserError."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(
            f"cannot read image {path}: the file is missing or not a readable JPEG/PNG. "
            "The prepared folder is incomplete or out of date: re-run `abaw prepare`."
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


AFFWILD2_IMAGES = "affwild2_images"
"""The link to Aff-Wild2's cropped_aligned folder; every other image is one of prepare's crops."""


def unreadable_image_advice(root: Path, image: str) -> str:
    """What fixes image ``image`` (relative to the prepared folder ``root``) that is missing or
    does not decode: prepare leaves out Aff-Wild2 frames without a jpg and makes missing crops."""
    root, path = Path(root), Path(root) / image
    command = prepare_command(root)
    if Path(image).parts[:1] == (AFFWILD2_IMAGES,):
        link = root / AFFWILD2_IMAGES
        if link.is_symlink() and not link.exists():
            return (
                f"{link} points to {os.readlink(link)}, which does not exist (was Aff-Wild2 "
                "moved?): re-run `abaw prepare` with --affwild2 at its new place and the other "
                f"options as before: {command}"
            )
        if not path.exists():
            return (
                "this Aff-Wild2 frame is missing (the dataset changed after `abaw prepare`): "
                f"re-run `{command}`, which leaves out frames without a jpg."
            )
        return (
            "this Aff-Wild2 frame does not decode: restore it from the Aff-Wild2 archive, or "
            f"delete it and re-run `{command}`, which then leaves the frame out."
        )
    if not path.exists():
        return f"this crop is missing: re-run `{command}`, which makes missing crops again."
    return f"this crop does not decode: delete it and re-run `{command}`, which makes it again."


def read_prepared_image(root: Path, image: str, where: str = "") -> np.ndarray:
    """The RGB crop or frame ``image`` of the prepared folder ``root``; one that cannot be read
    is a UserError naming it (and ``where``, e.g. its table row) and what fixes it."""
    path = Path(root) / image
    with contextlib.suppress(UserError):  # said again below, with the advice that fixes it
        if path.is_file():  # OpenCV would also print a warning for a missing file
            return read_image(path)
    place = f" ({where})" if where else ""
    raise UserError(f"cannot read {path}{place}: {unreadable_image_advice(root, image)}")
