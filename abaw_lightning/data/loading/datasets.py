"""Frame datasets over the prepared layout (README "Prepared dataset layout"), losses' format."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from pandas.api.types import is_float_dtype, is_integer_dtype, is_string_dtype
from torch.utils.data import Dataset

from abaw_lightning.data.loading.images import prepare_command, read_prepared_image
from abaw_lightning.data.loading.samplers import Draw
from abaw_lightning.data.loading.transforms import SeededTransform
from abaw_lightning.data.manifest import check_prepared
from abaw_lightning.errors import UserError
from abaw_lightning.schema import COLUMNS, WEIGHT

PART_COLUMNS = (*COLUMNS, WEIGHT)
"""The training parts also carry the balancing sampler's weights."""
KINDS = {
    "image": ("text", is_string_dtype),
    "source": ("text", is_string_dtype),
    "video": ("text", is_string_dtype),
    "frame": ("integers", is_integer_dtype),
    "expr": ("integers", is_integer_dtype),
    "valence": ("floats", is_float_dtype),
    "arousal": ("floats", is_float_dtype),
    "weight": ("floats", is_float_dtype),
}
"""What each column must hold (README "Prepared dataset layout")."""


def load_table(prepared_root: Path, name: str) -> pd.DataFrame:
    """Read `<prepared_root>/<name>.parquet` (e.g. "parts/expr", "affwild2/val_va") and check it."""
    prepared_root = Path(prepared_root)
    check_prepared(prepared_root)
    path = prepared_root / f"{name}.parquet"
    if not prepared_root.is_dir():
        raise UserError(
            f"prepared data folder {prepared_root} does not exist: run "
            f"`abaw prepare ... --out {prepared_root}` first (or set data.root to it)."
        )
    if not path.is_file():
        raise UserError(
            f"table {path} is missing from the prepared folder: run "
            f"`abaw prepare ... --out {prepared_root}` first."
        )
    try:
        table = pd.read_parquet(path)
    except (OSError, pa.ArrowException) as err:
        raise UserError(
            f"cannot read table {path} ({err}): re-run `abaw prepare ... --out {prepared_root}`."
        ) from err
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise UserError(
            f"table {path} lacks columns {missing}: it was written by another version; "
            f"re-run `abaw prepare ... --out {prepared_root}`."
        )
    return table


def labelled(table: pd.DataFrame, task: str) -> np.ndarray:
    """Rows carrying task ``task``'s label: an expression (``expr``) or valence and arousal."""
    if task == "expr":
        return table["expr"].to_numpy() >= 0
    return (table["valence"].notna() & table["arousal"].notna()).to_numpy()


def _refuse_bad_rows(
    table: pd.DataFrame, column: str, bad: np.ndarray, expected: str, path: Path, fix: str
) -> None:
    rows = np.flatnonzero(bad)
    if len(rows):
        raise UserError(
            f"table {path}: row {rows[0]} has {column} = {table[column].iloc[rows[0]]} "
            f"({len(rows)} such rows; expected {expected}): {fix}"
        )


def check_table(
    table: pd.DataFrame,
    prepared_root: Path,
    name: str,
    columns: tuple[str, ...] = COLUMNS,
    tasks: tuple[str, ...] = (),
    empty_hint: str = "",
) -> pd.DataFrame:
    """Check a table of `load_table` for what training reads: ``columns`` present with their
    kinds (`KINDS`), rows, labels of each of ``tasks``, values in range; return it.

    Each problem is one UserError naming the file and what fixes it (``empty_hint`` adds a
    way around an empty table, e.g. leaving the part out).
    """
    prepared_root = Path(prepared_root)
    path = prepared_root / f"{name}.parquet"
    rebuild = f"re-run `{prepare_command(prepared_root)}`"
    edited = f"it was written by another version of `abaw prepare` or edited; {rebuild}."
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise UserError(f"table {path} lacks column(s) {missing}: {edited}")
    for column in columns:
        kind, is_kind = KINDS[column]
        if not is_kind(table[column]):
            raise UserError(
                f"table {path}: column {column!r} holds {table[column].dtype}, not {kind}: {edited}"
            )
    hint = f", or {empty_hint}" if empty_hint else ""
    counts = {"rows": len(table)}
    counts |= {f"{task} labels": labelled(table, task).sum() for task in tasks}
    for what, count in counts.items():
        if count == 0:
            raise UserError(
                f"table {path} has no {what}: the datasets given to `abaw prepare` gave it none "
                f"(its skipped rows are counted in {prepared_root / 'manifest.json'}). Check "
                f"the dataset folders and {rebuild}{hint}."
            )
    expr = table["expr"].to_numpy()
    _refuse_bad_rows(table, "expr", (expr < -1) | (expr > 6), "-1 (none) or 0-6", path, edited)
    for column in ("valence", "arousal"):
        values = table[column].to_numpy(dtype=np.float64)
        outside = ~(np.isnan(values) | (np.abs(values) <= 1))
        _refuse_bad_rows(table, column, outside, "NaN (none) or -1..1", path, edited)
    if "weight" in columns:
        weights = table["weight"].to_numpy(dtype=np.float64)
        bad = ~(np.isfinite(weights) & (weights >= 0))
        _refuse_bad_rows(table, "weight", bad, "a finite weight >= 0", path, edited)
        if weights.sum() <= 0:
            raise UserError(f"table {path}: every sampler weight is 0; {rebuild}.")
    return table


