"""Training samplers and the resumable loader: balanced draws, draws that are a function of
(seed, part, epoch, position) only, seeds that never collide, and a mid-epoch resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from abaw_lightning.data.ingest.balancing import expr_weights, va_bin_index, va_weights
from abaw_lightning.data.loading.samplers import (
    Draw,
    ResumableLoader,
    ShuffledEpochSampler,
    WeightedEpochSampler,
)
from abaw_lightning.schema import derive_seed


def _frequencies(values: np.ndarray, sampler) -> np.ndarray:
    drawn = values[np.fromiter((draw.row for draw in sampler), dtype=np.int64)]
    _, counts = np.unique(drawn, return_counts=True)
    return counts / counts.sum()


def test_sampler_flattens_class_frequencies():
    expr = np.repeat([0, 4, 1, 3], [700, 200, 90, 10])
    n = 20_000
    flat = _frequencies(expr, WeightedEpochSampler(expr_weights(expr), 3, "expr", n))
    np.testing.assert_allclose(flat, 0.25, atol=0.025)
    skewed = _frequencies(expr, WeightedEpochSampler(np.ones(len(expr)), 3, "expr", n))
    assert skewed.max() > 0.65 and skewed.min() < 0.02


def test_sampler_flattens_va_bin_frequencies():
    counts = [600, 300, 80, 20]
    val = np.repeat(np.array([-0.95, -0.05, 0.45, 0.97], dtype=np.float32), counts)
    aro = np.repeat(np.array([0.55, -0.75, 0.15, 1.0], dtype=np.float32), counts)
    bins = va_bin_index(val, aro)
    flat = _frequencies(bins, WeightedEpochSampler(va_weights(val, aro), 0, "va", 20_000))
    np.testing.assert_allclose(flat, 0.25, atol=0.025)
    skewed = _frequencies(bins, WeightedEpochSampler(np.ones(len(bins)), 0, "va", 20_000))
    assert skewed.max() > 0.55


def test_draws_depend_on_seed_part_and_epoch_only():
    weights = np.linspace(0.1, 1.0, 50)
    sampler = WeightedEpochSampler(weights, 7, "expr")
    assert len(sampler) == 50
    first = list(sampler)
    assert first == list(WeightedEpochSampler(weights, 7, "expr"))
    assert all(isinstance(d, Draw) and 0 <= d.row < 50 for d in first)
    assert [d.row for d in first] != [d.row for d in WeightedEpochSampler(weights, 8, "expr")]
    assert first != list(WeightedEpochSampler(weights, 7, "va"))  # parts draw apart
    sampler.set_epoch(4)
    epoch_4 = list(sampler)
    again = WeightedEpochSampler(weights, 7, "expr")
    again.set_epoch(4)
    assert list(again) == epoch_4 != first
    assert len({d.seed for d in epoch_4}) == 50  # no two samples share an augmentation draw


def test_derived_seeds_never_collide_across_seeds_parts_and_epochs():
    seeds = {
        derive_seed(seed, stream, part, epoch)
        for seed in range(10)
        for stream in ("sampler", "augment", "order")
        for part in ("expr", "va", "expr_va")
        for epoch in range(40)
    }
    assert len(seeds) == 10 * 3 * 3 * 40  # seed + index made seed 1's part 0 seed 0's part 1
    with pytest.raises(ValueError, match="unknown random stream"):
        derive_seed(0, "nope")


def test_start_at_skips_exactly_what_was_drawn_and_only_once():
    sampler = ShuffledEpochSampler(20, 3, "va")
    sampler.set_epoch(2)
    full = list(sampler)
    assert sorted(d.row for d in full) == list(range(20))  # each row once
    sampler.start_at(7)
    assert list(sampler) == full[7:]
    assert list(sampler) == full  # the skip applies to one iteration


class Rows(Dataset):
    """A dataset whose items are their draws, to see what a loader yields."""

    def __len__(self) -> int:
        return 30

    def __getitem__(self, item: Draw) -> torch.Tensor:
        return torch.tensor([item.row, item.seed % 1000])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_restored_loader_continues_the_epoch_where_it_stopped(workers):
    def loader() -> ResumableLoader:
        sampler = WeightedEpochSampler(np.ones(30), 5, "expr")
        return ResumableLoader(Rows(), sampler, 4, drop_last=True, num_workers=workers)

    uninterrupted = loader()
    uninterrupted.sampler.set_epoch(1)
    batches = [batch.tolist() for batch in uninterrupted]
    assert len(batches) == 7
    first = loader()
    first.sampler.set_epoch(1)
    iterator = iter(first)
    seen = [next(iterator).tolist() for _ in range(3)]
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 3}
    resumed = loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)
    assert seen + [batch.tolist() for batch in resumed] == batches
    resumed.sampler.set_epoch(2)  # the next epoch starts from its beginning
    assert len(list(resumed)) == 7
    finished = loader()
    finished.load_state_dict({"epoch": 1, "batches": 7})  # saved after the epoch's last batch
    finished.sampler.set_epoch(2)
    assert len(list(finished)) == 7
