"""Checks that an image file holds a complete, decodable JPEG (Aff-Wild2 frames, stored crops).

OpenCV decodes PNG whatever the extension and, in some versions, returns a partly grey image for a
truncated JPEG with only a warning: the content is checked by its signature and end-of-image
marker, then decoded.
"""

from __future__ import annotations

import cv2
import numpy as np

JPEG_START = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
END_SEARCH = 64
"""The end-of-image marker must lie within this many bytes of the end of the file (encoders may
pad after it). Inside the compressed data 0xFF is always followed by 0x00 or a restart marker, so
a file cut short has no 0xFFD9 near its end."""
SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"RIFF": "RIFF/WebP",
}


def jpeg_problem(data: bytes) -> str | None:
    """Why `data` is not a complete JPEG file (None when its start and end markers are there)."""
    if not data:
        return "empty file (0 bytes)"
    if not data.startswith(JPEG_START):
        kind = next((k for sig, k in SIGNATURES.items() if data.startswith(sig)), "unknown")
        return f"not a JPEG ({kind} data)"
    if JPEG_END not in data[-END_SEARCH:]:
        return "truncated JPEG (no end-of-image marker)"
    return None


def frame_problem(path: str) -> str | None:
    """Why the file at `path` is not a usable JPEG frame (None: complete and it decodes).

    The decode is at 1/8 scale in grey (every compressed byte is still parsed, a third of the cost).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        return f"unreadable ({error.strerror})"
    problem = jpeg_problem(data)
    if problem is not None:
        return problem
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    except cv2.error:
        image = None
    return "JPEG does not decode" if image is None else None
