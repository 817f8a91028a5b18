"""Per-frame validation predictions of a finished stage's best checkpoint, for `abaw report`
(confusion matrix, valence-arousal density) and for checking metrics.json frame by frame."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import move_data_to_device
from torch.utils.data import Dataset

from abaw_lightning.losses import va_expectation
from abaw_lightning.models.checkpoints import read_checkpoint
from abaw_lightning.schema import VALIDATION
from abaw_lightning.stages.base import AffectStage

PREDICTION_COLUMNS = (
    "set",
    "image",
    "expr_true",
    "expr_pred",
    "valence_true",
    "arousal_true",
    "valence_pred",
    "arousal_pred",
)


def frame_images(dataset: Dataset) -> np.ndarray:
    """The image path of every scored frame of a validation dataset, in the order its batches
    flatten: the dataset's own `scored_images()`."""
    scored = getattr(dataset, "scored_images", None)
    if scored is None:
        raise TypeError(
            f"a validation dataset must say which frames it scores (scored_images()); "
            f"{type(dataset).__name__} does not"
        )
    return scored()


def predict_validation(
    trainer: pl.Trainer,
    module: AffectStage,
    datamodule: pl.LightningDataModule,
    checkpoint: str | Path,
) -> pd.DataFrame:
    """Run ``checkpoint``'s weights over the validation sets the way validation does (device,
    precision, batches, limit_val_batches): one row per scored frame (`PREDICTION_COLUMNS`)."""
    module.load_state_dict(read_checkpoint(checkpoint)["state_dict"])
    device = trainer.strategy.root_device
    module.to(device).eval()
    for network in module.frozen.values():
        network.to(device)
    datamodule.setup("validate")
    loaders = datamodule.val_dataloader()
    limits = list(trainer.num_val_batches)
    if len(limits) != len(loaders):  # fit ran in spawned processes: no limits known here
        limits = [math.inf] * len(loaders)
    tables = [
        _predict_set(trainer, module, loader, limit, name)
        for name, loader, limit in zip(VALIDATION, loaders, limits, strict=True)
    ]
    return pd.concat(tables, ignore_index=True)


def _predict_set(trainer, module: AffectStage, loader, limit: float, name: str) -> pd.DataFrame:
    columns: dict[str, list[np.ndarray]] = {key: [] for key in PREDICTION_COLUMNS[2:]}
    with torch.no_grad():
        for index, batch in enumerate(loader):
            if index >= limit:
                break
            batch = move_data_to_device(batch, module.device)
            with trainer.precision_plugin.val_step_context():
                outputs, labels = module.validation_outputs(batch)
            va = va_expectation(outputs["va"].float(), module.va_anchors).cpu().numpy()
            true_va = labels["va"].float().cpu().numpy()
            columns["expr_true"].append(labels["expr"].cpu().numpy())
            columns["expr_pred"].append(outputs["expr"].argmax(dim=-1).cpu().numpy())
            columns["valence_true"].append(true_va[:, 0])
            columns["arousal_true"].append(true_va[:, 1])
            columns["valence_pred"].append(va[:, 0])
            columns["arousal_pred"].append(va[:, 1])
    table = pd.DataFrame({key: np.concatenate(values) for key, values in columns.items()})
    images = frame_images(loader.dataset)[: len(table)]
    table.insert(0, "image", images)
    table.insert(0, "set", name)
    return table.astype(
        {
            "expr_true": "int8",
            "expr_pred": "int8",
            **{key: "float32" for key in PREDICTION_COLUMNS[4:]},
        }
    )


def write_predictions(table: pd.DataFrame, path: Path) -> None:
    """Write the predictions parquet atomically: a complete stage never has a partial file."""
    temporary = path.with_suffix(".parquet.tmp")
    table.to_parquet(temporary, index=False)
    temporary.replace(path)