def single_threaded_opencv() -> None:
    """One OpenCV thread per process, set in the parent before DataLoader workers fork (the
    workers are the parallelism). Set in a forked worker instead, it can hang for good: the
    child inherits the parent's OpenCV thread pool without its threads."""
    cv2.setNumThreads(1)


def draw(item: int | Draw) -> tuple[int, int | None]:
    """(row, augmentation seed) of a sampler item: a training `Draw`, or a plain row index."""
    return (item.row, item.seed) if isinstance(item, Draw) else (int(item), None)


def passthrough_collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Collate function for datasets whose ``__getitems__`` already returns a whole batch."""
    return batch


class LabelledRows:
    """Table columns as flat numpy arrays: cheap to share with forked DataLoader workers."""

    def __init__(self, table: pd.DataFrame, root: Path, name: str | None = None) -> None:
        self.root = Path(root)
        self.name = name
        self.images = table["image"].to_numpy(dtype=str)
        self.expr = table["expr"].to_numpy(dtype=np.int64)
        self.va = table[["valence", "arousal"]].to_numpy(dtype=np.float32)

    def read(self, row: int) -> np.ndarray:
        """The RGB uint8 crop of one row; an unreadable one names the row and what fixes it."""
        where = f"row {row} of {self.root / self.name}.parquet" if self.name else ""
        return read_prepared_image(self.root, self.images[row], where)


def to_chw(image: np.ndarray) -> torch.Tensor:
    """HWC uint8 array -> CHW uint8 tensor (the model normalises on the device)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class FrameDataset(Dataset):
    """One face crop per item: {"image": uint8 [3,H,W], "expr": int64 (-1), "va": float32 [2]}.

    ``name`` is the table's name in the prepared folder ("parts/expr"), for error messages: the
    rows of ``table`` must then be the file's rows, in order.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        root: Path,
        transform: SeededTransform | None = None,
        name: str | None = None,
    ) -> None:
        self.rows = LabelledRows(table, root, name)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows.images)

    def scored_images(self) -> np.ndarray:
        """The image of every frame a validation pass scores, in batch order: every row."""
        return self.rows.images

    def _image(self, row: int, seed: int | None) -> np.ndarray:
        image = self.rows.read(row)
        return image if self.transform is None else self.transform(image, seed)

    def __getitem__(self, item: int | Draw) -> dict[str, torch.Tensor]:
        row, seed = draw(item)
        return {
            "image": to_chw(self._image(row, seed)),
            "expr": torch.tensor(self.rows.expr[row]),
            "va": torch.from_numpy(self.rows.va[row].copy()),
        }

    def __getitems__(self, items: list[int | Draw]) -> dict[str, torch.Tensor]:
        """A whole batch at once (the DataLoader's batched fetch; use `passthrough_collate`).

        One stack instead of per-sample tensors and collation; the images come out
        channels_last (a [B, H, W, C] array viewed as [B, C, H, W]), the model's layout.
        """
        rows, seeds = zip(*map(draw, items), strict=True)
        rows = list(rows)
        images = np.stack([self._image(row, seed) for row, seed in zip(rows, seeds, strict=True)])
        return {
            "image": torch.from_numpy(images).permute(0, 3, 1, 2),
            "expr": torch.from_numpy(self.rows.expr[rows]),
            "va": torch.from_numpy(self.rows.va[rows]),
        }
