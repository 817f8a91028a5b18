"""Every face, tracked: the FaceTracker's rule on hand-made boxes, then `abaw predict` on videos
and image folders built from real photographs (scikit-image's astronaut, Eileen Collins, and
matplotlib's Grace Hopper, on scikit-image's coffee photograph): two faces moving side by side,
a face leaving the frame, and a video without a face (scikit-image's cat)."""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pandas as pd
import pytest
from test_predict import write_checkpoints, write_video

from abaw_lightning import EXPR_CLASSES
from abaw_lightning.cli import main
from abaw_lightning.inference.detection import crop_face
from abaw_lightning.inference.predictor import FACE_COLUMNS, PREDICTION_COLUMNS, Predictor
from abaw_lightning.inference.tracking import MAX_GAP, FaceTracker, centre_distance, iou

data = pytest.importorskip("skimage.data", reason="scikit-image ships the photographs")

SIDE = 96
"""Side of the pasted face photographs; the Haar cascade finds faces of about 65 px in them."""
HEIGHT, WIDTH, FPS, FRAMES = 160, 320, 30, 30


def test_iou_and_centre_distance_by_hand():
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 20, 20), (5, 5, 10, 10)) == pytest.approx(100 / 400)
    assert centre_distance((0, 0, 10, 20), (3, 4, 10, 20)) == pytest.approx(5 / 20)


def test_tracker_rule():
    tracker = FaceTracker()
    # new tracks are numbered left to right
    assert tracker.update(0, [(200, 0, 50, 50), (10, 0, 50, 50)]) == [1, 0]
    # each box continues the track it overlaps, whatever the detector's order
    assert tracker.update(1, [(15, 2, 50, 50), (205, 0, 50, 50)]) == [0, 1]
    # twice the size on the same centre: IoU 0.25 < 0.3, but the centres coincide
    assert tracker.update(2, [(190, -25, 100, 100)]) == [1]
    # two candidates for track 0: the higher IoU continues it, the other is a new face
    assert tracker.update(3, [(40, 0, 50, 50), (20, 0, 50, 50)]) == [2, 0]
    # far from every track (IoU 0, centre 2 sides away): a new face
    assert tracker.update(4, [(120, 0, 50, 50)]) == [3]
    # track 0 unseen in frames 4..13 (MAX_GAP = 10 frames) still continues at frame 14 ...
    assert tracker.update(3 + MAX_GAP + 1, [(20, 0, 50, 50)]) == [0]
    # ... track 3, unseen for 11 frames after frame 4, has ended
    assert tracker.update(4 + MAX_GAP + 2, [(120, 0, 50, 50)]) == [4]


def face_photographs() -> list[np.ndarray]:
    """RGB face photographs of SIDE x SIDE: Eileen Collins (scikit-image) and Grace Hopper
    (matplotlib's sample data)."""
    astronaut = data.astronaut()[40:190, 150:300]
    hopper_file = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    hopper = cv2.imread(str(hopper_file))[60:370, 110:420, ::-1]
    return [
        cv2.resize(np.ascontiguousarray(face), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
        for face in (astronaut, hopper)
    ]


def compose(faces: list[np.ndarray], lefts: list[int | None], top: int = 30) -> np.ndarray:
    """A WIDTH x HEIGHT RGB frame: the coffee photograph with face i pasted at x = lefts[i]
    (cut where it leaves the frame; None: not in this frame)."""
    frame = cv2.resize(data.coffee(), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    for face, left in zip(faces, lefts, strict=True):
        if left is None:
            continue
        x0, x1 = max(left, 0), min(left + SIDE, WIDTH)
        if x1 > x0:
            frame[top : top + SIDE, x0:x1] = face[:, x0 - left : x1 - left]
    return frame


def write_frames(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for index, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"frame_{index:03d}.png"), frame[:, :, ::-1])
    return folder


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    return write_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory) -> tuple[Path, Path, list[np.ndarray]]:
    """Two faces side by side, both moving 2 px right per frame over 30 frames: an mp4 written
    by OpenCV's VideoWriter and the same frames as a PNG folder."""
    faces = face_photographs()
    frames = [compose(faces, [20 + 2 * t, 170 + 2 * t]) for t in range(FRAMES)]
    root = tmp_path_factory.mktemp("two_faces")
    video = write_video(root / "two.mp4", [frame[:, :, ::-1] for frame in frames], fps=FPS)
    return video, write_frames(root / "two_frames", frames), frames


