"""`abaw export`: ONNX (through onnxruntime) and TorchScript round trips of the CNN and the GRU,
dynamic batch, the reported difference, the settings recorded in the files (resolved, no paths),
the ONNX file reproducing `abaw predict` on a real photograph, bad checkpoints."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from test_predict import write_checkpoints

from abaw_lightning import EXPR_CLASSES
from abaw_lightning.cli import main
from abaw_lightning.inference.detection import crop_face
from abaw_lightning.inference.export import (
    CHECK_BATCH,
    METADATA_FILE,
    TOLERANCE,
    ExportableCNN,
    ExportableGRU,
    export_models,
    gru_path,
)
from abaw_lightning.inference.predictor import Predictor
from abaw_lightning.models.checkpoints import load_cnn, load_temporal


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
    assert json.loads(meta["image_size"]) == 32
    assert json.loads(meta["resize"]) == 38  # resize: null, resolved as validation: 32*134/112
    assert json.loads(meta["expr_classes"]) == list(EXPR_CLASSES)
    digest = hashlib.sha256(checkpoints[0].read_bytes()).hexdigest()
    assert json.loads(meta["checkpoint_sha256"]) == digest and "checkpoint" not in meta
    assert not any(str(checkpoints[0].parent) in value for value in meta.values())
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
    assert "is a GRU-stage checkpoint: pass it as --gru-ckpt" in capsys.readouterr().err
    assert main(["export", "--ckpt", str(tmp_path / "nope.ckpt"), "--out", out]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--ckpt", cnn, "--format", "tflite", "--out", out])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err


def test_onnx_reproduces_abaw_predict_on_a_real_photograph(tmp_path_factory, tmp_path):
    """A checkpoint at 48 px with resize: null: the file says resize 57 (48 x 134 / 112), and the
    face crop of the astronaut photograph, resized and centre-cropped as the metadata says, gives
    the probabilities and valence-arousal that `abaw predict` wrote."""
    onnxruntime = pytest.importorskip("onnxruntime")
    data = pytest.importorskip("skimage.data", reason="scikit-image ships the photograph")
    ckpt, _ = write_checkpoints(tmp_path_factory.mktemp("checkpoints48"), image_size=48)
    model = tmp_path / "model.onnx"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(model)]) == 0
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    meta = {
        key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()
    }
    assert (meta["image_size"], meta["resize"]) == (48, 57)
    assert not any(str(ckpt.parent) in str(value) for value in meta.values())
    rgb = data.astronaut()
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), rgb[:, :, ::-1])
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(ckpt), str(photo), "--out", str(out)]) == 0
    row = pd.read_csv(out / "astronaut.csv").iloc[0]
    crop = crop_face(rgb, (row["x"], row["y"], row["w"], row["h"]))  # as in README: margin 0.1
    size, resize = meta["image_size"], meta["resize"]
    offset = (resize - size) // 2
    resized = cv2.resize(crop, (resize, resize), interpolation=cv2.INTER_LINEAR)
    image = resized[offset : offset + size, offset : offset + size]
    expr_logits, va, _, _ = session.run(None, {"images": image.transpose(2, 0, 1)[None].copy()})
    probs = torch.from_numpy(expr_logits).softmax(dim=-1).numpy()
    np.testing.assert_allclose(probs[0], row[list(EXPR_CLASSES)].to_numpy(float), atol=1e-4)
    np.testing.assert_allclose(va[0], row[["valence", "arousal"]].to_numpy(float), atol=1e-4)
    exact = Predictor.from_checkpoints(ckpt, device="cpu", progress=False).predict_images([photo])
    np.testing.assert_allclose(
        probs[0], exact.loc[0, list(EXPR_CLASSES)].to_numpy(float), atol=1e-5
    )
    assert probs[0].max() > 0.3  # not a flat distribution: the comparison has something to match
