"""The paper's losses (Eq. 1-10) as pure functions of logits and labels, exactly as METHOD.md §3.

A part batch is ``{"expr": Long[N] (-1 = missing), "va": Float[N, 2] (NaN = missing)}`` and a model
output of a part is ``{"expr": Float[N, 7], "va": Float[N, 40]}`` (20 valence then 20 arousal bin
logits). Losses never return NaN: a term with no rows is left out of its mean (or is 0 when nothing
is left) and a CCC over fewer than two rows contributes 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

NUM_BINS = 20
VAAnchors = Literal["linspace", "centers"]
"""The values the bins stand for (METHOD.md §2)."""
EXPR_PARTS = ("expr", "expr_va")
"""Parts whose primary label is the expression."""
VA_PARTS = ("va", "expr_va")
"""Parts whose primary label is valence-arousal."""
EDGE_TOLERANCE = 1e-6
"""Labels within this distance below a bin edge count as on it (float32 0.7 is 0.69999999)."""


def va_bins(va: Tensor) -> Tensor:
    """Bin indices (Long, same shape) of valence/arousal values: the one VA binning (METHOD.md §2).

    20 left-closed bins over [-1, 1] on the labels' decimal values (a value within
    `EDGE_TOLERANCE` below an edge is on it), exactly 1 -> bin 19; used by the loss and the
    sampler histograms alike.
    """
    scaled = (va.double() + 1.0 + EDGE_TOLERANCE) * (NUM_BINS / 2)
    return scaled.floor().clamp(0, NUM_BINS - 1).long()


def va_anchors(anchors: VAAnchors = "linspace", device=None, dtype=torch.float32) -> Tensor:
    """Values the bins stand for: ``linspace(-1, 1, 20)`` as released, or the bin ``centers``."""
    if anchors == "linspace":
        return torch.linspace(-1.0, 1.0, NUM_BINS, device=device, dtype=dtype)
    if anchors == "centers":
        edges = torch.linspace(-1.0, 1.0, NUM_BINS + 1, device=device, dtype=dtype)
        return (edges[:-1] + edges[1:]) / 2
    raise ValueError(f"va_anchors must be 'linspace' or 'centers', got {anchors!r}")


def va_expectation(va_logits: Tensor, anchors: str = "linspace") -> Tensor:
    """Continuous valence and arousal Float[N, 2]: softmax expectation over the bin anchors."""
    values = va_anchors(anchors, va_logits.device, va_logits.dtype)
    probs = va_logits.unflatten(-1, (2, NUM_BINS)).softmax(dim=-1)
    return probs @ values


def expr_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Eq. 1: cross entropy averaged over the rows with an expression label (0 when none)."""
    labelled = target >= 0
    if not labelled.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labelled], target[labelled])


