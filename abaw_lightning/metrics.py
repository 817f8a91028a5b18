"""ABAW 2021 metrics (METHOD.md §6): EXPR score = 0.67 F1 + 0.33 accuracy, and CCC of V and A.

Metric objects accumulate sufficient statistics (a confusion matrix; float64 sums) over an epoch,
so several updates equal one big update and the states reduce across processes by summation.
Missing labels (expression -1, valence-arousal NaN) are ignored.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

NUM_EXPR = 7
EXPR_F1_WEIGHT = 0.67
EXPR_ACC_WEIGHT = 0.33


def _as_classes(pred: Tensor) -> Tensor:
    """Class indices from class indices or logits."""
    return pred.argmax(dim=-1) if pred.is_floating_point() else pred.long()


def _confusion(pred: Tensor, target: Tensor) -> Tensor:
    """Confusion matrix Long[7, 7] (rows: truth) over the rows with a label."""
    labelled = target >= 0
    index = target[labelled].long() * NUM_EXPR + pred[labelled].long()
    return torch.bincount(index, minlength=NUM_EXPR * NUM_EXPR).view(NUM_EXPR, NUM_EXPR)


def _scores_from_confusion(confusion: Tensor) -> dict[str, float]:
    """Macro F1 over classes present in truth or prediction (sklearn's), accuracy, EXPR score."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    predicted = confusion.sum(dim=0)
    actual = confusion.sum(dim=1)
    present = (predicted + actual) > 0
    total = confusion.sum()
    if total == 0:
        return {"f1": 0.0, "acc": 0.0, "score": 0.0}
    f1_per_class = 2 * true_positive[present] / (predicted[present] + actual[present])
    f1 = f1_per_class.mean().item()
    acc = (true_positive.sum() / total).item()
    return {"f1": f1, "acc": acc, "score": EXPR_F1_WEIGHT * f1 + EXPR_ACC_WEIGHT * acc}


def expr_score(pred: Tensor, target: Tensor) -> dict[str, float]:
    """EXPR F1 (macro), accuracy and score of class indices Long[N] or logits Float[N, 7]."""
    return _scores_from_confusion(_confusion(_as_classes(pred).cpu(), target.cpu()))


def _ccc_from_sums(sums: Tensor) -> Tensor:
    """Population CCC from (n, Σx, Σy, Σx², Σy², Σxy); 0 when undefined (constant, < 1 row)."""
    n, sx, sy, sxx, syy, sxy = sums.unbind(-1)
    n_safe = n.clamp(min=1)
    mean_x, mean_y = sx / n_safe, sy / n_safe
    var_x = (sxx / n_safe - mean_x**2).clamp(min=0)
    var_y = (syy / n_safe - mean_y**2).clamp(min=0)
    covariance = sxy / n_safe - mean_x * mean_y
    denominator = var_x + var_y + (mean_x - mean_y) ** 2
    defined = (n > 0) & (denominator != 0)
    safe = torch.where(defined, denominator, torch.ones_like(denominator))
    return torch.where(defined, 2 * covariance / safe, torch.zeros_like(safe))


def _sums(x: Tensor, y: Tensor) -> Tensor:
    """Sufficient statistics Float64[..., 6] of a CCC over the last dimension."""
    x, y = x.double(), y.double()
    n = torch.full_like(x[..., 0], x.shape[-1])
    return torch.stack(
        [n, x.sum(-1), y.sum(-1), (x * x).sum(-1), (y * y).sum(-1), (x * y).sum(-1)], dim=-1
    )


def ccc(x: Tensor, y: Tensor) -> Tensor:
    """Concordance correlation coefficient with population statistics; 0 for a constant series.

    Computed in float64 with centred values (no cancellation), returned in float64.
    """
    x, y = x.double().flatten(), y.double().flatten()
    if x.numel() == 0:
        return torch.zeros((), dtype=torch.float64)
    x_centered, y_centered = x - x.mean(), y - y.mean()
    covariance = (x_centered * y_centered).mean()
    denominator = x_centered.pow(2).mean() + y_centered.pow(2).mean() + (x.mean() - y.mean()) ** 2
    if denominator == 0:
        return torch.zeros((), dtype=torch.float64)
    return 2 * covariance / denominator


class ExprMetric(Metric):
    """EXPR F1 (macro), accuracy and score, pooled over every labelled frame of an epoch."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state(
            "confusion", torch.zeros(NUM_EXPR, NUM_EXPR, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.confusion += _confusion(_as_classes(pred), target)

    def compute(self) -> dict[str, Tensor]:
        scores = _scores_from_confusion(self.confusion)
        return {key: torch.tensor(value, dtype=torch.float64) for key, value in scores.items()}


class VAMetric(Metric):
    """Population CCC of valence and arousal and their mean, pooled over an epoch.

    Accumulates float64 sums per dimension; rows with a NaN label are ignored.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("sums", torch.zeros(2, 6, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        labelled = ~target.isnan().any(dim=1)
        pred, target = pred[labelled].detach().double(), target[labelled].double()
        self.sums += _sums(pred.T, target.T)

    def compute(self) -> dict[str, Tensor]:
        values = _ccc_from_sums(self.sums)
        return {"ccc_v": values[0], "ccc_a": values[1], "mean": values.mean()}
