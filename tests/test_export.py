"""`abaw export`: ONNX (through onnxruntime) and TorchScript round trips of the CNN and the GRU,
dynamic batch, the reported difference, the settings recorded in the files, bad checkpoints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from test_predict import write_checkpoints

from abaw_lightning import EXPR_CLASSES
from abaw_lightning.cli import main
from abaw_lightning.export import (
    CHECK_BATCH,
    METADATA_FILE,
    TOLERANCE,
    ExportableCNN,
    ExportableGRU,
    export_models,
    gru_path,
)
from abaw_lightning.stages.checkpoints import load_cnn, load_temporal


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    return write_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="module")
def references(checkpoints) -> tuple[ExportableCNN, ExportableGRU]:
    return ExportableCNN(load_cnn(checkpoints[0])), ExportableGRU(load_temporal(checkpoints[1]))


def random_inputs(seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of 5 uint8 images at 32x32 and GRU features of 4 windows of 11 frames: sizes the
    export never saw (dynamic batch and time axes)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return images, torch.randn((4, 11, 2, 128), generator=generator)


def expected(module: torch.nn.Module, inputs: torch.Tensor) -> list[np.ndarray]:
    with torch.inference_mode():
        return [value.numpy() for value in module(inputs)]


def test_onnx_round_trip_through_the_cli(checkpoints, references, tmp_path, capsys):
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    args = ["export", "--ckpt", str(checkpoints[0]), "--gru-ckpt", str(checkpoints[1])]
    assert main([*args, "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for path in (out, tmp_path / "model_gru.onnx"):
        match = re.search(rf"wrote {path} \(onnx\): max \|exported - PyTorch\| = (\S+) ", printed)
        assert match and float(match.group(1)) <= TOLERANCE
    assert f"on a random batch of {CHECK_BATCH}" in printed
    images, features = random_inputs()
    cnn = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in cnn.get_inputs()] == ["images"]
    assert [o.name for o in cnn.get_outputs()] == ["expr_logits", "va", "va_logits", "features"]
    found = cnn.run(None, {"images": images.numpy()})
    assert [value.shape for value in found] == [(5, 7), (5, 2), (5, 40), (5, 2, 128)]
    for ours, theirs in zip(found, expected(references[0], images), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    meta = cnn.get_modelmeta().custom_metadata_map
    assert json.loads(meta["image_size"]) == 32 and json.loads(meta["resize"]) is None
    assert json.loads(meta["expr_classes"]) == list(EXPR_CLASSES)
    gru = onnxruntime.InferenceSession(str(gru_path(out)), providers=["CPUExecutionProvider"])
    found = gru.run(None, {"features": features.numpy()})
    assert [value.shape for value in found] == [(4, 11, 7), (4, 11, 2), (4, 11, 40)]
    for ours, theirs in zip(found, expected(references[1], features), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    assert json.loads(gru.get_modelmeta().custom_metadata_map["window_length"]) == 8


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_round_trip_from_python(checkpoints, references, tmp_path):
    out = tmp_path / "model.pt"
    results = export_models(checkpoints[0], out, "torchscript", checkpoints[1])
    assert list(results) == [out, tmp_path / "model_gru.pt"]
    assert all(isinstance(value, float) and 0 <= value <= TOLERANCE for value in results.values())
    images, features = random_inputs(seed=9)
    extra = {METADATA_FILE: ""}
    cnn = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra[METADATA_FILE])["image_size"] == 32
    gru = torch.jit.load(str(tmp_path / "model_gru.pt"))
    for module, reference, inputs in ((cnn, references[0], images), (gru, references[1], features)):
        with torch.inference_mode():
            found = [value.numpy() for value in module(inputs)]
        for ours, theirs in zip(found, expected(reference, inputs), strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    va = found[1]
    assert va.shape == (4, 11, 2) and np.abs(va).max() <= 1.0


def test_export_rejects_wrong_checkpoints_and_formats(checkpoints, tmp_path, capsys):
    cnn, gru = (str(path) for path in checkpoints)
    out = str(tmp_path / "model.onnx")
    assert main(["export", "--ckpt", gru, "--out", out]) == 2
    assert "is it a CNN-stage checkpoint?" in capsys.readouterr().err
    assert main(["export", "--ckpt", str(tmp_path / "nope.ckpt"), "--out", out]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--ckpt", cnn, "--format", "tflite", "--out", out])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
