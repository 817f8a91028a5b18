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
    (view,) = (tmp_path / "runs").glob("demo+*/seed_0")  # named by the demo's overrides
    assert f"runs in {view}" in " ".join(out.split())
    recorded = json.loads((view / "view.json").read_text())["overrides"]
    assert recorded == ["data.batch_size=8", *recorded[1:4], *TINY_DEMO]  # the scale's, the user's
    stages = ("cnn_teacher", "cnn_student", "gru_teacher", "gru_student")
    for stage in stages:
        metrics = json.loads((view / stage / "metrics.json").read_text())
        assert metrics["epochs"] == 1
        assert f"{metrics['best']['val/total']:.3f}" in out
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert manifest["rows"]["parts/expr"]["expw"] > 0
    student = view / "cnn_student"  # the view's link to its run
    (features,) = (student / "features").glob("*/manifest.json")
    assert json.loads(features.read_text())["complete"] is True
    assert "chance" in out


def test_demo_refuses_data_of_another_scale_or_seed_and_says_where_to_go(tmp_path, capsys):
    synth = tmp_path / "synth"
    synth.mkdir()
    (synth / "synth.json").write_text(json.dumps({"seed": 0, "scale": "tiny"}))
    assert main(["demo", "--out", str(tmp_path), "--seed", "3", "--scale", "tiny"]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert f"{tmp_path} holds the synthetic data of --scale tiny --seed 0" in error
    assert f"--out {tmp_path}-tiny-3" in error and f"delete {synth}" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]  # nothing prepared or trained


def test_demo_checks_its_overrides_before_making_any_data(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "stages.gru_student.max_epochs=abc"]) == 2
    assert "stages.gru_student.max_epochs='abc' must be a whole number" in capsys.readouterr().err
    assert not out.exists()  # no synthesis, no prepare, no run
