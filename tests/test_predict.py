"""Inference: ABAW 2021 submission files, videos / images / folders through `abaw predict` (the
single-face mode `--max-faces 1`, a face track's filled gaps, independent photos `--images`), the
`Predictor` API, the GRU path's windows, the Haar detector on a real photograph, pluggable
detectors, bad inputs."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from abaw_lightning import EXPR_CLASSES
from abaw_lightning.cli import main
from abaw_lightning.data.synth.faces import Affect, draw_face, face_matrix, random_identity
from abaw_lightning.data.synth.scenes import background
from abaw_lightning.errors import UserError
from abaw_lightning.inference.detection import HaarDetector, crop_face
from abaw_lightning.inference.media import read_video
from abaw_lightning.inference.predictor import (
    FACE_COLUMNS,
    PHOTO_COLUMNS,
    PREDICTION_COLUMNS,
    Predictor,
)
from abaw_lightning.inference.submission import nearest, submission_text
from abaw_lightning.stages.cnn import CnnStudent
from abaw_lightning.stages.gru import GruTeacher

OPTIMIZER = {"lr": 1e-4, "betas": [0.5, 0.999]}
WINDOW = 8
FPS = 25
VA_LINE = re.compile(r"^-?[01]\.\d{3},-?[01]\.\d{3}$")


def save_stage(stage: pl.LightningModule, path: Path) -> Path:
    """A checkpoint as Lightning writes it: the module's state dict and its hyperparameters."""
    torch.save(
        {
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": pl.__version__,
            "state_dict": stage.state_dict(),
            "hyper_parameters": dict(stage.hparams),
        },
        path,
    )
    return path


def write_checkpoints(folder: Path, image_size: int = 32) -> tuple[Path, Path]:
    """A ResNet-18 CNN student at `image_size` (resize: null, the default ratio) and a GRU (hidden
    8, windows of 8), randomly initialised; the VA output layers are scaled up so that
    predictions reach the clipped range."""
    torch.manual_seed(0)
    cnn = CnnStudent(
        model={"arch": "resnet18", "weights": "none"}, optimizer=OPTIMIZER, image_size=image_size
    )
    gru = GruTeacher(optimizer=OPTIMIZER, hidden_size=8, window_length=WINDOW)
    with torch.no_grad():
        cnn.model.va_head.classify[1].weight.mul_(40)
        cnn.model.expr_head.classify[1].weight.mul_(10)
        gru.model.tasks["va"].classify[1].weight.mul_(40)
    return save_stage(cnn, folder / "cnn.ckpt"), save_stage(gru, folder / "gru.ckpt")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    return write_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="module")
def cnn_predictor(checkpoints) -> Predictor:
    """The single-face mode (max_faces=1): the most confident face of each frame."""
    return Predictor.from_checkpoints(checkpoints[0], device="cpu", progress=False, max_faces=1)


@pytest.fixture(scope="module")
def gru_predictor(checkpoints) -> Predictor:
    return Predictor.from_checkpoints(*checkpoints, device="cpu", progress=False, max_faces=1)


