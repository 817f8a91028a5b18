"""Readers of the four datasets in their real on-disk formats (see FORMATS.md).

Every reader returns a `Read`: a DataFrame with the prepared-table columns (`image` relative to the
prepared folder, `source`, `video`, `frame`, `expr`, `valence`, `arousal`, plus what cropping needs)
and a `Skipped` counter of the rows it left out, by reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from abaw_lightning.errors import UserError
from abaw_lightning.schema import COLUMNS as TABLE_COLUMNS

AFFWILD2_IMAGES = "affwild2_images"
"""Name of the link to Aff-Wild2's `cropped_aligned` inside the prepared folder."""

CROPS = "crops"
"""Folder of the square face crops inside the prepared folder (one subfolder per source)."""

READABLE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp"}
    | {".pbm", ".pgm", ".ppm", ".pnm", ".sr", ".ras", ".jp2"}
)
"""Image file extensions OpenCV's `imread` decodes; other files are skipped and counted."""

EXAMPLES_PER_REASON = 5
"""How many locations (file:line) are remembered per skip reason, for the manifest."""

COLUMNS = list(TABLE_COLUMNS)
"""Columns of every prepared table (README, "Prepared dataset layout")."""


@dataclass
class Skipped:
    """Rows left out, by reason, with the first few locations of each reason."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, where: str | None = None, n: int = 1) -> None:
        """Count `n` skipped rows for `reason`, remembering `where` among the first examples."""
        if n <= 0:
            return
        self.counts[reason] += n
        if where is not None:
            seen = self.examples.setdefault(reason, [])
            if len(seen) < EXAMPLES_PER_REASON:
                seen.append(where)

    def update(self, other: Skipped, prefix: str = "") -> None:
        """Add all counts (and examples) of `other`, their reasons prefixed with `prefix`."""
        for reason, n in other.counts.items():
            self.counts[prefix + reason] += n
        for reason, where in other.examples.items():
            seen = self.examples.setdefault(prefix + reason, [])
            seen.extend(where[: EXAMPLES_PER_REASON - len(seen)])

    def to_dict(self) -> dict[str, dict]:
        """JSON form: {"counts": {reason: n}, "examples": {reason: [location, ...]}}, sorted."""
        return {
            "counts": dict(sorted(self.counts.items())),
            "examples": dict(sorted(self.examples.items())),
        }


class Read(NamedTuple):
    """What a reader returns: the rows it kept and the rows it skipped."""

    rows: pd.DataFrame
    skipped: Skipped


def frame_table(records: dict[str, list], extra: dict[str, object] | None = None) -> pd.DataFrame:
    """DataFrame of `records` (column -> values) with the prepared-table dtypes."""
    table = pd.DataFrame(records)
    dtypes = {
        "image": str,
        "source": str,
        "video": str,
        "frame": np.int64,
        "expr": np.int8,
        "valence": np.float32,
        "arousal": np.float32,
        **(extra or {}),
    }
    for column, dtype in dtypes.items():
        table[column] = table[column].astype(object if dtype is str else dtype)
    return table


def require_dir(path: Path, what: str, hint: str) -> Path:
    """`path` if it is a folder, else a UserError saying what was expected there."""
    if not path.is_dir():
        raise UserError(f"{what} not found: {path} is not a folder. {hint}")
    return path


def find_dir(root: Path, name: str, max_depth: int = 3) -> Path | None:
    """First folder called `name` at `root` or up to `max_depth` levels below it (sorted walk)."""
    level = [root]
    for _ in range(max_depth + 1):
        for folder in level:
            if folder.name == name:
                return folder
        level = sorted(child for folder in level for child in _subdirs(folder))
    return None


def _subdirs(folder: Path) -> list[Path]:
    try:
        return [child for child in folder.iterdir() if child.is_dir()]
    except OSError:
        return []


def read_text_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file (BOM dropped, trailing empty lines removed), or a UserError."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path}: {error}. Check the file is intact.") from error
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines
