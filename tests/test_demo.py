"""`abaw demo` end to end: real synthetic formats -> prepare -> the four stages -> the table."""

import json

import pytest

from abaw_lightning.cli import main

TINY_DEMO = [  # --scale tiny brings its own batch and window sizes
    "data.image_size=32",
    "data.num_workers=0",
    "+trainer.limit_train_batches=3",
    "stages.cnn_teacher.max_epochs=1",
    "stages.cnn_student.max_epochs=1",
    "stages.gru_teacher.max_epochs=1",
    "stages.gru_student.max_epochs=1",
]


@pytest.mark.slow
def test_demo_runs_the_four_stages_on_synthetic_data(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--scale", "tiny", *TINY_DEMO]) == 0
    out = capsys.readouterr().out
    stages = ("cnn_teacher", "cnn_student", "gru_teacher", "gru_student")
    for stage in stages:
        metrics = json.loads(
            (tmp_path / "runs" / "demo" / "seed_0" / stage / "metrics.json").read_text()
        )
        assert metrics["epochs"] == 1
        assert f"{metrics['best']['val/total']:.3f}" in out
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert manifest["rows"]["parts/expr"]["expw"] > 0
    student = tmp_path / "runs" / "demo" / "seed_0" / "cnn_student"  # the view's link to its run
    (features,) = (student / "features").glob("*/manifest.json")
    assert json.loads(features.read_text())["complete"] is True
    assert "chance" in out