def face_image(rng: np.random.Generator, height: int, width: int, box=None) -> np.ndarray:
    """A BGR scene with a drawn face whose aligned box is (x, y, size), or none when box is None."""
    image = background(rng, height, width)
    if box is not None:
        x, y, size = box
        affect = Affect(int(rng.integers(7)), *rng.uniform(-1, 1, 2))
        draw_face(image, face_matrix(x, y, size), random_identity(rng), affect)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_video(path: Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


TEST_STEMS = {
    # stem: (jpg frame numbers, video file stem, video frames)
    "101-30-640x360": ([1, 2, 3, 6, 7, 8, 9, 10], "101-30-640x360", 14),
    "102-25-480x360_left": (list(range(1, 10)), "102-25-480x360", 12),
}


@pytest.fixture(scope="module")
def abaw_test(tmp_path_factory) -> Path:
    """An Aff-Wild2 test set: cropped_aligned jpgs with gaps, videos longer than the crops (one
    under batch2 and named without the `_left` suffix), and two test lists."""
    root = tmp_path_factory.mktemp("affwild2")
    rng = np.random.default_rng(7)
    for stem, (numbers, video, count) in TEST_STEMS.items():
        folder = root / "cropped_aligned" / stem
        folder.mkdir(parents=True)
        for number in numbers:
            crop = face_image(rng, 112, 112, (0, 0, 112))
            cv2.imwrite(str(folder / f"{number:05d}.jpg"), crop)
        batch = "batch2" if stem.endswith("_left") else "batch1"
        frames = [face_image(rng, 48, 64) for _ in range(count)]
        write_video(root / "videos" / batch / f"{video}.mp4", frames)
    (root / "test_set_Expr_Challenge.txt").write_text("\n".join(TEST_STEMS) + "\n")
    (root / "test_set_VA_Challenge.txt").write_text(
        "101-30-640x360\n999-missing\n\n102-25-480x360_left"
    )
    return root


def read_crops(root: Path, stem: str) -> list[np.ndarray]:
    folder = root / "cropped_aligned" / stem
    return [cv2.imread(str(p))[:, :, ::-1].copy() for p in sorted(folder.glob("*.jpg"))]


def submission_lines(path: Path) -> list[str]:
    text = path.read_text()
    assert text.endswith("\n") and not text.endswith("\n\n")
    return text.splitlines()


def va_line(table: pd.DataFrame, row: int) -> str:
    """The expected submission line of a predicted row: 3 decimals, no negative zero."""
    values = [f"{table.loc[row, name]:.3f}" for name in ("valence", "arousal")]
    return ",".join("0.000" if value == "-0.000" else value for value in values)


def test_nearest_fill_and_submission_text():
    predicted = np.array([1, 2, 3, 6, 7, 8, 9, 10])
    filled = nearest(predicted, 14)
    assert filled.tolist() == [0, 1, 2, 2, 3, 3, 4, 5, 6, 7, 7, 7, 7, 7]
    assert nearest(np.array([3]), 4).tolist() == [0, 0, 0, 0]
    va = np.array([[-0.00004, 1.2], [-1.5, 0.12351], [0.5, -0.9999]])
    assert submission_text("va", va) == "valence,arousal\n0.000,1.000\n-1.000,0.124\n0.500,-1.000\n"
    expr = np.array([0, 6, 3])
    header = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"
    assert submission_text("expr", expr) == f"{header}\n0\n6\n3\n"


def test_cnn_submission_with_videos(checkpoints, abaw_test, cnn_predictor, tmp_path, capsys):
    out = tmp_path / "submission"
    code = main(
        [
            "predict",
            "--ckpt",
            str(checkpoints[0]),
            "--abaw-test",
            str(abaw_test / "cropped_aligned"),
            "--list",
            str(abaw_test / "test_set_Expr_Challenge.txt"),
            "--videos",
            str(abaw_test / "videos"),
            "--task",
            "both",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "101-30-640x360: 14 lines (8 predicted, 6 filled)" in capsys.readouterr().out
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.txt"))
    assert files == [
        "EXPR_Set/101-30-640x360.txt",
        "EXPR_Set/102-25-480x360_left.txt",
        "VA_Set/101-30-640x360.txt",
        "VA_Set/102-25-480x360_left.txt",
    ]
    for stem, (numbers, _, frames) in TEST_STEMS.items():
        expr = submission_lines(out / "EXPR_Set" / f"{stem}.txt")
        va = submission_lines(out / "VA_Set" / f"{stem}.txt")
        assert expr[0] == ",".join(EXPR_CLASSES) and va[0] == "valence,arousal"
        assert len(expr) == len(va) == frames + 1  # the video is longer than the crops
        assert all(VA_LINE.match(line) for line in va[1:])
        values = np.array([[float(v) for v in line.split(",")] for line in va[1:]])
        assert np.abs(values).max() <= 1.0 and np.abs(values).max() > 0.5
        table = cnn_predictor.predict_frames(read_crops(abaw_test, stem))
        classes = table[list(EXPR_CLASSES)].to_numpy().argmax(axis=1)
        rows = nearest(np.array(numbers), frames)
        assert expr[1:] == [str(c) for c in classes[rows]]
        assert va[1:] == [va_line(table, r) for r in rows]


def test_gru_submission_one_task_without_videos(checkpoints, abaw_test, gru_predictor, tmp_path):
    out = tmp_path / "submission"
    args = ["predict", "--ckpt", str(checkpoints[0]), "--gru-ckpt", str(checkpoints[1])]
    args += ["--abaw-test", str(abaw_test / "cropped_aligned"), "--out", str(out)]
    args += ["--list", str(abaw_test / "test_set_Expr_Challenge.txt"), "--task", "va"]
    assert main(args) == 0
    assert not (out / "EXPR_Set").exists()
    for stem, (numbers, _, _) in TEST_STEMS.items():
        va = submission_lines(out / "VA_Set" / f"{stem}.txt")
        assert len(va) == numbers[-1] + 1  # without the video: up to the highest jpg
        sequence = gru_predictor.predict_frames(read_crops(abaw_test, stem))
        rows = nearest(np.array(numbers), numbers[-1])
        assert va[1:] == [va_line(sequence, r) for r in rows]


def test_submission_list_naming_a_missing_video(checkpoints, abaw_test, tmp_path, capsys):
    out = tmp_path / "submission"
    args = ["predict", "--ckpt", str(checkpoints[0]), "--out", str(out), "--task", "expr"]
    args += ["--abaw-test", str(abaw_test / "cropped_aligned")]
    args += ["--list", str(abaw_test / "test_set_VA_Challenge.txt")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "1 input failed" in err
    assert "999-missing: no face crops for 999-missing" in err
    assert sorted(p.name for p in (out / "EXPR_Set").iterdir()) == [
        "101-30-640x360.txt",
        "102-25-480x360_left.txt",
    ]
    empty_videos = tmp_path / "no_videos"
    empty_videos.mkdir()
    assert main([*args, "--videos", str(empty_videos)]) == 1
    assert "no video file for 101-30-640x360 in the --videos folder" in capsys.readouterr().err


FACE_FRAMES = [True] * 5 + [False] * 3 + [True] * 5 + [False]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A 320x240 mp4 at 25 fps: one person, with three and one faceless frames."""
    rng = np.random.default_rng(3)
    identity = random_identity(np.random.default_rng(16))  # a face the Haar cascade finds
    frames = []
    for index, has_face in enumerate(FACE_FRAMES):
        image = background(rng, 240, 320)
        if has_face:
            box = face_matrix(60 + 4 * index, 50 + 2 * index, 110)
            draw_face(image, box, identity, Affect(index % 7, 0.5, 0.5))
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames)


def test_video_through_the_cli_gives_one_row_per_frame(checkpoints, video, tmp_path):
    out = tmp_path / "out"
    args = ["predict", "--ckpt", str(checkpoints[0]), str(video), "--out", str(out)]
    assert main([*args, "--max-faces", "1"]) == 0
    table = pd.read_csv(out / "clip.csv", keep_default_na=False, na_values=[""])
    assert list(table.columns) == ["frame", "time", *FACE_COLUMNS, *PREDICTION_COLUMNS]
    assert table["frame"].tolist() == list(range(len(FACE_FRAMES)))
    assert np.allclose(table["time"], np.round(np.arange(len(FACE_FRAMES)) / FPS, 4))
    assert table["face"].tolist() == FACE_FRAMES
    assert table["face_id"].isna().tolist() == [not face for face in FACE_FRAMES]
    assert (table.loc[table["face"], "face_id"] == 0).all() and not table["filled"].any()
    assert (table.loc[table["face"], "score"] > 0).all()
    assert table.loc[~table["face"], "score"].isna().all()
    faces = table[table["face"]]
    assert faces[PREDICTION_COLUMNS].notna().all().all()
    assert np.allclose(faces[list(EXPR_CLASSES)].sum(axis=1), 1.0, atol=1e-3)
    assert set(faces["expression"]) <= set(EXPR_CLASSES)
    assert faces[["valence", "arousal"]].abs().max().max() <= 1.0
    assert ((faces["w"] > 80) & (faces["w"] == faces["h"])).all()
    assert table.loc[~table["face"], ["x", *PREDICTION_COLUMNS]].isna().all().all()
    plot = cv2.imread(str(out / "clip.png"))
    assert plot is not None and plot.shape == (500, 1000, 3)


def test_gru_and_cnn_video_paths_agree_in_shape_and_alignment(cnn_predictor, gru_predictor, video):
    cnn = cnn_predictor.predict_video(video)
    gru = gru_predictor.predict_video(video)
    assert cnn.shape == gru.shape and list(cnn.columns) == list(gru.columns)
    keys = ["frame", "time", *FACE_COLUMNS]
    pd.testing.assert_frame_equal(cnn[keys], gru[keys])
    assert gru["valence"].notna().tolist() == gru["face"].tolist() == FACE_FRAMES
    assert not np.allclose(cnn.loc[cnn["face"], "valence"], gru.loc[gru["face"], "valence"])
    assert gru_predictor.predict_video(video, temporal=False).equals(cnn)


def test_a_face_track_fills_its_gaps_from_the_nearest_frame(checkpoints, video):
    """Every face (the default): the 3 faceless frames inside the track are filled from the
    nearest detected frame (the earlier on a tie), marked `filled`; the GRU runs over the whole
    filled track; the last frame, after the track, stays empty."""
    detector = HaarDetector()
    crops = [crop_face(rgb, detector(rgb)[0].box) for rgb in read_video(video) if detector(rgb)]
    assert len(crops) == sum(FACE_FRAMES) == 10
    source = [0, 1, 2, 3, 4, 4, 4, 5, 5, 6, 7, 8, 9]  # frame 0-12 -> crop (frames 0-4, 8-12)
    for gru in (None, checkpoints[1]):
        predictor = Predictor.from_checkpoints(checkpoints[0], gru, device="cpu", progress=False)
        table = predictor.predict_video(video)
        assert table["frame"].tolist() == list(range(len(FACE_FRAMES)))
        assert table["face_id"].tolist()[:13] == [0] * 13 and pd.isna(table["face_id"].iloc[13])
        assert table["filled"].tolist() == [False] * 5 + [True] * 3 + [False] * 6
        assert table["face"].tolist() == FACE_FRAMES
        assert table.loc[table["filled"], ["x", "score"]].isna().all().all()
        _, outputs = predictor.cnn_outputs(crops)
        filled = {key: value[source] for key, value in outputs.items()}
        probs, va = predictor.decode(filled)
        found = table.iloc[:13]
        np.testing.assert_allclose(found[list(EXPR_CLASSES)], probs, atol=1e-6)
        np.testing.assert_allclose(found[["valence", "arousal"]], va, atol=1e-6)
        assert table.iloc[13][PREDICTION_COLUMNS].isna().all()


def test_gru_windows_cover_every_frame_once(gru_predictor):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(13, 2, 128)).astype(np.float32)
    logits = gru_predictor.temporal_outputs(features)
    with torch.inference_mode():
        first = gru_predictor.gru(torch.from_numpy(features[None, 0:8]))
        last = gru_predictor.gru(torch.from_numpy(features[None, 5:13]))  # end-aligned
        short = gru_predictor.gru(torch.from_numpy(features[None, [0, 1, 2, 2, 2, 2, 2, 2]]))
    for task in ("expr", "va"):
        expected = np.concatenate([first[task][0].numpy(), last[task][0, 3:].numpy()])
        np.testing.assert_allclose(logits[task], expected, rtol=1e-5, atol=1e-5)
        padded = gru_predictor.temporal_outputs(features[:3])[task]
        np.testing.assert_allclose(padded, short[task][0, :3].numpy(), rtol=1e-5, atol=1e-5)


def test_predictor_api(checkpoints, cnn_predictor):
    from abaw_lightning import Predictor as Exported

    assert Exported is Predictor
    assert (cnn_predictor.image_size, cnn_predictor.window_length) == (32, 32)
    rng = np.random.default_rng(1)
    crops = np.stack([face_image(rng, 112, 112, (0, 0, 112))[:, :, ::-1] for _ in range(3)])
    from_array = cnn_predictor.predict_frames(crops)
    from_list = cnn_predictor.predict_frames(list(crops))
    assert list(from_array.columns) == ["frame", *PREDICTION_COLUMNS]
    pd.testing.assert_frame_equal(from_array, from_list)
    assert np.allclose(from_array[list(EXPR_CLASSES)].sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(UserError, match="face crop 0 is not an RGB uint8"):
        cnn_predictor.predict_frames([crops[0].astype(np.float32)])
    with pytest.raises(UserError, match="has no GRU"):
        cnn_predictor.temporal_outputs(np.zeros((2, 2, 128), np.float32))
    gru = Predictor.from_checkpoints(*checkpoints, device="cpu", progress=False)
    assert (gru.window_length, gru.device.type) == (WINDOW, "cpu")


def test_haar_detector_finds_the_face_of_a_real_photograph(checkpoints, tmp_path, capsys):
    data = pytest.importorskip("skimage.data", reason="scikit-image ships the photograph")
    photo = tmp_path / "photos" / "astronaut.png"
    photo.parent.mkdir()
    cv2.imwrite(str(photo), data.astronaut()[:, :, ::-1])
    cv2.imwrite(str(photo.parent / "wall.png"), np.full((200, 200, 3), 90, np.uint8))
    (photo.parent / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    args = ["predict", "--ckpt", str(checkpoints[0]), "--out", str(out)]
    assert main([*args, str(photo), str(photo.parent)]) == 0
    err = capsys.readouterr().err
    assert f"1 unreadable image(s) in {photo.parent} left out" in err
    single = pd.read_csv(out / "astronaut.csv", keep_default_na=False, na_values=[""])
    assert list(single.columns) == ["frame", "image", *FACE_COLUMNS, *PREDICTION_COLUMNS]
    row = single.iloc[0]
    assert len(single) == 1 and row["face"] and row["image"] == "astronaut.png"
    assert row["face_id"] == 0 and row["score"] > 0 and not row["filled"]
    # Eileen Collins' face: about x 175-275, y 65-165 in the 512x512 photograph
    assert abs(row["x"] - 177) <= 8 and abs(row["y"] - 66) <= 8 and 85 <= row["w"] <= 110
    assert abs(sum(row[name] for name in EXPR_CLASSES) - 1.0) < 1e-3
    assert row["expression"] in EXPR_CLASSES and -1 <= row["valence"] <= 1
    folder = pd.read_csv(out / "photos.csv", keep_default_na=False, na_values=[""])
    assert folder["image"].tolist() == ["astronaut.png", "wall.png"]
    assert folder["face"].tolist() == [True, False]


HAPPY = Affect(4, 0.8, 0.6)


def write_photos(folder: Path) -> Path:
    """Three unrelated photos (name order): a face, a wall, two faces (the left one where the
    first photo's face is, the right one detected more confidently), and an unreadable file."""
    rng = np.random.default_rng(5)
    identity = random_identity(np.random.default_rng(16))  # a face the Haar cascade finds
    folder.mkdir()
    for name, width, faces in (
        ("beach.png", 320, [((60, 50, 110), HAPPY)]),
        ("wall.png", 320, []),
        ("wedding.png", 480, [((60, 50, 110), Affect(5, -0.7, -0.2)), ((300, 60, 110), HAPPY)]),
    ):
        image = background(rng, 240, width)
        for box, affect in faces:
            draw_face(image, face_matrix(*box), identity, affect)
        cv2.imwrite(str(folder / name), np.clip(image, 0, 255).astype(np.uint8))
    (folder / "zz_broken.jpg").write_bytes(b"not a jpeg")
    return folder


def test_images_predicts_each_photo_on_its_own(checkpoints, tmp_path, capsys):
    """--images: a row per face of each photo, numbered left to right, exactly what predicting
    that photo alone with the CNN gives, even with a GRU; no face carried to the faceless photo.
    Without it the folder is one sequence (the wall gets the beach face's track, filled) and a
    warning says so, since the names are not numbered frames."""
    photos = write_photos(tmp_path / "photos")
    args = ["predict", "--ckpt", str(checkpoints[0]), str(photos), "--out"]
    cnn = Predictor.from_checkpoints(checkpoints[0], device="cpu", progress=False)
    alone = [
        cnn.predict_images([photos / name]).drop(columns=["frame", "filled"])
        for name in ("beach.png", "wall.png", "wedding.png")
    ]
    expected = pd.concat(alone, ignore_index=True)
    assert expected["face"].tolist() == [True, False, True, True]
    as_csv = pd.read_csv(
        io.StringIO(expected.to_csv(index=False)), keep_default_na=False, na_values=[""]
    )
    for gru in ([], ["--gru-ckpt", str(checkpoints[1])]):
        out = tmp_path / f"photos_{len(gru)}"
        assert main([*args, str(out), "--images", *gru]) == 0
        err = capsys.readouterr().err
        assert "1 unreadable image(s)" in err and "not numbered frames" not in err
        table = pd.read_csv(out / "photos.csv", keep_default_na=False, na_values=[""])
        assert list(table.columns) == [*PHOTO_COLUMNS, *PREDICTION_COLUMNS]
        assert table["image"].tolist() == ["beach.png", "wall.png", "wedding.png", "wedding.png"]
        assert table["face_id"].tolist()[2:] == [0, 1] and table["x"].tolist()[2] < 100
        assert table.loc[2, "score"] < table.loc[3, "score"]  # numbered by place, not score
        assert table.loc[1, ["face_id", "x", *PREDICTION_COLUMNS]].isna().all()
        pd.testing.assert_frame_equal(table, as_csv, atol=1e-4)
    api = cnn.predict_photos(sorted(photos.iterdir()))
    assert api.attrs["unreadable"] == [str(photos / "zz_broken.jpg")]
    pd.testing.assert_frame_equal(api, expected, check_dtype=False)
    one = Predictor.from_checkpoints(checkpoints[0], device="cpu", progress=False, max_faces=1)
    (best,) = one.predict_photos([photos / "wedding.png"]).itertuples()  # the most confident
    assert (best.face_id, best.x, best.score) == (0, *expected.loc[3, ["x", "score"]])

    gru_args = [*args, str(tmp_path / "sequence"), "--gru-ckpt", str(checkpoints[1])]
    assert main(gru_args) == 0
    assert f"{photos}: the names are not numbered frames" in capsys.readouterr().err
    sequence = pd.read_csv(tmp_path / "sequence" / "photos.csv")
    assert sequence.loc[1, "filled"] and sequence.loc[1, ["Neutral", "valence"]].notna().all()


def write_damaged_inputs(video: Path, folder: Path) -> None:
    """A cut video (its index, at the end, gone), a video whose frames 5-13 no longer decode, and
    a folder of two frames, the second a cut PNG."""
    data = video.read_bytes()
    (folder / "cut.mp4").write_bytes(data[: len(data) // 2])
    start, end = len(data) // 3, len(data) // 2
    damaged = np.random.default_rng(0).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    (folder / "damaged.mp4").write_bytes(data[:start] + damaged + data[end:])
    (folder / "frames").mkdir()
    png = cv2.imencode(".png", np.full((64, 64, 3), 90, np.uint8))[1].tobytes()
    (folder / "frames" / "00001.png").write_bytes(png)
    (folder / "frames" / "00002.png").write_bytes(png[: len(png) // 2])


def test_damaged_inputs_are_reported_by_file(checkpoints, video, tmp_path, capsys):
    """What FFmpeg and OpenCV would say without naming the file, abaw says with it: a video that
    does not open, one that decodes only part of the frames its container lists (its CSV has
    those), an unreadable image."""
    write_damaged_inputs(video, tmp_path)
    inputs = [str(tmp_path / name) for name in ("cut.mp4", "damaged.mp4", "frames")]
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(checkpoints[0]), *inputs, "--out", str(out)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"cannot open video {tmp_path / 'cut.mp4'}: not a video OpenCV can decode" in err
    decoded = pd.read_csv(out / "damaged.csv")["frame"].max() + 1
    assert 0 < decoded < len(FACE_FRAMES)
    assert (
        f"{tmp_path / 'damaged.mp4'}: {decoded} of the {len(FACE_FRAMES)} frames its container "
        "lists could be decoded (the video is damaged or cut short)"
    ) in err
    assert f"1 unreadable image(s) in {tmp_path / 'frames'} left out" in err


READ_DAMAGED = """
import sys
import cv2, numpy as np
from abaw_lightning.quiet import quiet_libraries
if sys.argv[1] == "quiet":
    quiet_libraries()  # after cv2's import, as in `abaw predict`
cv2.VideoCapture("cut.mp4")
capture = cv2.VideoCapture("damaged.mp4")
while capture.read()[0]:
    pass
cv2.imdecode(np.fromfile("frames/00002.png", np.uint8), cv2.IMREAD_COLOR)
"""


def test_opencv_and_ffmpeg_chatter_is_off_unless_the_user_sets_its_levels(video, tmp_path):
    """The damaged inputs make FFmpeg and OpenCV print lines that name no file; `abaw`'s
    quiet_libraries turns them off, except where the user set OPENCV_LOG_LEVEL and
    OPENCV_FFMPEG_LOGLEVEL."""
    write_damaged_inputs(video, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    user = {"OPENCV_LOG_LEVEL": "WARNING", "OPENCV_FFMPEG_LOGLEVEL": "16"}
    chatter = {
        "FFmpeg, cut": r"moov atom not found",
        "FFmpeg, damaged": r"header damaged",
        "OpenCV": r"\[ WARN:.*PNG input buffer is incomplete",
    }
    for mode, levels, expected in (
        ("default", {}, set(chatter)),
        ("quiet", {}, set()),
        ("quiet", user, set(chatter)),
    ):
        command = [sys.executable, "-c", READ_DAMAGED, mode]
        run = subprocess.run(
            command, cwd=tmp_path, env={**env, **levels}, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        said = run.stdout + run.stderr
        assert {name for name, line in chatter.items() if re.search(line, said)} == expected


@pytest.mark.slow
def test_real_face_video_is_tracked_past_false_detections(checkpoints, tmp_path):
    """The photograph panned across a 400x400 video: some frames hold a second, larger and weaker
    detection (on the suit). With --max-faces 1 the most confident box, the face, is the one
    kept; with every face, the face is one complete track and the suit's boxes score lower."""
    data = pytest.importorskip("skimage.data", reason="scikit-image ships the photograph")
    photo = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    shifts = [(-60 + 3 * i, -20 + i) for i in range(15)]
    frames = [
        cv2.warpAffine(photo, np.float32([[1, 0, dx], [0, 1, dy]]), (400, 400)) for dx, dy in shifts
    ]
    video = write_video(tmp_path / "astronaut.mp4", frames, fps=30)
    expected_x = np.array([177 + dx for dx, _ in shifts])
    expected_y = np.array([66 + dy for _, dy in shifts])
    args = ["predict", "--ckpt", str(checkpoints[0]), str(video)]
    assert main([*args, "--out", str(tmp_path / "one"), "--max-faces", "1"]) == 0
    table = pd.read_csv(tmp_path / "one" / "astronaut.csv")
    assert table["face"].all() and len(table) == len(shifts)
    assert np.abs(table["x"] - expected_x).max() <= 10
    assert np.abs(table["y"] - expected_y).max() <= 10
    assert main([*args, "--out", str(tmp_path / "all")]) == 0
    every = pd.read_csv(tmp_path / "all" / "astronaut.csv")
    face = every[every["face_id"] == 0]
    assert face["frame"].tolist() == list(range(len(shifts))) and face["face"].all()
    pd.testing.assert_frame_equal(face.reset_index(drop=True), table, check_dtype=False)
    suit = every[every["face_id"] == 1]  # detected in some frames, filled in between
    assert set(every["face_id"]) == {0, 1} and suit["face"].sum() >= 3
    assert (suit["filled"] == ~suit["face"]).all() and suit["score"].isna().eq(suit["filled"]).all()
    best = face.set_index("frame")["score"]
    detected = suit[suit["face"]]
    assert (detected["score"].to_numpy() < best[detected["frame"]].to_numpy()).all()


def test_pluggable_detectors_with_and_without_scores(checkpoints, tmp_path):
    """Boxes (x, y, w, h) are taken in the detector's order (the first: the most confident);
    boxes with a score are ordered by it; a malformed box is a clear error."""
    image = tmp_path / "grey.png"
    cv2.imwrite(str(image), np.full((100, 120, 3), 128, np.uint8))
    plain = [(10, 20, 40, 40), (0, 0, 90, 90)]
    scored = [(10, 20, 40, 40, 0.2), (0, 0, 90, 90, 0.9), (60, 10, 30, 30, 0.5)]
    for boxes, max_faces, expected in (
        (plain, 1, [(0, 10, 20, 40, 40, np.nan)]),
        (plain, None, [(0, 0, 0, 90, 90, np.nan), (1, 10, 20, 40, 40, np.nan)]),
        (scored, 1, [(0, 0, 0, 90, 90, 0.9)]),
        (scored, 2, [(0, 0, 0, 90, 90, 0.9), (1, 60, 10, 30, 30, 0.5)]),
        (np.array([[10.4, 20.6, 40.0, 40.0, 0.5]]), None, [(0, 10, 21, 40, 40, 0.5)]),
        ((), None, [(None, None, None, None, None, np.nan)]),
    ):
        predictor = Predictor.from_checkpoints(
            checkpoints[0],
            device="cpu",
            progress=False,
            max_faces=max_faces,
            detector=lambda rgb, b=boxes: b,
        )
        table = predictor.predict_images([image])
        assert table["frame"].tolist() == [0] * len(expected)
        found = [
            (*(None if pd.isna(v) else v for v in row[:5]), row[5])
            for row in table[["face_id", "x", "y", "w", "h", "score"]].itertuples(index=False)
        ]
        assert [row[:5] for row in found] == [row[:5] for row in expected]
        np.testing.assert_array_equal([r[5] for r in found], [r[5] for r in expected])
        assert table["face"].tolist() == [e[0] is not None for e in expected]
        assert table[PREDICTION_COLUMNS].notna().all(axis=1).tolist() == table["face"].tolist()
    for bad in ([(1, 2, 3)], [(1, 2, 0, 5)], [("a", 2, 3, 4)], [5]):
        predictor = Predictor.from_checkpoints(
            checkpoints[0], device="cpu", progress=False, detector=lambda rgb, b=bad: b
        )
        with pytest.raises(
            UserError, match=r"as box 0: expected \(x, y, w, h\) or \(x, y, w, h, score\)"
        ):
            predictor.predict_images([image])
    with pytest.raises(UserError, match="max_faces"):
        Predictor.from_checkpoints(checkpoints[0], device="cpu", max_faces=0)