def test_two_faces_moving_side_by_side_give_two_stable_tracks(checkpoints, side_by_side, tmp_path):
    video, folder, _ = side_by_side
    out = tmp_path / "out"
    args = ["predict", "--ckpt", str(checkpoints[0]), "--gru-ckpt", str(checkpoints[1])]
    assert main([*args, str(video), str(folder), "--out", str(out)]) == 0
    for name, position in (("two", "time"), ("two_frames", "image")):
        table = read(out / f"{name}.csv")
        assert list(table.columns) == ["frame", position, *FACE_COLUMNS, *PREDICTION_COLUMNS]
        assert table["face_id"].tolist() == [0, 1] * FRAMES  # sorted by frame, then face_id
        assert table["frame"].tolist() == np.repeat(np.arange(FRAMES), 2).tolist()
        assert table["face"].all() and not table["filled"].any()
        assert (table["score"] > 0).all() and table[PREDICTION_COLUMNS].notna().all().all()
        for face_id, start in ((0, 20), (1, 170)):
            track = table[table["face_id"] == face_id]
            moved = track["x"].to_numpy() - 2 * np.arange(FRAMES)
            assert np.abs(moved - moved[0]).max() <= 4  # the box follows its face
            assert start < moved[0] < start + SIDE / 2
            assert (track["w"] > 55).all() and (track["w"] < SIDE).all()
    assert np.allclose(
        read(out / "two.csv")["time"], np.repeat(np.arange(FRAMES), 2) / FPS, atol=1e-4
    )
    images = read(out / "two_frames.csv")["image"]
    assert images.tolist() == [f"frame_{t:03d}.png" for t in range(FRAMES) for _ in range(2)]
    plot = cv2.imread(str(out / "two.png"))
    assert plot is not None and plot.shape == (1000, 1000, 3)  # one panel per face


def test_each_track_is_its_own_gru_sequence(checkpoints, side_by_side):
    """The GRU's predictions of a track are those of that face's crops alone, as one sequence."""
    _, folder, frames = side_by_side
    predictor = Predictor.from_checkpoints(*checkpoints, device="cpu", progress=False)
    table = predictor.predict_images(sorted(folder.iterdir()))
    for face_id in (0, 1):
        track = table[table["face_id"] == face_id]
        crops = [
            crop_face(frame, (row.x, row.y, row.w, row.h))
            for frame, row in zip(frames, track.itertuples(), strict=True)
        ]
        alone = predictor.predict_frames(crops)
        for column in (*EXPR_CLASSES, "valence", "arousal"):
            np.testing.assert_allclose(track[column], alone[column], atol=1e-5)
    cnn = predictor.predict_images(sorted(folder.iterdir()), temporal=False)
    assert not np.allclose(cnn["valence"], table["valence"], atol=1e-3)


def test_a_face_that_leaves_the_frame_ends_its_track(checkpoints, tmp_path):
    """Eileen Collins slides out on the left (8 px a frame) while Grace Hopper stays; she comes
    back at frame 22, more than --max-gap frames later: a new track."""
    faces = face_photographs()
    lefts = [20 - 8 * t if t < 22 else 20 for t in range(FRAMES)]
    frames = [compose(faces, [left, 190]) for left in lefts]
    video = write_video(tmp_path / "leaving.mp4", [f[:, :, ::-1] for f in frames], fps=FPS)
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(checkpoints[0]), str(video), "--out", str(out)]) == 0
    table = read(out / "leaving.csv")
    assert sorted(set(table["face_id"])) == [0, 1, 2]
    hopper = table[table["face_id"] == 1]
    assert hopper["frame"].tolist() == list(range(FRAMES)) and hopper["face"].all()
    first, back = table[table["face_id"] == 0], table[table["face_id"] == 2]
    assert first["frame"].tolist() == list(range(len(first))) and 2 <= len(first) <= 6
    assert first["face"].all() and first["x"].iloc[-1] < first["x"].iloc[0]
    assert back["frame"].tolist() == list(range(22, FRAMES)) and back["face"].all()
    rows_per_frame = table.groupby("frame").size()
    assert rows_per_frame.loc[len(first) : 21].eq(1).all()  # no rows of track 0 once she left


def test_a_video_without_a_face_gives_faceless_rows(checkpoints, tmp_path):
    """Scikit-image's cat photograph panned across 10 frames: no face, a row per frame."""
    cat = np.ascontiguousarray(data.chelsea()[:, :, ::-1])
    frames = [
        cv2.warpAffine(cat, np.float32([[1, 0, -4 * t], [0, 1, 0]]), (240, 160)) for t in range(10)
    ]
    video = write_video(tmp_path / "cat.mp4", frames, fps=FPS)
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(checkpoints[0]), str(video), "--out", str(out)]) == 0
    table = read(out / "cat.csv")
    assert table["frame"].tolist() == list(range(10))
    assert not table["face"].any() and not table["filled"].any()
    assert table[["face_id", "x", "score", *PREDICTION_COLUMNS]].isna().all().all()
    plot = cv2.imread(str(out / "cat.png"))
    assert plot is not None and plot.shape == (500, 1000, 3)
