"""The GRU stage's feature cache: views, extraction through Trainer.predict, reuse, invalidation,
and the training windows' view draws."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from prepared_data import write_prepared
from torch.utils.data import DataLoader, Dataset

from abaw_lightning.data.loading.datasets import load_table, to_chw
from abaw_lightning.data.loading.feature_cache import (
    FeatureCache,
    View,
    default_views,
    view_transform,
)
from abaw_lightning.data.loading.feature_windows import FeatureWindowDataset
from abaw_lightning.data.loading.images import read_image
from abaw_lightning.data.loading.samplers import Draw
from abaw_lightning.data.loading.transforms import val_transform
from abaw_lightning.errors import UserError
from abaw_lightning.models.checkpoints import load_cnn
from abaw_lightning.models.features import extract_online
from abaw_lightning.stages import CnnTeacher
from abaw_lightning.stages.features import ensure_features

SIZE, RESIZE = 32, 38
TABLES = ["affwild2/train_expr", "affwild2/train_va", "affwild2/val_expr", "affwild2/val_va"]
ROWS = 8
VIEWS = [View(3, 3, False), View(6, 0, True), View(0, 6, False), View(3, 3, False)]
"""The validation view, a flipped and an unflipped offset view, the validation view again."""


def save_checkpoint(path: Path, seed: int) -> Path:
    """A CNN-stage checkpoint as `load_cnn` reads it: state dict plus hyperparameters."""
    torch.manual_seed(seed)
    module = CnnTeacher(
        model={"arch": "resnet18", "weights": "none"}, optimizer={"lr": 1e-4, "betas": [0.5, 0.999]}
    )
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("prepared"), rows=ROWS)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return save_checkpoint(tmp_path / "best.ckpt", seed=1)


@pytest.fixture(scope="module")
def cached(tmp_path_factory, prepared) -> tuple[FeatureCache, Path]:
    """One extraction in VIEWS shared by the tests that only read it: (cache, checkpoint)."""
    root = tmp_path_factory.mktemp("cached")
    checkpoint = save_checkpoint(root / "best.ckpt", seed=1)
    return extract(root / "features", checkpoint, prepared), checkpoint


def extract(
    folder: Path, checkpoint: Path, prepared: Path, views=VIEWS, tables=TABLES
) -> FeatureCache:
    return ensure_features(
        folder, checkpoint, prepared, tables, SIZE, RESIZE, views, batch_size=40, num_workers=0,
        trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False},
    )  # fmt: skip


def online(checkpoint: Path, prepared: Path, images, view: View) -> np.ndarray:
    transform = view_transform(view, SIZE, RESIZE)
    crops = torch.stack([to_chw(transform(read_image(prepared / image))) for image in images])
    return extract_online(load_cnn(checkpoint), crops)


def test_default_views_grid_and_validation_view_first():
    views = default_views(112, 134)
    assert views[0] == View(11, 11, False)
    assert len(views) == 19
    assert views[1:] == [
        View(top, left, flip)
        for top in (0, 11, 22)
        for left in (0, 11, 22)
        for flip in (False, True)
    ]
    assert default_views(32, 38, offsets=1, flip=False) == [View(3, 3, False), View(3, 3, False)]
    assert default_views(32, 37, offsets=2, flip=False)[1:] == [
        View(0, 0, False), View(0, 5, False), View(5, 0, False), View(5, 5, False)
    ]  # fmt: skip
    with pytest.raises(UserError, match="resize"):
        default_views(32, 30)


def test_view_transforms_are_val_transform_and_exact_crops():
    image = np.random.default_rng(0).integers(0, 256, (45, 45, 3), dtype=np.uint8)
    for size, resize in ((SIZE, RESIZE), (112, 134), (48, 57)):
        centre = view_transform(default_views(size, resize)[0], size, resize)(image)
        np.testing.assert_array_equal(centre, val_transform(size, resize)(image))
    resized = cv2.resize(image, (RESIZE, RESIZE), interpolation=cv2.INTER_LINEAR)
    flipped = view_transform(View(top=6, left=2, flip=True), SIZE, RESIZE)(image)
    np.testing.assert_array_equal(flipped, resized[6 : 6 + SIZE, 2 : 2 + SIZE][:, ::-1])
    with pytest.raises(UserError, match="does not fit"):
        view_transform(View(7, 0, False), SIZE, RESIZE)


def test_cache_layout_and_size(cached, prepared):
    cache, checkpoint = cached
    folder = cache.folder
    manifest = json.loads((folder / "manifest.json").read_text())
    frames = 4 * ROWS
    assert manifest == {
        "checkpoint": "../best.ckpt",  # relative to the cache folder: moved runs folders work
        "checkpoint_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "image_size": SIZE,
        "resize": RESIZE,
        "views": [[3, 3, False], [6, 0, True], [0, 6, False], [3, 3, False]],
        "frames": frames,
        "dtype": "float16",
        "feature_dim": 128,
        "complete": True,
    }
    assert cache.num_frames == frames and cache.views == VIEWS
    assert sorted(p.name for p in folder.iterdir()) == [
        "features.npy",
        "frames.parquet",
        "manifest.json",
    ]
    expected = pd.concat([load_table(prepared, t)["image"] for t in TABLES], ignore_index=True)
    assert pd.read_parquet(folder / "frames.parquet")["image"].tolist() == expected.tolist()
    with open(folder / "features.npy", "rb") as file:
        assert np.lib.format.read_magic(file) == (1, 0)
        shape, _, dtype = np.lib.format.read_array_header_1_0(file)
        header = file.tell()
    assert shape == (4, frames, 2, 128) and dtype == np.float16
    assert (folder / "features.npy").stat().st_size == header + 4 * frames * 2 * 128 * 2


def test_cache_equals_online_extraction(cached, prepared):
    cache, checkpoint = cached
    images = list(cache.images[::3])
    ids = cache.frame_ids(images)
    flipped = 1
    for view in (0, flipped, 2):
        stored = cache.read(view, ids)
        assert stored.dtype == np.float16 and stored.shape == (len(ids), 2, 128)
        direct = online(checkpoint, prepared, images, VIEWS[view])
        assert np.abs(direct).max() > 0.1
        np.testing.assert_allclose(stored.astype(np.float32), direct, rtol=2e-3, atol=2e-3)
    assert not np.allclose(cache.read(0, ids), cache.read(flipped, ids), atol=1e-2)
    np.testing.assert_array_equal(cache.read(3, ids), cache.read(0, ids))


def test_frame_ids_round_trip_and_unknown_image(cached):
    cache, _ = cached
    images = cache.images
    assert len(images) == 4 * ROWS and images.is_unique
    picked = pd.Series([images[7], images[0], images[31]])
    np.testing.assert_array_equal(cache.frame_ids(picked), [7, 0, 31])
    ids = cache.frame_ids(list(images))
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, np.arange(4 * ROWS))
    with pytest.raises(UserError, match=r"crops/nobody/00001\.jpg"):
        cache.frame_ids([images[0], "crops/nobody/00001.jpg"])


def test_reuse_and_invalidation(tmp_path, prepared, checkpoint, capsys):
    folder, every = tmp_path / "features", np.arange(4 * ROWS)
    centre = default_views(SIZE, RESIZE, offsets=1)
    first = extract(folder, checkpoint, prepared, views=centre)
    before, images = first.read(0, every), first.images.tolist()
    mtime = (folder / "features.npy").stat().st_mtime_ns
    np.testing.assert_array_equal(first.read(1, every), before)
    capsys.readouterr()

    extract(folder, checkpoint, prepared, views=centre)
    assert "reusing" in capsys.readouterr().out
    assert (folder / "features.npy").stat().st_mtime_ns == mtime

    save_checkpoint(checkpoint, seed=2)
    changed = extract(folder, checkpoint, prepared, views=centre)
    assert "checkpoint changed" in capsys.readouterr().out
    after = changed.read(0, every)
    assert not np.allclose(before, after, atol=1e-2)

    unflipped = default_views(SIZE, RESIZE, offsets=1, flip=False)
    cache = extract(folder, checkpoint, prepared, views=unflipped)
    assert "views changed" in capsys.readouterr().out
    assert cache.views == unflipped and cache.features.shape == (2, 4 * ROWS, 2, 128)
    np.testing.assert_allclose(cache.read(1, every), after, rtol=2e-3, atol=2e-3)

    overlapping = ["affwild2/train_expr", "parts/expr", "affwild2/val_va"]
    cache = extract(folder, checkpoint, prepared, views=unflipped, tables=overlapping)
    assert "frame list changed" in capsys.readouterr().out
    kept = np.r_[0:ROWS, 3 * ROWS : 4 * ROWS]
    assert cache.images.tolist() == [images[i] for i in kept]
    np.testing.assert_allclose(cache.read(0, np.arange(2 * ROWS)), after[kept], atol=2e-3)
    mtime = (folder / "features.npy").stat().st_mtime_ns

    (folder / "manifest.json").unlink()
    with pytest.raises(UserError, match="no complete feature cache"):
        FeatureCache.open(folder)
    extract(folder, checkpoint, prepared, views=unflipped, tables=overlapping)
    assert "did not complete" in capsys.readouterr().out
    assert (folder / "features.npy").stat().st_mtime_ns != mtime
    assert json.loads((folder / "manifest.json").read_text())["complete"] is True


class CachedRows(Dataset):
    """Reads features through a FeatureCache, as the GRU datamodule's workers do."""

    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return self.cache.num_frames

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.cache.read(1, np.array([index])))