def ccc_loss_term(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - CCC``, unbiased (n-1) statistics as released; 0 with < 2 rows or a zero denominator."""
    if pred.numel() < 2:
        return pred.sum() * 0.0
    pred_centered = pred - pred.mean()
    target_centered = target - target.mean()
    n_minus_1 = pred.numel() - 1
    covariance = (pred_centered * target_centered).sum() / n_minus_1
    denominator = (
        pred_centered.pow(2).sum() / n_minus_1
        + target_centered.pow(2).sum() / n_minus_1
        + (pred.mean() - target.mean()).pow(2)
    )
    zero = denominator == 0
    safe = torch.where(zero, torch.ones_like(denominator), denominator)
    return torch.where(zero, torch.zeros_like(safe), 1.0 - 2.0 * covariance / safe)


def va_loss(va_logits: Tensor, target: Tensor, anchors: str = "linspace") -> Tensor:
    """Eq. 2: per dimension, CE over the 20 bins + (1 - CCC) of the expectation; V and A summed.

    Rows with a missing (NaN) value are left out; with no labelled row the loss is 0.
    """
    labelled = ~target.isnan().any(dim=1)
    if not labelled.any():
        return va_logits.sum() * 0.0
    logits = va_logits[labelled].unflatten(-1, (2, NUM_BINS))
    target = target[labelled]
    bins = va_bins(target)
    expectation = va_expectation(va_logits[labelled], anchors)
    total = va_logits.new_zeros(())
    for dim in range(2):
        total = total + F.cross_entropy(logits[:, dim], bins[:, dim])
        total = total + ccc_loss_term(expectation[:, dim], target[:, dim].to(expectation.dtype))
    return total


@dataclass(frozen=True)
class Distillation:
    """The students' distillation settings (METHOD.md §3), the one place their defaults live.

    ``lam`` weighs ground truth against distillation (Eq. 8), ``temperature`` is T of Eq. 4-6,
    ``kd_t2`` multiplies the KL by T^2 (as released), ``shared_annotations``: Eq. 10, else Eq. 9.
    """

    lam: float = 0.6
    temperature: float = 1.5
    kd_t2: bool = True
    shared_annotations: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.lam <= 1:
            raise ValueError(f"lam={self.lam} must lie in [0, 1] (the weight of the ground truth)")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be positive")

    def loss(
        self,
        outputs: Mapping[str, Mapping],
        teacher_outputs: Mapping[str, Mapping],
        batches: Mapping[str, Mapping],
        anchors: str = "linspace",
    ) -> Tensor:
        """`student_loss` with these settings."""
        return student_loss(
            outputs,
            teacher_outputs,
            batches,
            self.lam,
            self.temperature,
            self.kd_t2,
            self.shared_annotations,
            anchors=anchors,
        )


def kd_loss(
    student: Tensor,
    teacher: Tensor,
    task: str,
    temperature: float = Distillation.temperature,
    t2: bool = Distillation.kd_t2,
) -> Tensor:
    """Eq. 4-6: KL(softmax(t/T) || softmax(s/T)), batch mean, times T^2 when ``t2``.

    For ``task="va"`` the KL is taken over the valence bins and the arousal bins separately and
    summed. The teacher is detached: gradients reach the student only.
    """
    if student.shape[0] == 0:
        return student.sum() * 0.0
    teacher = teacher.detach()
    if task == "va":
        student = student.unflatten(-1, (2, NUM_BINS)).transpose(0, 1)
        teacher = teacher.unflatten(-1, (2, NUM_BINS)).transpose(0, 1)
    elif task == "expr":
        student, teacher = student.unsqueeze(0), teacher.unsqueeze(0)
    else:
        raise ValueError(f"task must be 'expr' or 'va', got {task!r}")
    total = student.new_zeros(())
    for student_logits, teacher_logits in zip(student, teacher, strict=True):
        total = total + F.kl_div(
            F.log_softmax(student_logits / temperature, dim=-1),
            F.log_softmax(teacher_logits / temperature, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
    return total * temperature**2 if t2 else total


def supervision(
    outputs: Mapping[str, Tensor], labels: Mapping[str, Tensor], task: str, anchors: str
) -> Tensor:
    """Ground-truth loss of one task head: Eq. 1 for ``expr``, Eq. 2 for ``va``."""
    if task == "expr":
        return expr_loss(outputs["expr"], labels["expr"])
    return va_loss(outputs["va"], labels["va"], anchors)


def has_label(labels: Mapping[str, Tensor], task: str) -> Tensor:
    """Bool[N]: which rows carry a label of ``task``."""
    if task == "expr":
        return labels["expr"] >= 0
    return ~labels["va"].isnan().any(dim=1)


def _mean(entries: list[Tensor], like: Tensor) -> Tensor:
    """Mean of the present entries; 0 when there are none."""
    return torch.stack(entries).mean() if entries else like.new_zeros(())


def _rows(batch: Mapping[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
    return {key: value[mask] for key, value in batch.items() if key in ("expr", "va")}


def teacher_loss(
    outputs: Mapping[str, Mapping],
    batches: Mapping[str, Mapping],
    *,
    anchors: str = "linspace",
) -> Tensor:
    """Eq. 7: per head, the mean supervision over the parts carrying that head's primary label.

    Works with the 3-part (``expr``, ``va``, ``expr_va``) and the 2-part setting.
    """
    like = next(iter(outputs.values()))["expr"]
    total = like.new_zeros(())
    for task, parts in (("expr", EXPR_PARTS), ("va", VA_PARTS)):
        entries = [
            supervision(outputs[part], batches[part], task, anchors)
            for part in parts
            if part in outputs and has_label(batches[part], task).any()
        ]
        total = total + _mean(entries, like)
    return total


@dataclass(frozen=True)
class _Distillation:
    """The constants of Eq. 8-10 for one call of `student_loss`."""

    lam: float
    temperature: float
    t2: bool
    anchors: str

    def kd(self, student: Mapping, teacher: Mapping, task: str) -> Tensor:
        return kd_loss(student[task], teacher[task], task, self.temperature, self.t2)

    def sample(self, student: Mapping, teacher: Mapping, labels: Mapping, task: str) -> Tensor:
        """Eq. 8: ``lam * supervision + (1 - lam) * distillation`` on the given rows."""
        ground_truth = supervision(student, labels, task, self.anchors)
        return self.lam * ground_truth + (1 - self.lam) * self.kd(student, teacher, task)

    def cross_task(self, student, teacher, labels, task: str, shared: bool) -> Tensor:
        """A head's entry on the other task's part: Eq. 10 groups, or Eq. 9 distillation only.

        With sharing: the unweighted mean of Eq. 8 on the rows that carry the secondary label and
        distillation on the rows that do not, over the groups that have rows.
        """
        if not shared:
            return self.kd(student, teacher, task)
        labelled = has_label(labels, task)
        groups = []
        if labelled.any():
            rows = (_rows(student, labelled), _rows(teacher, labelled), _rows(labels, labelled))
            groups.append(self.sample(*rows, task))
        if not labelled.all():
            unlabelled = ~labelled
            groups.append(self.kd(_rows(student, unlabelled), _rows(teacher, unlabelled), task))
        return torch.stack(groups).mean()


def student_loss(
    outputs: Mapping[str, Mapping],
    teacher_outputs: Mapping[str, Mapping],
    batches: Mapping[str, Mapping],
    lam: float = Distillation.lam,
    temperature: float = Distillation.temperature,
    t2: bool = Distillation.kd_t2,
    shared: bool = Distillation.shared_annotations,
    *,
    anchors: str = "linspace",
) -> Tensor:
    """Eq. 10 (``shared=True``) or Eq. 9: per head, the mean of its per-part entries; heads summed.

    Own-task part and ``expr_va``: Eq. 8 on the whole part. Other task's part: see
    `_Distillation.cross_task`. Parts with no rows are left out.
    """
    loss = _Distillation(lam, temperature, t2, anchors)
    like = next(iter(outputs.values()))["expr"]
    total = like.new_zeros(())
    for task, own_parts, other_part in (("expr", EXPR_PARTS, "va"), ("va", VA_PARTS, "expr")):
        present = [part for part in (*own_parts, other_part) if _has_rows(outputs, part)]
        entries = [
            loss.sample(outputs[part], teacher_outputs[part], batches[part], task)
            if part != other_part
            else loss.cross_task(outputs[part], teacher_outputs[part], batches[part], task, shared)
            for part in present
        ]
        total = total + _mean(entries, like)
    return total


def _has_rows(outputs: Mapping[str, Mapping], part: str) -> bool:
    return part in outputs and outputs[part]["expr"].shape[0] > 0
