"""Eq. 1-10 against values worked out by hand (formulas in the comments)."""

import math
import subprocess
import sys

import pytest
import torch

from abaw_lightning.losses import (
    ccc_loss_term,
    expr_loss,
    kd_loss,
    student_loss,
    teacher_loss,
    va_bins,
    va_expectation,
    va_loss,
)

LN7 = math.log(7)  # CE of a uniform 7-way prediction
LN20 = math.log(20)  # CE of a uniform 20-bin prediction
NAN = float("nan")


def one_hot_logits(indices: list[int], width: int, value: float = 20.0) -> torch.Tensor:
    logits = torch.zeros(len(indices), width)
    logits[torch.arange(len(indices)), torch.tensor(indices)] = value
    return logits


def test_va_bins_edges_and_float32_labels():
    va = torch.tensor([[-1.0, 1.0], [-0.95, 0.0], [0.7, -0.9], [0.3, 0.999]], dtype=torch.float32)
    # [-1, -0.9) -> 0; exactly 1 -> 19; 0.0 -> 10; 0.7 (float32 0.69999999) -> 17; -0.9 -> 1
    assert va_bins(va).tolist() == [[0, 19], [0, 10], [17, 1], [13, 19]]


def test_va_bins_tolerance_is_one_millionth_below_an_edge():
    va = torch.tensor([[0.7 - 9e-7, 0.7 - 2e-6], [-0.5 - 9e-7, 0.9999]], dtype=torch.float64)
    assert va_bins(va).tolist() == [[17, 16], [5, 19]]


def test_losses_do_not_import_the_data_package():
    code = "import sys, abaw_lightning.losses; print(sorted(m for m in sys.modules if 'data' in m))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "abaw_lightning.data" not in found.stdout


@pytest.mark.parametrize(("anchors", "expected"), [("linspace", -0.578947), ("centers", -0.55)])
def test_va_expectation_anchors(anchors, expected):
    logits = torch.zeros(1, 40)
    logits[0, [3, 5]] = 50.0  # valence: half on bin 3, half on bin 5
    logits[0, 20 + 19] = 50.0  # arousal: all on the last bin
    # linspace anchors -1 + 2k/19: (a3 + a5)/2 = (-0.684211 - 0.473684)/2; last anchor 1
    # centres -0.95 + 0.1k: (-0.65 - 0.45)/2; last centre 0.95
    last = 1.0 if anchors == "linspace" else 0.95
    result = va_expectation(logits, anchors=anchors)
    assert result[0].tolist() == pytest.approx([expected, last], abs=1e-6)


def test_expr_loss_hand_value_and_missing_rows():
    logits = torch.zeros(3, 7)
    logits[0, 0] = 2.0
    logits[1, 1] = 1.0
    target = torch.tensor([0, 3, -1])
    # row 0: log(e^2 + 6) - 2 = 0.594437; row 1: log(e + 6) = 2.165422; row 2 ignored
    assert expr_loss(logits, target).item() == pytest.approx(1.379930, abs=1e-6)
    assert expr_loss(logits, torch.full((3,), -1)).item() == 0.0


def test_va_loss_hand_value():
    # valence: logit 20 on bins 19, 0, 10 -> expectation ~ anchors [1, -1, 0.052632]; targets in
    # bins 19, 5, 10 -> CE = (0 + 20 + 0) / 3 = 6.666667;
    # unbiased CCC = 2cov / (vx + vy + dm^2) = 0.917846
    # arousal: uniform logits -> CE ln 20; constant expectation 0 -> CCC 0 -> 1 - CCC = 1
    logits = torch.cat([one_hot_logits([19, 0, 10], 20), torch.zeros(3, 20)], dim=1)
    target = torch.tensor([[0.9, 0.1], [-0.5, 0.2], [0.0, -0.3]])
    expected = 6.666667 + (1 - 0.917846) + LN20 + 1
    assert va_loss(logits, target).item() == pytest.approx(expected, abs=1e-5)


def test_va_loss_single_row_and_missing_rows_never_nan():
    logits = torch.zeros(3, 40)
    target = torch.tensor([[0.5, 0.5], [NAN, NAN], [NAN, NAN]])
    # one labelled row: CCC term contributes 0, CE = ln 20 per dimension
    assert va_loss(logits, target).item() == pytest.approx(2 * LN20, abs=1e-6)
    assert va_loss(logits, torch.full((3, 2), NAN)).item() == 0.0


