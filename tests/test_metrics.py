"""ABAW metrics against scikit-learn and a numpy CCC; accumulation equals one big update."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from abaw_lightning.metrics import ExprMetric, VAMetric, ccc, expr_score


def numpy_ccc(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x.astype(np.float64), y.astype(np.float64)
    covariance = np.mean((x - x.mean()) * (y - y.mean()))
    return 2 * covariance / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expr_score_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 7, 500)
    pred = np.where(rng.random(500) < 0.4, target, rng.integers(0, 7, 500))
    f1 = f1_score(target, pred, average="macro")
    acc = accuracy_score(target, pred)
    result = expr_score(torch.from_numpy(pred), torch.from_numpy(target))
    assert result["f1"] == pytest.approx(f1, abs=1e-12)
    assert result["acc"] == pytest.approx(acc, abs=1e-12)
    assert result["score"] == pytest.approx(0.67 * f1 + 0.33 * acc, abs=1e-12)


def test_expr_score_uses_classes_present_in_truth_or_prediction():
    target = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 5])  # class 5 only predicted; classes 3, 4, 6 absent
    expected = f1_score(target, pred, average="macro")
    assert expr_score(torch.from_numpy(pred), torch.from_numpy(target))["f1"] == pytest.approx(
        expected, abs=1e-12
    )


def test_expr_score_from_logits_ignores_missing_labels():
    logits = torch.zeros(4, 7)
    logits[torch.arange(4), torch.tensor([3, 3, 1, 0])] = 1.0
    target = torch.tensor([3, -1, 1, 2])
    result = expr_score(logits, target)
    expected = f1_score([3, 1, 2], [3, 1, 0], average="macro")
    assert result["acc"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_ccc_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    y = rng.uniform(-1, 1, 1000)
    x = 0.6 * y + rng.normal(0.1, 0.3, 1000)
    result = ccc(torch.from_numpy(x).float(), torch.from_numpy(y).float())
    assert result.dtype == torch.float64
    assert result.item() == pytest.approx(numpy_ccc(x.astype(np.float32), y), abs=1e-9)


def test_ccc_of_constant_series_is_zero():
    y = torch.linspace(-1, 1, 10)
    assert ccc(torch.full((10,), 0.3), y).item() == 0.0
    assert ccc(torch.full((10,), 0.3), torch.full((10,), 0.3)).item() == 0.0
    assert ccc(torch.zeros(0), torch.zeros(0)).item() == 0.0


def test_ccc_hand_value():
    # x = [1, 2, 3], y = [1, 2, 4]: means 2 and 7/3; cov = (4/3 + 0 + 5/3) / 3 = 1;
    # var_x = 2/3; var_y = 14/9; (mx - my)^2 = 1/9; CCC = 2 / (6/9 + 14/9 + 1/9) = 18 / 21
    value = ccc(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0]))
    assert value.item() == pytest.approx(18 / 21, abs=1e-12)


def test_expr_metric_accumulation_equals_one_update():
    rng = np.random.default_rng(3)
    target = torch.from_numpy(rng.integers(-1, 7, 300))
    logits = torch.from_numpy(rng.normal(size=(300, 7))).float()
    metric = ExprMetric()
    for chunk in range(0, 300, 70):
        metric.update(logits[chunk : chunk + 70], target[chunk : chunk + 70])
    accumulated = metric.compute()
    whole = expr_score(logits, target)
    labelled = target >= 0
    sk_f1 = f1_score(target[labelled], logits.argmax(1)[labelled], average="macro")
    assert accumulated["f1"].item() == pytest.approx(whole["f1"], abs=1e-12)
    assert accumulated["f1"].item() == pytest.approx(sk_f1, abs=1e-12)
    assert accumulated["score"].item() == pytest.approx(whole["score"], abs=1e-12)


def test_va_metric_accumulation_ignores_missing_and_matches_numpy():
    rng = np.random.default_rng(4)
    target = rng.uniform(-1, 1, (400, 2))
    pred = np.clip(0.5 * target + rng.normal(0, 0.3, (400, 2)), -1, 1)
    target[rng.random(400) < 0.2] = np.nan
    metric = VAMetric()
    for chunk in range(0, 400, 90):
        metric.update(
            torch.from_numpy(pred[chunk : chunk + 90]).float(),
            torch.from_numpy(target[chunk : chunk + 90]).float(),
        )
    result = metric.compute()
    keep = ~np.isnan(target).any(axis=1)
    p32, t32 = pred.astype(np.float32)[keep], target.astype(np.float32)[keep]
    expected_v, expected_a = numpy_ccc(p32[:, 0], t32[:, 0]), numpy_ccc(p32[:, 1], t32[:, 1])
    assert result["ccc_v"].item() == pytest.approx(expected_v, abs=1e-9)
    assert result["ccc_a"].item() == pytest.approx(expected_a, abs=1e-9)
    assert result["mean"].item() == pytest.approx((expected_v + expected_a) / 2, abs=1e-9)


def test_va_metric_constant_prediction_and_empty_epoch_give_zero():
    metric = VAMetric()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert metric.compute()["ccc_v"].item() == 0.0
    metric.update(torch.zeros(5, 2), torch.rand(5, 2))
    assert metric.compute()["ccc_a"].item() == 0.0
