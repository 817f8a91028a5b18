"""Frame datasets read back from a real prepared folder (parquet tables + JPEG crops)."""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from abaw_lightning.data.loading.datasets import FrameDataset, load_table, passthrough_collate
from abaw_lightning.data.loading.images import read_image
from abaw_lightning.data.loading.transforms import train_transform, val_transform
from abaw_lightning.errors import UserError

# (image, source, video, frame, expr, valence, arousal, BGR colour written)
ROWS = [
    ("crops/expw/0001_0.jpg", "expw", "", -1, 4, np.nan, np.nan, (255, 0, 0)),
    ("affwild2_images/v1/00001.jpg", "affwild2", "v1", 1, 1, 0.5, -0.25, (0, 255, 0)),
    ("affwild2_images/v1/00002.jpg", "affwild2", "v1", 2, -1, -0.75, 1.0, (0, 0, 255)),
]


def write_prepared(tmp_path: Path) -> Path:
    """A prepared folder as `abaw prepare` writes it: symlinked Aff-Wild2 crops, one part table."""
    prepared = tmp_path / "prepared"
    cropped = tmp_path / "affwild2" / "cropped_aligned"
    (prepared / "crops" / "expw").mkdir(parents=True)
    (cropped / "v1").mkdir(parents=True)
    (prepared / "affwild2_images").symlink_to(cropped)
    for image, *_, bgr in ROWS:
        crop = np.full((16, 16, 3), bgr, dtype=np.uint8)
        assert cv2.imwrite(str(prepared / image), crop)
    table = pd.DataFrame(
        {
            "image": [r[0] for r in ROWS],
            "source": [r[1] for r in ROWS],
            "video": [r[2] for r in ROWS],
            "frame": np.array([r[3] for r in ROWS], dtype=np.int64),
            "expr": np.array([r[4] for r in ROWS], dtype=np.int8),
            "valence": np.array([r[5] for r in ROWS], dtype=np.float32),
            "arousal": np.array([r[6] for r in ROWS], dtype=np.float32),
            "weight": np.array([1.0, 0.5, 0.25]),
        }
    )
    (prepared / "parts").mkdir()
    table.to_parquet(prepared / "parts" / "expr.parquet", index=False)
    return prepared


def test_items_read_back_with_labels_and_dtypes(tmp_path):
    prepared = write_prepared(tmp_path)
    table = load_table(prepared, "parts/expr")
    assert table["expr"].dtype == np.int8 and table["valence"].dtype == np.float32
    dataset = FrameDataset(table, prepared, None)
    assert len(dataset) == 3
    item = dataset[1]
    assert set(item) == {"image", "expr", "va"}
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 16, 16)
    assert item["expr"].dtype == torch.int64 and item["expr"].shape == () and item["expr"] == 1
    assert item["va"].dtype == torch.float32
    assert item["va"].tolist() == [0.5, -0.25]
    # written green in BGR -> green in RGB; JPEG keeps a flat colour within a few levels
    assert (item["image"][:, 8, 8] - torch.tensor([0, 255, 0])).abs().max() <= 3
    still = dataset[0]
    assert still["expr"] == 4 and torch.isnan(still["va"]).all()
    assert (still["image"][:, 8, 8] - torch.tensor([0, 0, 255])).abs().max() <= 3
    assert dataset[2]["expr"] == -1 and dataset[2]["va"].tolist() == [-0.75, 1.0]


def test_batched_fetch_gives_the_loss_batch_format_and_equals_single_items(tmp_path):
    prepared = write_prepared(tmp_path)
    dataset = FrameDataset(load_table(prepared, "parts/expr"), prepared, val_transform(size=12))
    batch = next(iter(DataLoader(dataset, batch_size=3, collate_fn=passthrough_collate)))
    for index in range(3):
        item = dataset[index]
        assert torch.equal(batch["image"][index], item["image"])
        assert batch["expr"][index] == item["expr"]
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    assert batch["image"].shape == (3, 3, 12, 12) and batch["image"].dtype == torch.uint8
    assert batch["expr"].dtype == torch.int64 and batch["expr"].tolist() == [4, 1, -1]
    assert batch["va"].dtype == torch.float32 and batch["va"].shape == (3, 2)
    assert torch.isnan(batch["va"][0]).all() and batch["va"][1].tolist() == [0.5, -0.25]


def test_train_transform_applies(tmp_path):
    prepared = write_prepared(tmp_path)
    dataset = FrameDataset(load_table(prepared, "parts/expr"), prepared, train_transform(size=10))
    assert dataset[0]["image"].shape == (3, 10, 10)


def test_missing_image_names_the_path(tmp_path):
    prepared = write_prepared(tmp_path)
    (prepared / ROWS[1][0]).unlink()
    dataset = FrameDataset(load_table(prepared, "parts/expr"), prepared, None)
    with pytest.raises(UserError, match="abaw prepare") as err:
        dataset[1]
    assert str(prepared / ROWS[1][0]) in str(err.value)


def test_unreadable_image_is_a_user_error(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"broken\.jpg"):
        read_image(path)


def test_read_image_is_rgb(tmp_path):
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), np.full((4, 5, 3), (0, 0, 255), dtype=np.uint8))
    image = read_image(path)
    assert image.shape == (4, 5, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [255, 0, 0]


def test_load_table_errors_name_what_is_missing(tmp_path):
    with pytest.raises(UserError, match="abaw prepare") as err:
        load_table(tmp_path / "nowhere", "parts/expr")
    assert "nowhere" in str(err.value)
    prepared = write_prepared(tmp_path)
    with pytest.raises(UserError, match=r"affwild2/val_va\.parquet is missing"):
        load_table(prepared, "affwild2/val_va")
    (prepared / "affwild2").mkdir()
    (prepared / "affwild2" / "val_va.parquet").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"cannot read table .*val_va\.parquet"):
        load_table(prepared, "affwild2/val_va")
    pd.DataFrame({"image": ["x.jpg"], "expr": [1]}).to_parquet(prepared / "parts" / "va.parquet")
    with pytest.raises(UserError, match=r"va\.parquet lacks columns \['source', 'video'"):
        load_table(prepared, "parts/va")