def test_ccc_term_with_zero_denominator_is_zero_not_nan():
    constant = torch.tensor([0.5, 0.5], requires_grad=True)
    term = ccc_loss_term(constant, torch.tensor([0.5, 0.5]))
    term.backward()
    assert term.item() == 0.0
    assert torch.isfinite(constant.grad).all()
    # constant prediction, varying target: CCC 0, the term is 1
    assert ccc_loss_term(torch.zeros(3), torch.tensor([0.1, 0.2, 0.4])).item() == 1.0


def test_kd_loss_expr_hand_value_and_t2_switch():
    student = torch.zeros(2, 7)
    teacher = torch.zeros(2, 7)
    teacher[:, 0] = 1.5 * math.log(4)  # softmax(t / 1.5) = [0.4, 0.1 x 6]
    # KL = 0.4 ln(0.4 * 7) + 0.6 ln(0.1 * 7) = 0.197843; x T^2 = 2.25 -> 0.445146
    assert kd_loss(student, teacher, "expr").item() == pytest.approx(0.445146, abs=1e-6)
    plain = kd_loss(student, teacher, "expr", t2=False).item()
    assert plain == pytest.approx(0.197843, abs=1e-6)


def test_kd_loss_va_sums_valence_and_arousal_separately():
    student = torch.zeros(1, 40)
    teacher = torch.zeros(1, 40)
    teacher[0, 0] = 1.5 * math.log(
        21
    )  # valence softmax(t/T) = [21/40, 1/40 x 19]; arousal = student
    # KL_v = 0.525 ln(10.5) + 0.475 ln(0.5) = 0.905227; KL_a = 0; x 2.25
    assert kd_loss(student, teacher, "va").item() == pytest.approx(2.036761, abs=1e-6)
    # a 40-way softmax would give a different value: the split matters
    joint = torch.nn.functional.kl_div(
        (student / 1.5).log_softmax(-1), (teacher / 1.5).softmax(-1), reduction="batchmean"
    )
    assert abs(joint.item() * 2.25 - 2.036761) > 0.1


def three_part_batches():
    """`expr` part: one secondary VA label; `va` part: one of three rows with an EXPR label."""
    return {
        "expr": {
            "expr": torch.tensor([0, 4, 6]),
            "va": torch.tensor([[0.2, 0.3], [NAN, NAN], [NAN, NAN]]),
        },
        "va": {
            "expr": torch.tensor([-1, 2, -1]),
            "va": torch.tensor([[0.5, -0.5], [0.1, 0.4], [-0.7, 0.2]]),
        },
        "expr_va": {
            "expr": torch.tensor([1, 5]),
            "va": torch.tensor([[0.3, 0.6], [-0.2, -0.1]]),
        },
    }


def uniform_outputs(batches, requires_grad=False):
    return {
        part: {
            "expr": torch.zeros(len(b["expr"]), 7, requires_grad=requires_grad),
            "va": torch.zeros(len(b["expr"]), 40, requires_grad=requires_grad),
        }
        for part, b in batches.items()
    }


def test_teacher_loss_three_parts_and_two_parts():
    batches = three_part_batches()
    outputs = uniform_outputs(batches)
    # EXPR head: mean(ln 7, ln 7); VA head: mean(2(ln 20 + 1), 2(ln 20 + 1));
    # secondary labels unused
    va_term = 2 * (LN20 + 1)
    assert teacher_loss(outputs, batches).item() == pytest.approx(LN7 + va_term, abs=1e-5)
    two = {part: batches[part] for part in ("expr", "va")}
    two_out = {part: outputs[part] for part in ("expr", "va")}
    assert teacher_loss(two_out, two).item() == pytest.approx(LN7 + va_term, abs=1e-5)


