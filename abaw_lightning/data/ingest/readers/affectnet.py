"""AffectNet (manually annotated): training.csv / validation.csv over Manually_Annotated_Images."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path, PurePosixPath

import numpy as np

from abaw_lightning.data.ingest.readers import (
    CROPS,
    READABLE_SUFFIXES,
    Read,
    Skipped,
    find_dir,
    frame_table,
    require_dir,
)
from abaw_lightning.errors import UserError

COLUMNS = [
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
]
LISTS = ("training.csv", "validation.csv")
TO_AFFWILD2 = np.array([0, 4, 5, 6, 3, 2, 1], dtype=np.int8)
"""AffectNet code 0-6 (neutral, happy, sad, surprise, fear, disgust, anger) -> Aff-Wild2 class."""
DROPPED_CODES = {7: "contempt", 8: "none", 9: "uncertain", 10: "no-face"}
VA_MISSING = -2.0


def locate(root: Path) -> tuple[Path, Path]:
    """(file-list folder, image folder); the image folder may sit inside any wrapper folder."""
    root = require_dir(root, "AffectNet folder", "--affectnet must hold the AffectNet release.")
    lists = find_dir(root, "Manually_Annotated_file_lists")
    images = find_dir(root, "Manually_Annotated_Images")
    if lists is None or images is None:
        missing = "Manually_Annotated_file_lists" if lists is None else "Manually_Annotated_Images"
        raise UserError(
            f"AffectNet folder {missing}/ not found under {root} (searched 3 levels deep). "
            "Unpack the manually annotated release there."
        )
    return lists, images


def _parse(row: list[str]) -> tuple[str, int, float, float, np.ndarray] | str:
    """(relative image path, Aff-Wild2 class, valence, arousal, landmarks 68x2), or skip reason."""
    if len(row) != len(COLUMNS):
        return "wrong number of fields"
    if any(field.strip().upper() == "NULL" for field in row):
        return "NULL field"
    relative = PurePosixPath(row[0].strip())
    if relative.is_absolute() or ".." in relative.parts or not relative.name:
        return "unparsable line"
    try:
        code = int(float(row[6]))
        valence, arousal = float(row[7]), float(row[8])
        landmarks = np.array(row[5].split(";"), dtype=np.float32)
    except ValueError:
        return "unparsable line"
    if code in DROPPED_CODES:
        return f"expression {code} ({DROPPED_CODES[code]})"
    if not 0 <= code <= 6:
        return "expression outside 0-10"
    if landmarks.shape != (136,) or not np.isfinite(landmarks).all():
        return "landmarks not 136 numbers"
    valence = math.nan if valence == VA_MISSING else valence
    arousal = math.nan if arousal == VA_MISSING else arousal
    if not all(math.isnan(v) or -1 <= v <= 1 for v in (valence, arousal)):
        return "valence/arousal outside [-1, 1]"
    return str(relative), int(TO_AFFWILD2[code]), valence, arousal, landmarks.reshape(68, 2)


def read_affectnet(root: Path | str) -> Read:
    """Rows of codes 0-6 of training.csv then validation.csv whose image exists, de-duplicated.

    Extra columns: `src_path` (the original image) and `landmarks` (68x2 float32).
    """
    lists, images = locate(Path(root))
    skipped = Skipped()
    seen: set[str] = set()
    listings: dict[str, set[str]] = {}
    records: dict[str, list] = {
        c: [] for c in ("image", "expr", "valence", "arousal", "src_path", "landmarks")
    }
    for name in LISTS:
        path = lists / name
        if not path.is_file():
            raise UserError(f"AffectNet file list {path} not found.")
        for number, row in _read_csv(path):
            where = f"{path}:{number}"
            parsed = _parse(row)
            if isinstance(parsed, str):
                skipped.add(parsed, where)
                continue
            relative, expr, valence, arousal, landmarks = parsed
            if relative in seen:
                skipped.add("duplicate row", where)
                continue
            seen.add(relative)
            suffix = PurePosixPath(relative).suffix.lower()
            if suffix not in READABLE_SUFFIXES:
                skipped.add(f"unsupported image format ({suffix or 'none'})", where)
                continue
            folder, _, file_name = relative.rpartition("/")
            if folder not in listings:
                try:
                    listings[folder] = set(os.listdir(images / folder))
                except OSError:
                    listings[folder] = set()
            if file_name not in listings[folder]:
                skipped.add("image missing", where)
                continue
            crop = PurePosixPath(CROPS, "affectnet", relative).with_suffix(".jpg")
            records["image"].append(str(crop))
            records["expr"].append(expr)
            records["valence"].append(valence)
            records["arousal"].append(arousal)
            records["src_path"].append(str(images / relative))
            records["landmarks"].append(landmarks)
    n = len(records["image"])
    table = frame_table(
        {**records, "source": ["affectnet"] * n, "video": [""] * n, "frame": [-1] * n},
        extra={"src_path": str, "landmarks": object},
    )
    return Read(table, skipped)


def _read_csv(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the data rows of one file list; the header row is checked."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            rows = [(reader.line_num, row) for row in reader if any(f.strip() for f in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"cannot read {path}: {error}. Check the file is intact.") from error
    if rows and rows[0][1] and rows[0][1][0].strip() == COLUMNS[0]:
        header = [field.strip() for field in rows[0][1]]
        if header != COLUMNS:
            raise UserError(
                f"{path}:{rows[0][0]}: unexpected header {','.join(header)}; "
                f"expected {','.join(COLUMNS)}."
            )
        rows = rows[1:]
    return rows
