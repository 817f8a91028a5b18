"""Reading trained networks back from stage checkpoints (weights_only: no code runs on load)."""

from __future__ import annotations

from pathlib import Path

import torch

from abaw_lightning.errors import UserError
from abaw_lightning.models import MultitaskCNN, TemporalModel
from abaw_lightning.models.backbone import default_layout
from abaw_lightning.models.weights import load_tensors


def read_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint as plain tensors and containers; clear errors for bad files."""
    path = Path(path)
    checkpoint = load_tensors(path, "checkpoint")
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"{path} is not a Lightning checkpoint of this project (no state_dict)")
    return checkpoint


def _model_state(checkpoint: dict) -> dict:
    """The trained network's weights: the ``model.`` entries of a stage's state dict."""
    prefix = "model."
    return {
        key[len(prefix) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(prefix)
    }


def _load(network: torch.nn.Module, checkpoint: dict, path: Path) -> torch.nn.Module:
    try:
        network.load_state_dict(_model_state(checkpoint))
    except RuntimeError as error:
        raise UserError(f"{path} does not fit its own model settings: {error}") from error
    return network.eval()


def rebuild_settings(settings: dict) -> dict:
    """The `MultitaskCNN` settings that rebuild a trained network without reading its backbone
    weights again: ``weights: none`` but the layout those weights fixed (a FER+-trained network
    keeps its Caffe layout; checkpoints without a ``layout`` key derive it from ``weights``)."""
    layout = settings.get("layout") or default_layout(settings.get("weights", "none"))
    return {**settings, "weights": "none", "weights_path": None, "layout": layout}


def load_cnn_and_settings(path: str | Path) -> tuple[MultitaskCNN, dict]:
    """The multitask CNN of a CNN-stage checkpoint (eval mode) and the stage's hyperparameters,
    from one read of the file."""
    checkpoint = read_checkpoint(path)
    hyperparameters = checkpoint.get("hyper_parameters", {})
    settings = hyperparameters.get("model")
    if not isinstance(settings, dict):
        if "window_length" in hyperparameters:  # what a GRU stage records
            raise UserError(
                f"{path} is a GRU-stage checkpoint: pass it as --gru-ckpt, and the checkpoint of "
                "the CNN student it was trained on as --ckpt"
            )
        raise UserError(f"{path} has no model settings: is it a CNN-stage checkpoint?")
    model = MultitaskCNN(**rebuild_settings(settings))
    return _load(model, checkpoint, Path(path)), hyperparameters


def load_temporal_and_settings(path: str | Path) -> tuple[TemporalModel, dict]:
    """The GRU model of a GRU-stage checkpoint (eval mode) and the stage's hyperparameters."""
    checkpoint = read_checkpoint(path)
    hyperparameters = checkpoint.get("hyper_parameters", {})
    hidden_size = hyperparameters.get("hidden_size")
    if hidden_size is None:
        raise UserError(f"{path} has no hidden_size: is it a GRU-stage checkpoint?")
    return _load(TemporalModel(hidden_size), checkpoint, Path(path)), hyperparameters


def load_cnn(path: str | Path) -> MultitaskCNN:
    """The multitask CNN of a CNN-stage checkpoint (teacher or student), in eval mode."""
    return load_cnn_and_settings(path)[0]


def load_temporal(path: str | Path) -> TemporalModel:
    """The GRU model of a GRU-stage checkpoint (teacher or student), in eval mode."""
    return load_temporal_and_settings(path)[0]
