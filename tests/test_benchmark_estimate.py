"""benchmarks/paper_estimate.py: the paper-table wall time from per-stage rates, by hand."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "paper_estimate", Path(__file__).parents[1] / "benchmarks" / "paper_estimate.py"
)
paper_estimate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paper_estimate)

SIZES = {
    "affwild2_cached_frames": 100,
    "affwild2_val_frames": 1000,
    "parts": {"expr": 6400, "va": 3200, "expr_va": 1280},
    "gru_train_frames": {"expr": 5120, "va": 5120, "expr_va": 2560},
}
RATES = {
    "cnn_teacher": 100.0,
    "cnn_student": 50.0,
    "cnn_validation": 1000.0,
    "extraction": 180.0,
    "gru_teacher": 1536.0,
    "gru_student": 768.0,
}


def test_per_seed_seconds_by_hand():
    seconds = paper_estimate.per_seed_seconds(SIZES, RATES, epochs=2, views=18)
    # 3-part epoch: 1280 // 64 = 20 steps of 192 images; 2-part: 3200 // 64 = 50 steps of 128
    assert seconds["cnn_teacher_2task"] == pytest.approx(2 * (6400 / 100 + 1000 / 1000))
    assert seconds["cnn_teacher"] == pytest.approx(2 * (3840 / 100 + 1))
    assert seconds["cnn_student"] == pytest.approx(2 * (3840 / 50 + 1))
    assert seconds["cnn_student_no_sharing"] == seconds["cnn_student"]
    assert seconds["features"] == pytest.approx(100 * 18 / 180)  # once, not per epoch
    # GRU: min(5120, 5120, 2560) // 16 = 160 windows, 10 steps of 3 x 16 windows x 32 frames
    assert seconds["gru_teacher"] == pytest.approx(2 * (10 * 1536 + 1000) / 1536)
    assert seconds["gru_student"] == pytest.approx(2 * (10 * 1536 + 1000) / 768)


def test_other_card_runs_at_the_lower_of_measured_and_scaled_model_rate():
    rates = {"a": {"rate": 80.0, "model_only": 100.0}, "b": {"rate": 10.0, "model_only": 100.0}}
    assert paper_estimate.scaled(rates, 0.5) == {"a": 50.0, "b": 10.0}
    assert paper_estimate.scaled(rates, None) == {"a": 80.0, "b": 10.0}


def test_estimate_of_a_suite_result():
    def variant(value):
        return {"median": value}

    suite = {
        "measurements": {
            "cnn_student": {"variants": {"end_to_end": variant(50), "ceiling": variant(100)}},
            "model_steps": {"variants": {"teacher_per_part": variant(200)}},
            "loader": {"variants": {"w8": variant(1e9), "gpu_decode_w8": variant(1.0)}},
            "validation": {"variants": {"cnn": variant(1000)}},
            "extraction": {"variants": {"steady_state": variant(180), "ceiling": variant(360)}},
            "gru": {
                "variants": {
                    "teacher_cached": variant(1536),
                    "student_cached": variant(768),
                    "teacher_step_only": variant(3072),
                }
            },
        }
    }
    result = paper_estimate.estimate(suite, {**SIZES, "source": "test"}, views=18)
    assert result["rates"]["cnn_teacher"]["rate"] == pytest.approx(100)  # 50 x 200 / 100
    seconds = paper_estimate.per_seed_seconds(SIZES, RATES, epochs=40, views=18)
    hours = result["measured_40_epochs"]["table_x10_hours"]
    assert hours == pytest.approx(round(10 * sum(seconds.values()) / 3600, 1))


def test_estimate_names_what_was_not_measured():
    result = paper_estimate.estimate({"measurements": {}}, {**SIZES, "source": "test"})
    assert "not measured" in result["error"]
