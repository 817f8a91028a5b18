"""Temporal windows: stride, end alignment, gaps, short videos, exactly-once scoring, GRU parts."""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from abaw_lightning.data.loading.transforms import train_transform
from abaw_lightning.data.loading.windows import (
    WindowDataset,
    eval_windows,
    gru_parts,
    train_windows,
)


def frames_table(videos: dict[str, list[int]], expr=None, valence=None) -> pd.DataFrame:
    """A frames table in the prepared layout, sorted by (video, frame)."""
    video = [v for v, frames in videos.items() for _ in frames]
    frame = [f for frames in videos.values() for f in frames]
    n = len(frame)
    return pd.DataFrame(
        {
            "image": [f"v/{v}/{f:05d}.jpg" for v, f in zip(video, frame, strict=True)],
            "source": ["affwild2"] * n,
            "video": video,
            "frame": np.array(frame, dtype=np.int64),
            "expr": np.array(expr if expr is not None else np.arange(n) % 7, dtype=np.int8),
            "valence": np.array(valence if valence is not None else np.zeros(n), dtype=np.float32),
            "arousal": np.linspace(-1, 1, n, dtype=np.float32),
        }
    )


# a: 9 consecutive frames (rows 0-8); b: a gap after frame 4 (rows 9-16); c: 3 frames (rows 17-19)
VIDEOS = {"a": list(range(1, 10)), "b": [1, 2, 3, 4, 6, 7, 8, 9], "c": [5, 6, 7]}


def test_train_windows_stride_end_alignment_gaps_and_short_videos():
    rows = train_windows(frames_table(VIDEOS), length=4, stride=2)
    assert rows.dtype == np.int64
    assert rows.tolist() == [
        [0, 1, 2, 3],
        [2, 3, 4, 5],
        [4, 5, 6, 7],
        [5, 6, 7, 8],  # end-aligned
        [9, 10, 11, 12],
        # [11, 12, 13, 14] spans frames 3, 4, 6, 7: dropped
        [13, 14, 15, 16],
        # c has 3 rows < 4: dropped
    ]


def test_train_windows_defaults_32_and_16():
    rows = train_windows(frames_table({"v": list(range(1, 71)), "w": list(range(32))}))
    assert rows.shape == (5, 32)
    assert rows[:, 0].tolist() == [0, 16, 32, 38, 70]
    assert all((np.diff(r) == 1).all() for r in rows)
    assert train_windows(frames_table({"v": list(range(31))})).shape == (0, 32)


def test_eval_windows_cover_every_row_once():
    rows, mask = eval_windows(frames_table(VIDEOS), length=4)
    assert rows.tolist() == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [5, 6, 7, 8],
        [9, 10, 11, 12],  # gaps are allowed in evaluation
        [13, 14, 15, 16],
        [17, 18, 19, 19],  # padded with the last row
    ]
    assert mask.tolist() == [
        [True] * 4,
        [True] * 4,
        [False, False, False, True],
        [True] * 4,
        [True] * 4,
        [True, True, True, False],
    ]


def test_eval_windows_score_each_row_exactly_once_on_random_videos():
    rng = np.random.default_rng(0)
    videos = {}
    for i, n in enumerate([1, 31, 32, 33, 64, 95, 140]):
        frames = np.sort(rng.choice(np.arange(1, 400), size=n, replace=False))
        videos[f"v{i:02d}"] = frames.tolist()
    table = frames_table(videos)
    rows, mask = eval_windows(table)
    assert rows.shape[1] == 32 and mask.shape == rows.shape
    assert sorted(rows[mask].tolist()) == list(range(len(table)))
    video = table["video"].to_numpy()
    for name, frames in videos.items():
        in_video = (video[rows] == name).all(axis=1)
        assert mask[in_video].sum() == len(frames)
    assert (video[rows] == video[rows[:, :1]]).all()  # a window never mixes videos


