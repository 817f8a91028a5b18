"""Augmentation pipelines: sizes, flips, determinism, seeds, per-worker reseeding, window draws."""

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from abaw_lightning.data.loading.samplers import Draw, ShuffledEpochSampler
from abaw_lightning.data.loading.transforms import default_resize, train_transform, val_transform


def _image(h: int = 16, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_default_resize_keeps_paper_ratio():
    assert default_resize(112) == 134
    assert default_resize(16) == 19


def test_output_sizes_and_dtype():
    for transform in (train_transform(size=16), val_transform(size=16)):
        out = transform(_image(16, 16))
        assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    out = train_transform()(_image(112, 112))
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    out = val_transform(size=12, resize=20)(_image(30, 24))
    assert out.shape == (12, 12, 3)


def test_flip_really_flips():
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[:, :3] = 255  # bright left side: left-right asymmetric
    transform = train_transform(size=8, resize=8, seed=1)  # crop of the full image: flip only
    outs = [transform(image) for _ in range(40)]
    flipped = [bool((o == image[:, ::-1]).all()) for o in outs]
    same = [bool((o == image).all()) for o in outs]
    assert all(f != s for f, s in zip(flipped, same, strict=True))
    assert 5 < sum(flipped) < 35


def test_val_transform_is_deterministic_centre_crop():
    image = _image(16, 16, seed=2)
    transform = val_transform(size=16)
    first = transform(image)
    assert all((transform(image) == first).all() for _ in range(5))
    expected = cv2.resize(image, (19, 19), interpolation=cv2.INTER_LINEAR)[1:17, 1:17]
    np.testing.assert_array_equal(first, expected)


def test_seeds_decide_the_crops():
    image = _image(16, 16, seed=3)

    def draws(seed: int) -> list[bytes]:
        transform = train_transform(size=12, resize=16, seed=seed)
        return [transform(image).tobytes() for _ in range(8)]

    assert draws(0) == draws(0)
    assert draws(0) != draws(1)
    assert len(set(draws(0))) > 2  # one Compose gives varied crops


def test_window_augmentation_is_one_draw_for_all_frames():
    frames = np.stack([_image(16, 16, seed=4)] * 5)
    transform = train_transform(size=12, resize=16, seed=5)
    outs = [transform.frames(frames) for _ in range(10)]
    for out in outs:
        assert out.shape == (5, 12, 12, 3) and out.dtype == np.uint8
        assert all((out[i] == out[0]).all() for i in range(5))
    assert len({out[0].tobytes() for out in outs}) > 2


def _crop_params(out: np.ndarray, frame: np.ndarray) -> set[tuple[int, int, bool]]:
    """Every (top, left, flipped) whose crop of `frame` equals `out`."""
    size = out.shape[0]
    found = set()
    for flipped in (False, True):
        source = frame[:, ::-1] if flipped else frame
        for top in range(frame.shape[0] - size + 1):
            for left in range(frame.shape[1] - size + 1):
                if (source[top : top + size, left : left + size] == out).all():
                    found.add((top, left, flipped))
    return found


def test_window_draw_uses_same_offset_and_flip_for_different_frames():
    frames = np.stack([_image(16, 16, seed=20 + i) for i in range(3)])
    transform = train_transform(size=12, resize=16, seed=9)  # resize 16 -> 16 is the identity
    params = []
    for _ in range(6):
        out = transform.frames(frames)
        found = [_crop_params(out[i], frames[i]) for i in range(3)]
        assert len(found[0]) == 1 and found[0] == found[1] == found[2]
        params.append(found[0].pop())
    assert len(set(params)) > 1


class _Repeated(Dataset):
    """The same image for every draw: any difference comes from the augmentation."""

    def __init__(self) -> None:
        self.image = _image(16, 16, seed=6)
        self.transform = train_transform(size=12, resize=16, seed=0)

    def __len__(self) -> int:
        return 8

    def __getitem__(self, item: Draw) -> torch.Tensor:
        return torch.from_numpy(self.transform(self.image, item.seed))


def _outputs(workers: int) -> list[bytes]:
    sampler = ShuffledEpochSampler(8, seed=11, part="expr")
    loader = DataLoader(_Repeated(), batch_size=1, sampler=sampler, num_workers=workers)
    return [batch[0].numpy().tobytes() for batch in loader]


def test_each_sample_seed_decides_its_draw_whichever_worker_reads_it():
    outs = _outputs(0)
    assert len(set(outs)) > 2  # the samples' seeds differ: so do their crops
    assert _outputs(2) == outs  # two workers, each with its own copy of the pipeline: the same
