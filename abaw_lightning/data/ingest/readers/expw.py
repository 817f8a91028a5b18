"""ExpW: `label/label.lst` (one face per line, box top/left/right/bottom) over `image/origin/`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from abaw_lightning.data.ingest.readers import (
    CROPS,
    READABLE_SUFFIXES,
    Read,
    Skipped,
    frame_table,
    read_text_lines,
)
from abaw_lightning.errors import UserError

TO_AFFWILD2 = np.array([1, 2, 3, 4, 5, 6, 0], dtype=np.int8)
"""ExpW class (angry, disgust, fear, happy, sad, surprise, neutral) -> Aff-Wild2 class."""

LAYOUTS = (Path("."), Path("data"))
"""Folders below the root that may hold `image/origin` and `label/label.lst`."""


def locate(root: Path) -> tuple[Path, Path]:
    """(label.lst, image folder) of an ExpW root, in either known layout."""
    labels = _first(root, Path("label", "label.lst"), Path.is_file)
    images = _first(root, Path("image", "origin"), Path.is_dir)
    if labels is None or images is None:
        missing = "label/label.lst" if labels is None else "image/origin/"
        raise UserError(
            f"ExpW {missing} not found under {root} (also looked in {root / 'data'}). "
            "--expw must be the folder that holds image/origin/ and label/label.lst."
        )
    return labels, images


def _first(root: Path, relative: Path, test: Callable[[Path], bool]) -> Path | None:
    """`root/<layout>/relative` for the first layout where `test` holds."""
    return next((root / b / relative for b in LAYOUTS if test(root / b / relative)), None)


def _parse(fields: list[str]) -> tuple[str, int, tuple[int, int, int, int], int] | str:
    """(image name, face id, (top, left, right, bottom), ExpW class), or the skip reason."""
    if len(fields) != 8:
        return "unparsable line"
    try:
        face_id = int(fields[1])
        top, left, right, bottom = (round(float(v)) for v in fields[2:6])
        float(fields[6])
        label = int(fields[7])
    except ValueError:
        return "unparsable line"
    if not 0 <= label <= 6:
        return "label outside 0-6"
    if right <= left or bottom <= top:
        return "empty face box"
    return fields[0], face_id, (top, left, right, bottom), label


def read_expw(root: Path | str) -> Read:
    """Every listed face whose image exists, keyed by (image name, face id), with its box.

    Extra columns: `src_path` (the original image) and `top`, `left`, `right`, `bottom`.
    """
    labels, images = locate(Path(root))
    present = set(os.listdir(images))
    skipped = Skipped()
    seen: set[tuple[str, int]] = set()
    records: dict[str, list] = {
        c: [] for c in ("image", "expr", "src_path", "top", "left", "right", "bottom")
    }
    for number, line in enumerate(read_text_lines(labels), start=1):
        where = f"{labels}:{number}"
        parsed = _parse(line.split())
        if isinstance(parsed, str):
            skipped.add(parsed, where)
            continue
        name, face_id, box, label = parsed
        if (name, face_id) in seen:
            skipped.add("duplicate face (same image and face id)", where)
            continue
        seen.add((name, face_id))
        if Path(name).suffix.lower() not in READABLE_SUFFIXES:
            skipped.add(f"unsupported image format ({Path(name).suffix or 'none'})", where)
            continue
        if name not in present:
            skipped.add("image missing", where)
            continue
        records["image"].append(f"{CROPS}/expw/{Path(name).stem}_{face_id}.jpg")
        records["expr"].append(TO_AFFWILD2[label])
        records["src_path"].append(str(images / name))
        for key, value in zip(("top", "left", "right", "bottom"), box, strict=True):
            records[key].append(value)
    n = len(records["image"])
    table = frame_table(
        {
            **records,
            "source": ["expw"] * n,
            "video": [""] * n,
            "frame": [-1] * n,
            "valence": [np.nan] * n,
            "arousal": [np.nan] * n,
        },
        extra={
            "src_path": str,
            "top": np.int64,
            "left": np.int64,
            "right": np.int64,
            "bottom": np.int64,
        },
    )
    return Read(table, skipped)