def test_windows_need_a_sorted_table_and_accept_an_empty_one():
    table = frames_table({"a": [1, 2, 3]}).iloc[::-1]
    with pytest.raises(ValueError, match="sorted"):
        train_windows(table, length=2)
    empty = frames_table({})
    assert train_windows(empty).shape == (0, 32)
    assert eval_windows(empty)[0].shape == (0, 32) and eval_windows(empty)[1].dtype == bool


def write_frames(root: Path, table: pd.DataFrame, identical: bool) -> None:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for i, image in enumerate(table["image"]):
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        crop = base if identical else np.full((16, 16, 3), 10 * i, dtype=np.uint8)
        assert cv2.imwrite(str(root / image), crop)


def test_window_dataset_items_labels_and_padding(tmp_path):
    table = frames_table({"a": [1, 2, 3], "b": [4, 5, 6, 7]}, valence=[0.1] * 7)
    write_frames(tmp_path, table, identical=False)
    rows, mask = eval_windows(table, length=4)
    dataset = WindowDataset(table, tmp_path, rows, None, mask)
    assert len(dataset) == 2
    item = dataset[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (4, 3, 16, 16)
    assert item["expr"].dtype == torch.int64 and item["expr"].tolist() == [0, 1, 2, 2]
    assert item["va"].dtype == torch.float32 and item["va"].shape == (4, 2)
    assert item["mask"].dtype == torch.bool and item["mask"].tolist() == [True, True, True, False]
    assert (item["image"][3] == item["image"][2]).all()  # padding repeats the last frame
    assert abs(int(item["image"][1, 0, 8, 8]) - 10) <= 2 and item["image"][0].max() <= 2
    np.testing.assert_allclose(item["va"][:, 0].numpy(), 0.1)
    np.testing.assert_allclose(item["va"][:, 1].numpy(), table["arousal"][[0, 1, 2, 2]])
    train = WindowDataset(table, tmp_path, train_windows(table, length=4, stride=2), None)
    assert len(train) == 1 and train[0]["mask"].tolist() == [True] * 4
    assert train[0]["expr"].tolist() == [3, 4, 5, 6]


def test_window_augmentation_is_shared_by_all_frames(tmp_path):
    table = frames_table({"a": list(range(1, 6))})
    write_frames(tmp_path, table, identical=True)
    rows = train_windows(table, length=5)
    dataset = WindowDataset(table, tmp_path, rows, train_transform(size=12, seed=4))
    outs = [dataset[0]["image"] for _ in range(6)]
    for out in outs:
        assert out.shape == (5, 3, 12, 12)
        assert all((out[i] == out[0]).all() for i in range(5))
    assert len({out[0].numpy().tobytes() for out in outs}) > 1


def test_gru_parts():
    videos = {"b": [3, 1, 2], "a": [2, 1]}  # unsorted on purpose
    expr = [0, -1, 4, 5, 6]
    valence = [0.1, 0.2, np.nan, 0.4, np.nan]
    train_expr = frames_table(videos, expr=expr, valence=valence)
    train_va = frames_table({"c": [2, 1], "b": [1]}, valence=[0.5, np.nan, 0.3])
    parts = gru_parts(train_expr, train_va)
    assert set(parts) == {"expr", "va", "expr_va"}
    assert list(zip(parts["expr"]["video"], parts["expr"]["frame"], strict=True)) == [
        ("a", 1),
        ("a", 2),
        ("b", 2),
        ("b", 3),
    ]
    assert parts["expr"]["expr"].tolist() == [6, 5, 4, 0]
    assert parts["expr"].index.tolist() == [0, 1, 2, 3]
    assert list(zip(parts["va"]["video"], parts["va"]["frame"], strict=True)) == [
        ("b", 1),
        ("c", 2),
    ]
    assert list(zip(parts["expr_va"]["video"], parts["expr_va"]["frame"], strict=True)) == [
        ("a", 2),
        ("b", 3),
    ]
