"""Head features of the frozen CNN student through `Trainer.predict`, written batch by batch into
the memory-mapped cache of the GRU stage (METHOD.md section 4); also the same features online."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from abaw_lightning.data.datasets import to_chw
from abaw_lightning.data.prepared import read_prepared_image
from abaw_lightning.errors import UserError

HEADS = ("expr_feature", "va_feature")
"""Axis 2 of the cache: 0 = EXPR head feature, 1 = VA head feature."""

Transform = Callable[[np.ndarray], np.ndarray]


def head_features(model: nn.Module, images: Tensor, channels_last: bool = True) -> Tensor:
    """uint8 images [N, 3, H, W] -> the two 128-d head features [N, 2, 128] of a multitask CNN."""
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    outputs = model(images)
    return torch.stack([outputs[head] for head in HEADS], dim=1)


@torch.inference_mode()
def extract_online(
    model: nn.Module, images: Tensor, batch_size: int = 256, channels_last: bool = False
) -> np.ndarray:
    """Head features [N, 2, 128] (float32) of uint8 images [N, 3, H, W], computed directly."""
    model.eval()
    device = next(model.parameters()).device
    chunks = [
        head_features(model, chunk.to(device), channels_last).float().cpu()
        for chunk in images.split(batch_size)
    ]
    return torch.cat(chunks).numpy()


class FrameViews(Dataset):
    """Every frame read once, in all its views: {"images": uint8 [U, 3, H, W], "ids": int64}."""

    def __init__(self, images: Sequence[str], root: Path, transforms: Sequence[Transform]) -> None:
        self.images = np.asarray(images, dtype=str)
        self.root = Path(root)
        self.transforms = list(transforms)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image = read_prepared_image(self.root, self.images[index])
        views = torch.stack([to_chw(transform(image)) for transform in self.transforms])
        return {"images": views, "ids": torch.tensor(index, dtype=torch.int64)}


class FeatureExtractor(pl.LightningModule):
    """A frozen, eval-mode multitask CNN whose `predict_step` gives [B, U, 2, 128] float16."""

    def __init__(self, model: nn.Module, channels_last: bool = True) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        images = batch["images"]
        frames, views = images.shape[:2]
        features = head_features(self.model, images.flatten(0, 1), self.channels_last)
        features = features.to(torch.float16).view(frames, views, *features.shape[1:])
        if not torch.isfinite(features).all():
            raise UserError(
                f"non-finite head features in prediction batch {batch_idx}: the checkpoint's "
                "features overflow float16 or are NaN; check the CNN stage's checkpoint."
            )
        return features


class FeatureWriter(BasePredictionWriter):
    """Writes each batch's [B, U, 2, 128] into the [V, N, 2, 128] .npy memmap at its frame ids.

    ``inverse[v]`` is the computed view that cache view ``v`` copies; nothing is kept in memory.
    """

    def __init__(self, path: Path, inverse: Sequence[int]) -> None:
        super().__init__(write_interval="batch")
        self.path = Path(path)
        self.inverse = np.asarray(inverse, dtype=np.int64)
        self.array: np.memmap | None = None
        self.written: np.ndarray | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.array = np.load(self.path, mmap_mode="r+")
        self.written = np.zeros(self.array.shape[1], dtype=bool)

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Tensor,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        ids = batch["ids"].cpu().numpy()
        values = prediction.cpu().numpy()[:, self.inverse]
        self.array[:, ids] = values.transpose(1, 0, 2, 3)
        self.written[ids] = True

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.array.flush()


def predict_into(
    path: Path,
    model: nn.Module,
    dataset: FrameViews,
    inverse: Sequence[int],
    batch_size: int = 256,
    num_workers: int = 0,
    trainer_kwargs: dict | None = None,
) -> None:
    """Fill the preallocated .npy memmap at `path` with the features of every frame of `dataset`.

    `batch_size` counts images per forward pass: a batch holds batch_size // U frames (at least
    one), each with its U computed views. Extraction runs on one device.
    """
    frames_per_batch = max(1, batch_size // len(dataset.transforms))
    loader = DataLoader(
        dataset,
        batch_size=frames_per_batch,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
    writer = FeatureWriter(path, inverse)
    settings = {
        **(trainer_kwargs or {}),
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
        "logger": False,
        "enable_checkpointing": False,
        "callbacks": [writer],
        "default_root_dir": Path(path).parent,
    }
    trainer = pl.Trainer(**settings)
    trainer.predict(FeatureExtractor(model), dataloaders=loader, return_predictions=False)
    missing = np.flatnonzero(~writer.written)
    if len(missing):
        raise UserError(
            f"feature extraction covered {len(dataset) - len(missing)} of {len(dataset)} frames "
            f"(first missing: {dataset.images[missing[0]]}); remove limit_predict_batches from "
            "the trainer settings and run again."
        )
