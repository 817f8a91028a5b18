"""`abaw export`: the trained CNN with its heads (and the GRU, as a second file) as ONNX or
TorchScript, taking uint8 images, checked against PyTorch on a random batch."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from abaw_lightning import EXPR_CLASSES
from abaw_lightning.data.loading.transforms import default_resize
from abaw_lightning.errors import UserError
from abaw_lightning.files import sha256_file
from abaw_lightning.losses import va_expectation
from abaw_lightning.models.checkpoints import load_cnn_and_settings, load_temporal_and_settings
from abaw_lightning.models.features import HEADS
from abaw_lightning.models.heads import HEAD_FEATURES

FORMATS = ("onnx", "torchscript")


TOLERANCE = 1e-3
"""Largest accepted |exported - PyTorch| over all outputs of the check batch."""


CHECK_BATCH = 3
"""Batch size of the check: not the traced one (2 for the CNN, 1 for the GRU), so the dynamic
batch axis is exercised."""


METADATA_FILE = "abaw.json"
"""Name of the settings record inside a TorchScript file (ONNX: metadata_props)."""


CNN_OUTPUTS = ("expr_logits", "va", "va_logits", "features")


GRU_OUTPUTS = ("expr_logits", "va", "va_logits")


class ExportableCNN(nn.Module):
    """uint8 images [N, 3, S, S] (RGB, resized and centre-cropped as in validation) ->
    ``expr_logits`` [N, 7], ``va`` [N, 2] (valence, arousal), ``va_logits`` [N, 40],
    ``features`` [N, 2, 128] (EXPR then VA head feature: the GRU's input)."""

    def __init__(self, cnn: nn.Module, anchors: str = "linspace") -> None:
        super().__init__()
        self.cnn = cnn.eval()
        self.anchors = anchors

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        outputs = self.cnn(images)
        features = torch.stack([outputs[head] for head in HEADS], dim=1)
        va = va_expectation(outputs["va"], self.anchors)
        return outputs["expr"], va, outputs["va"], features


class ExportableGRU(nn.Module):
    """features [B, T, 2, 128] -> ``expr_logits`` [B, T, 7], ``va`` [B, T, 2], ``va_logits``
    [B, T, 40]; trained on windows of T = window_length."""

    def __init__(self, gru: nn.Module, anchors: str = "linspace") -> None:
        super().__init__()
        self.gru = gru.eval()
        self.anchors = anchors

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        outputs = self.gru(features)
        return outputs["expr"], va_expectation(outputs["va"], self.anchors), outputs["va"]


def gru_path(out: Path) -> Path:
    """Where the GRU goes beside the CNN file: `<name>_gru<suffix>`."""
    out = Path(out)
    return out.with_name(f"{out.stem}_gru{out.suffix}")


def _save_onnx(module: nn.Module, example: Tensor, out: Path, spec: dict) -> None:
    try:
        import onnx
    except ImportError as error:
        raise UserError(
            "ONNX export needs onnx and onnxruntime: pip install -e '.[export]'"
        ) from error
    names = [spec["input"], *spec["outputs"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(out),
            input_names=[spec["input"]],
            output_names=list(spec["outputs"]),
            dynamic_axes={name: spec["dynamic"] for name in names},
            opset_version=17,
            dynamo=False,
        )
    model = onnx.load(str(out))
    for key, value in spec["metadata"].items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, str(out))


def _save_torchscript(module: nn.Module, example: Tensor, out: Path, spec: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={METADATA_FILE: json.dumps(spec["metadata"])})


def _run_exported(out: Path, fmt: str, spec: dict, inputs: Tensor) -> list[np.ndarray]:
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError as error:
            raise UserError(
                "the ONNX check needs onnxruntime: pip install -e '.[export]'"
            ) from error
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        return session.run(list(spec["outputs"]), {spec["input"]: inputs.numpy()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(out), map_location="cpu").eval()
        with torch.inference_mode():
            return [value.numpy() for value in loaded(inputs)]


def _export(
    module: nn.Module, example: Tensor, check: Tensor, out: Path, fmt: str, spec: dict
) -> float:
    """Save `module` traced on `example`, run the file on `check`; the max abs difference."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval().cpu()
    (_save_onnx if fmt == "onnx" else _save_torchscript)(module, example, out, spec)
    with torch.inference_mode():
        expected = [value.numpy() for value in module(check)]
    found = _run_exported(out, fmt, spec, check)
    difference = max(float(np.abs(e - f).max()) for e, f in zip(expected, found, strict=True))
    if not difference <= TOLERANCE:
        raise UserError(
            f"{out}: the exported model differs from PyTorch by {difference:.3g} "
            f"(> {TOLERANCE}); try the other --format"
        )
    return difference


def export_cnn(ckpt: str | Path, out: str | Path, fmt: str = "onnx", seed: int = 0) -> float:
    """Export the CNN of a CNN-stage checkpoint; returns max |exported - PyTorch| on a random
    uint8 batch."""
    cnn, settings = load_cnn_and_settings(ckpt)
    size = int(settings.get("image_size", 112))
    resize = settings.get("resize")
    resize = default_resize(size) if resize is None else int(resize)  # as validation resolves it
    anchors = settings.get("va_anchors", "linspace")
    module = ExportableCNN(cnn, anchors)
    generator = torch.Generator().manual_seed(seed)
    example, check = (
        torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
        for n in (2, CHECK_BATCH)
    )
    metadata = {
        "input": (
            "uint8 RGB [N, 3, image_size, image_size]: a square face crop resized to resize x "
            "resize (bilinear), then its centre image_size x image_size (offset "
            "(resize - image_size) // 2)"
        ),
        "image_size": size,
        "resize": resize,
        "va_anchors": anchors,
        "expr_classes": list(EXPR_CLASSES),
        "checkpoint_sha256": sha256_file(ckpt),
    }
    spec = {
        "input": "images",
        "outputs": CNN_OUTPUTS,
        "dynamic": {0: "batch"},
        "metadata": metadata,
    }
    return _export(module, example, check, Path(out), fmt, spec)


def export_gru(gru_ckpt: str | Path, out: str | Path, fmt: str = "onnx", seed: int = 0) -> float:
    """Export the GRU of a GRU-stage checkpoint (batch and time axes dynamic); returns max
    |exported - PyTorch| on random features."""
    gru, settings = load_temporal_and_settings(gru_ckpt)
    length = int(settings.get("window_length", 32))
    anchors = settings.get("va_anchors", "linspace")
    module = ExportableGRU(gru, anchors)
    generator = torch.Generator().manual_seed(seed)
    example, check = (
        torch.randn((n, length, len(HEADS), HEAD_FEATURES), generator=generator)
        for n in (1, CHECK_BATCH)
    )
    metadata = {
        "input": "float32 features [B, T, 2, 128] of the CNN file (EXPR then VA head feature)",
        "window_length": length,
        "va_anchors": anchors,
        "expr_classes": list(EXPR_CLASSES),
        "checkpoint_sha256": sha256_file(gru_ckpt),
    }
    spec = {
        "input": "features",
        "outputs": GRU_OUTPUTS,
        "dynamic": {0: "batch", 1: "time"},
        "metadata": metadata,
    }
    return _export(module, example, check, Path(out), fmt, spec)


def export_models(
    ckpt: str | Path, out: str | Path, fmt: str = "onnx", gru_ckpt: str | Path | None = None
) -> dict[Path, float]:
    """Export the CNN to `out` (and the GRU to `gru_path(out)`); file -> max abs difference."""
    out = Path(out)
    results = {out: export_cnn(ckpt, out, fmt)}
    if gru_ckpt is not None:
        results[gru_path(out)] = export_gru(gru_ckpt, gru_path(out), fmt)
    return results
