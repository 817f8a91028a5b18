"""Balancing protocol: decimation keep-masks, sampler weights, flattened sampling."""

import numpy as np
import pytest
import torch

from abaw_lightning.data.ingest.balancing import (
    decimate_every,
    decimate_expr,
    expr_va_weights,
    expr_weights,
    va_bin_index,
    va_weights,
)
from abaw_lightning.losses import va_bins

# 25 rows. Neutral pass keeps rows 0, 10, 20 (numbers 0, 10, 20). Survivors renumbered: happiness
# rows 2, 11, 12, 17, 18, 23 get numbers 1, 4, 5, 9, 10, 14 -> keep 11, 18, 23. Renumbered again:
# sadness rows 4, 13, 14, 19, 24 get numbers 1, 4, 5, 8, 12 -> keep 13, 19, 24. Rows 2 (happiness)
# and 4 (sadness) have even original numbers but are dropped: the renumbering matters.
EXPR_25 = [0, 0, 4, 0, 5, 0, 0, 0, 0, 0, 0, 4, 4, 5, 5, 0, 1, 4, 4, 5, 0, 6, 0, 4, 5]
SURVIVORS_25 = [0, 10, 11, 13, 16, 18, 19, 20, 21, 23, 24]


def test_decimate_expr_exact_survivors():
    keep = decimate_expr(np.array(EXPR_25, dtype=np.int8))
    assert keep.dtype == bool
    assert np.flatnonzero(keep).tolist() == SURVIVORS_25


def test_decimate_expr_keeps_other_classes_and_every_tenth_neutral():
    assert decimate_expr(np.array([1, 2, 3, 6, 1])).tolist() == [True] * 5
    keep = decimate_expr(np.zeros(31, dtype=np.int8))
    assert np.flatnonzero(keep).tolist() == [0, 10, 20, 30]
    keep = decimate_expr(np.full(7, 4))
    assert np.flatnonzero(keep).tolist() == [0, 2, 4, 6]
    assert decimate_expr(np.array([], dtype=np.int8)).tolist() == []


def test_decimate_every():
    assert np.flatnonzero(decimate_every(12, 5)).tolist() == [0, 5, 10]
    assert np.flatnonzero(decimate_every(7, 3)).tolist() == [0, 3, 6]
    assert decimate_every(3, 1).tolist() == [True, True, True]
    with pytest.raises(ValueError):
        decimate_every(3, 0)


def test_expr_weights_hand_computed():
    w = expr_weights(np.array([0, 0, 0, 1, 4, 4], dtype=np.int8))
    np.testing.assert_allclose(w, [1 / 3, 1 / 3, 1 / 3, 1, 1 / 2, 1 / 2])
    with pytest.raises(ValueError):
        expr_weights(np.array([0, -1]))


VAL = np.array([-1.0, -0.95, 1.0, 0.95, 0.02, 0.02], dtype=np.float32)
ARO = np.array([-1.0, -0.91, 1.0, 1.0, 0.03, -0.03], dtype=np.float32)


def test_va_bin_index_fixed_edges_and_top_edge():
    assert va_bin_index(VAL, ARO).tolist() == [0, 0, 399, 399, 210, 209]
    assert va_bin_index(np.array([-0.89]), np.array([0.51])).tolist() == [1 * 20 + 15]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sampler_and_loss_bin_every_tenth_alike(dtype):
    """k/10 lies on the left edge of bin k + 10 ([k/10, (k+1)/10)); exactly 1 is in bin 19."""
    tenths = np.array([k / 10 for k in range(-10, 11)], dtype=dtype)
    expected = [min(k + 10, 19) for k in range(-10, 11)]
    loss_bins = va_bins(torch.from_numpy(np.stack([tenths, tenths[::-1]], axis=1)))
    sampler_bins = va_bin_index(tenths, tenths[::-1])
    assert loss_bins[:, 0].tolist() == expected
    assert loss_bins[:, 1].tolist() == expected[::-1]
    assert (sampler_bins // 20).tolist() == expected
    assert (sampler_bins % 20).tolist() == expected[::-1]
    assert expected[17] == 17 and expected[20] == 19 and expected[0] == 0  # 0.7, 1.0, -1.0


def test_va_weights_hand_computed():
    np.testing.assert_allclose(va_weights(VAL, ARO), [0.5, 0.5, 0.5, 0.5, 1.0, 1.0])
    with pytest.raises(ValueError):
        va_weights(np.array([0.1, np.nan]), np.array([0.1, 0.2]))


def test_expr_va_weights_hand_computed():
    expr = np.array([0, 0, 1, 1, 1, 2])
    # class: 1/2 1/2 1/3 1/3 1/3 1; bin: 1/2 1/2 1/2 1/2 1 1; sum / max (2).
    np.testing.assert_allclose(
        expr_va_weights(expr, VAL, ARO), [0.5, 0.5, 5 / 12, 5 / 12, 2 / 3, 1.0]
    )
