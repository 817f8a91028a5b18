"""Read prepared face crops as RGB uint8 arrays with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

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
