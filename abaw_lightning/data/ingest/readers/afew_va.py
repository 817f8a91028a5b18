"""AFEW-VA: clips `<root>/01..12/<clip>/` or `<root>/<clip>/`, PNG frames and `<clip>.json`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from abaw_lightning.data.ingest.readers import CROPS, Read, Skipped, frame_table, require_dir
from abaw_lightning.errors import UserError

VA_SCALE = 10.0
"""AFEW-VA valence/arousal are integers in [-10, 10]; divided by this to reach [-1, 1]."""


def find_clips(root: Path) -> list[Path]:
    """Clip folders (those holding `<name>.json`) directly under root or one level below, sorted."""
    clips = []
    for child in sorted(root.iterdir()):
        if not child.is_dir():
            continue
        if (child / f"{child.name}.json").is_file():
            clips.append(child)
        else:
            clips.extend(
                grand
                for grand in sorted(child.iterdir())
                if grand.is_dir() and (grand / f"{grand.name}.json").is_file()
            )
    return sorted(clips, key=lambda clip: clip.name)


def _load(path: Path) -> dict:
    """The parsed clip json, or a UserError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read AFEW-VA annotation {path}: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("frames"), dict):
        raise UserError(f"{path}: expected a json object with a 'frames' object (AFEW-VA format).")
    return data


def _parse_frame(key: str, entry: object) -> tuple[int, float, float, np.ndarray] | str:
    """(frame, valence, arousal, landmarks 68x2), or the skip reason."""
    if not key.isdigit():
        return "corrupt frame annotation"
    try:
        valence, arousal = float(entry["valence"]), float(entry["arousal"])
        landmarks = np.asarray(entry["landmarks"], dtype=np.float32)
    except (TypeError, KeyError, ValueError):
        return "corrupt frame annotation"
    if landmarks.shape != (68, 2) or not np.isfinite(landmarks).all():
        return "corrupt frame annotation"
    if not (-VA_SCALE <= valence <= VA_SCALE and -VA_SCALE <= arousal <= VA_SCALE):
        return "valence/arousal outside [-10, 10]"
    return int(key), valence / VA_SCALE, arousal / VA_SCALE, landmarks


def read_afew_va(root: Path | str) -> Read:
    """Every annotated frame (sorted per clip) whose PNG exists; extra `src_path`, `landmarks`."""
    root = require_dir(
        Path(root), "AFEW-VA folder", "--afew-va must hold the clips (01..12/<clip>/ or <clip>/)."
    )
    clips = find_clips(root)
    if not clips:
        raise UserError(
            f"no AFEW-VA clips under {root}: expected folders <clip>/ holding <clip>.json, "
            "directly or inside 01..12/."
        )
    skipped = Skipped()
    records: dict[str, list] = {
        c: [] for c in ("image", "video", "frame", "valence", "arousal", "src_path", "landmarks")
    }
    for clip in clips:
        path = clip / f"{clip.name}.json"
        frames = _load(path)["frames"]
        pngs = set(os.listdir(clip))
        for key in sorted(frames):
            parsed = _parse_frame(key, frames[key])
            if isinstance(parsed, str):
                skipped.add(parsed, f"{path}:{key}")
                continue
            frame, valence, arousal, landmarks = parsed
            name = f"{frame:05d}.png"
            if name not in pngs:
                skipped.add("frame image missing", f"{clip / name}")
                continue
            records["image"].append(f"{CROPS}/afew_va/{clip.name}/{frame:05d}.jpg")
            records["video"].append(clip.name)
            records["frame"].append(frame)
            records["valence"].append(valence)
            records["arousal"].append(arousal)
            records["src_path"].append(str(clip / name))
            records["landmarks"].append(landmarks)
    n = len(records["image"])
    table = frame_table(
        {**records, "source": ["afew_va"] * n, "expr": [-1] * n},
        extra={"src_path": str, "landmarks": object},
    )
    return Read(table, skipped)
