"""Frame datasets over the prepared layout (README "Prepared dataset layout"), losses' format."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch.utils.data import Dataset, get_worker_info

from abaw_lightning.data.images import read_image
from abaw_lightning.data.manifest import check_prepared
from abaw_lightning.data.transforms import SeededTransform
from abaw_lightning.errors import UserError

COLUMNS = ("image", "source", "video", "frame", "expr", "valence", "arousal")


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


_OPENCV_THREADS_SET = False


def _single_threaded_opencv() -> None:
    """One OpenCV thread per DataLoader worker: the workers are the parallelism."""
    global _OPENCV_THREADS_SET
    if not _OPENCV_THREADS_SET and get_worker_info() is not None:
        cv2.setNumThreads(1)
        _OPENCV_THREADS_SET = True


def passthrough_collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Collate function for datasets whose ``__getitems__`` already returns a whole batch."""
    return batch


class LabelledRows:
    """Table columns as flat numpy arrays: cheap to share with forked DataLoader workers."""

    def __init__(self, table: pd.DataFrame, root: Path) -> None:
        self.root = Path(root)
        self.images = table["image"].to_numpy(dtype=str)
        self.expr = table["expr"].to_numpy(dtype=np.int64)
        self.va = table[["valence", "arousal"]].to_numpy(dtype=np.float32)

    def read(self, row: int) -> np.ndarray:
        """The RGB uint8 crop of one row."""
        _single_threaded_opencv()
        return read_image(self.root / self.images[row])


def to_chw(image: np.ndarray) -> torch.Tensor:
    """HWC uint8 array -> CHW uint8 tensor (the model normalises on the device)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class FrameDataset(Dataset):
    """One face crop per item: {"image": uint8 [3,H,W], "expr": int64 (-1), "va": float32 [2]}."""

    def __init__(
        self, table: pd.DataFrame, root: Path, transform: SeededTransform | None = None
    ) -> None:
        self.rows = LabelledRows(table, root)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows.images)

    def _image(self, index: int) -> np.ndarray:
        image = self.rows.read(index)
        return image if self.transform is None else self.transform(image)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "image": to_chw(self._image(index)),
            "expr": torch.tensor(self.rows.expr[index]),
            "va": torch.from_numpy(self.rows.va[index].copy()),
        }

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch at once (the DataLoader's batched fetch; use `passthrough_collate`).

        One stack instead of per-sample tensors and collation; the images come out
        channels_last (a [B, H, W, C] array viewed as [B, C, H, W]), the model's layout.
        """
        images = np.stack([self._image(index) for index in indices])
        return {
            "image": torch.from_numpy(images).permute(0, 3, 1, 2),
            "expr": torch.from_numpy(self.rows.expr[indices]),
            "va": torch.from_numpy(self.rows.va[indices]),
        }