def test_teacher_loss_averages_parts_per_head():
    batches = three_part_batches()
    outputs = uniform_outputs(batches)
    outputs["expr"]["expr"] = one_hot_logits([0, 4, 6], 7)  # ~0 CE on the expr part
    # EXPR head = mean(~0, ln 7) on parts expr and expr_va
    expected = LN7 / 2 + 2 * (LN20 + 1)
    assert teacher_loss(outputs, batches).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("teacher_expr_peak", "shared", "expected"),
    [
        # teacher uniform: every KD is 0 and G = 0.6 * supervision.
        # EXPR entries: 0.6 ln7 (expr), mean(0.6 ln7, 0) (va, 1 labelled row), 0.6 ln7 (expr_va)
        # VA entries: 0.6 * 2(ln20 + 1) (va), mean(0.6 * 2 ln20, 0) (expr, 1 row: CCC term 0),
        #             0.6 * 2(ln20 + 1) (expr_va)
        (0.0, True, (2.5 * 0.6 * LN7 + 2 * 1.2 * (LN20 + 1) + 0.6 * LN20) / 3),
        # Eq. 9: the cross-task entries are distillation only (0 here)
        (0.0, False, (2 * 0.6 * LN7 + 2 * 1.2 * (LN20 + 1)) / 3),
        # teacher EXPR logits peaked (KD_expr = 0.445146 on every row): G_expr gains 0.4 * KD
        (
            1.5 * math.log(4),
            True,
            (2 * (0.6 * LN7 + 0.4 * 0.445146) + (0.6 * LN7 + 0.4 * 0.445146 + 0.445146) / 2) / 3
            + (2 * 1.2 * (LN20 + 1) + 0.6 * LN20) / 3,
        ),
        (
            1.5 * math.log(4),
            False,
            (2 * (0.6 * LN7 + 0.4 * 0.445146) + 0.445146) / 3 + (2 * 1.2 * (LN20 + 1)) / 3,
        ),
    ],
)
def test_student_loss_hand_values(teacher_expr_peak, shared, expected):
    batches = three_part_batches()
    student = uniform_outputs(batches)
    teacher = uniform_outputs(batches)
    for part in teacher.values():
        part["expr"][:, 0] = teacher_expr_peak
    result = student_loss(student, teacher, batches, lam=0.6, shared=shared)
    assert not torch.isnan(result)
    assert result.item() == pytest.approx(expected, abs=1e-5)


def test_eq9_and_eq10_differ_only_through_secondary_labels():
    batches = three_part_batches()
    torch.manual_seed(0)
    student = {
        p: {k: torch.randn_like(v) for k, v in o.items()}
        for p, o in uniform_outputs(batches).items()
    }
    teacher = {
        p: {k: torch.randn_like(v) for k, v in o.items()}
        for p, o in uniform_outputs(batches).items()
    }
    eq9 = student_loss(student, teacher, batches, shared=False)
    eq10 = student_loss(student, teacher, batches, shared=True)
    assert eq10.item() != pytest.approx(eq9.item(), abs=1e-4)

    relabelled = three_part_batches()
    relabelled["va"]["expr"][1] = 6  # change the one secondary expression label
    assert student_loss(student, teacher, relabelled, shared=False).item() == eq9.item()
    assert student_loss(student, teacher, relabelled, shared=True).item() != eq10.item()

    unlabelled = three_part_batches()
    unlabelled["va"]["expr"][:] = -1
    unlabelled["expr"]["va"][:] = NAN
    no_secondary_9 = student_loss(student, teacher, unlabelled, shared=False)
    no_secondary_10 = student_loss(student, teacher, unlabelled, shared=True)
    assert no_secondary_10.item() == pytest.approx(no_secondary_9.item(), abs=1e-6)
    assert no_secondary_9.item() == pytest.approx(eq9.item(), abs=1e-6)


def test_student_loss_without_expr_va_part():
    batches = three_part_batches()
    del batches["expr_va"]
    outputs = uniform_outputs(batches)
    result = student_loss(outputs, uniform_outputs(batches), batches)
    # EXPR: mean(0.6 ln7, 0.3 ln7); VA: mean(1.2(ln20 + 1), 0.6 ln20)
    expected = (0.9 * LN7) / 2 + (1.2 * (LN20 + 1) + 0.6 * LN20) / 2
    assert result.item() == pytest.approx(expected, abs=1e-5)


def test_gradients_reach_the_student_only():
    batches = three_part_batches()
    student_net = torch.nn.Linear(3, 47)
    teacher_net = torch.nn.Linear(3, 47)
    torch.manual_seed(1)

    def run(net):
        out = {}
        for part, b in batches.items():
            logits = net(torch.randn(len(b["expr"]), 3))
            out[part] = {"expr": logits[:, :7], "va": logits[:, 7:]}
        return out

    loss = student_loss(run(student_net), run(teacher_net), batches)
    loss.backward()
    assert teacher_net.weight.grad is None
    assert student_net.weight.grad is not None
    assert student_net.weight.grad.abs().sum() > 0
    assert torch.isfinite(student_net.weight.grad).all()


def test_a_non_finite_label_is_not_hidden():
    logits = torch.zeros(3, 40, requires_grad=True)
    target = torch.tensor([[0.5, 0.5], [float("inf"), 0.1], [0.2, -0.3]])
    assert torch.isnan(va_loss(logits, target))