def test_cache_pickles_small_and_reads_in_workers(cached):
    cache = FeatureCache.open(cached[0].folder)
    expected = cache.read(1, np.arange(cache.num_frames))
    assert cache.frame_ids([cache.images[3]])[0] == 3
    payload = pickle.dumps(cache)
    assert len(payload) < 2000
    np.testing.assert_array_equal(pickle.loads(payload).read(1, np.arange(4)), expected[:4])
    loader = DataLoader(CachedRows(cache), batch_size=8, num_workers=1)
    read = torch.cat([batch[:, 0] for batch in loader]).numpy()
    np.testing.assert_array_equal(read, expected)


def labelled_cache(folder: Path, views: list[View], frames: int = 4) -> FeatureCache:
    """A complete cache in the real file layout whose features hold their view index."""
    folder.mkdir()
    features = np.broadcast_to(
        np.arange(len(views), dtype=np.float16)[:, None, None, None], (len(views), frames, 2, 128)
    )
    np.save(folder / "features.npy", np.ascontiguousarray(features))
    images = [f"crops/video/{frame:05d}.jpg" for frame in range(frames)]
    pd.DataFrame({"image": images}).to_parquet(folder / "frames.parquet", index=False)
    manifest = {"views": [[v.top, v.left, v.flip] for v in views], "frames": frames}
    (folder / "manifest.json").write_text(json.dumps({**manifest, "complete": True}))
    return FeatureCache.open(folder)


def drawn_views(cache: FeatureCache, draws: int, augment: bool = True) -> np.ndarray:
    """The view index of `draws` window reads through `FeatureWindowDataset`."""
    table = pd.DataFrame(
        {"image": cache.images, "expr": 0, "valence": 0.0, "arousal": 0.0}
    ).reset_index(drop=True)
    dataset = FeatureWindowDataset(cache, table, np.array([[0, 1, 2]]), augment=augment)
    seeds = np.random.default_rng(0).integers(0, 2**32, size=draws)
    views = []
    for seed in seeds:
        features = dataset[Draw(0, int(seed))]["features"]
        assert (features == features[0, 0, 0]).all()  # one view for every frame of the window
        views.append(int(features[0, 0, 0]))
    return np.array(views)


def test_training_views_are_the_grid_without_the_validation_view(tmp_path):
    views = default_views(112, 134)
    grid = labelled_cache(tmp_path / "flip", views).training_views()
    assert grid.shape == (9, 2) and 0 not in grid
    assert sorted(grid.ravel().tolist()) == list(range(1, 19))
    for row in grid:
        unflipped, flipped = views[row[0]], views[row[1]]
        assert (unflipped.top, unflipped.left) == (flipped.top, flipped.left)
        assert not unflipped.flip and flipped.flip
    unflipped = labelled_cache(tmp_path / "plain", default_views(112, 134, flip=False))
    assert unflipped.training_views().shape == (9, 1)
    with pytest.raises(UserError, match="crop-offset x flip grid"):
        labelled_cache(tmp_path / "odd", VIEWS).training_views()  # (6, 0) has no unflipped view


def test_window_draws_uniform_offset_and_fair_flip(tmp_path):
    views = default_views(112, 134)
    drawn = drawn_views(labelled_cache(tmp_path / "cache", views), 20_000)
    assert 0 not in drawn  # the validation view is never a training view
    flips = np.array([views[v].flip for v in drawn])
    assert abs(flips.mean() - 0.5) <= 0.01  # within 2% of 1/2
    offsets = [(views[v].top, views[v].left) for v in drawn]
    _, counts = np.unique(np.array(offsets), axis=0, return_counts=True)
    assert len(counts) == 9
    assert 0.5 * np.abs(counts / len(drawn) - 1 / 9).sum() <= 0.02  # total variation to uniform
    _, joint = np.unique(drawn, return_counts=True)
    assert len(joint) == 18 and 0.5 * np.abs(joint / len(drawn) - 1 / 18).sum() <= 0.02


def test_window_draws_without_flips_and_in_evaluation(tmp_path):
    views = default_views(112, 134, flip=False)
    cache = labelled_cache(tmp_path / "cache", views)
    drawn = drawn_views(cache, 2_000)
    assert 0 not in drawn and not any(views[v].flip for v in drawn)
    assert set(drawn.tolist()) == set(range(1, 10))
    assert set(drawn_views(cache, 50, augment=False).tolist()) == {0}
