"""The temporal stages: GRU model, teacher and student through the real configs, feature cache
in the pipeline, online mode, resume, and the four-stage pipeline end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support import GRU_TINY, RECORD, FitRecorder, crash_at, tiny_config, view_run

from abaw_lightning import pipeline
from abaw_lightning.models import TemporalModel
from abaw_lightning.models.checkpoints import load_temporal


@pytest.fixture(scope="module")
def cnn_runs(prepared_videos, tmp_path_factory) -> Path:
    """Runs folder whose seed 0 already has both CNN stages."""
    runs = tmp_path_factory.mktemp("runs")
    for stage in ("cnn_teacher", "cnn_student"):
        cfg = tiny_config(prepared_videos, runs, "logger=none", f"stage={stage}", *GRU_TINY)
        pipeline.run_pipeline(cfg)
    return runs


def copy_runs(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target, symlinks=True)  # as `cp -r`: the views stay links
    return target


def test_temporal_model_shapes_and_task_inputs():
    model = TemporalModel(hidden_size=8).eval()
    features = torch.randn(2, 32, 2, 128)
    outputs = model(features)
    assert outputs["expr"].shape == (2, 32, 7)
    assert outputs["va"].shape == (2, 32, 40)
    changed = features.clone()
    changed[:, :, 1] += 1.0  # only the VA feature changes
    again = model(changed)
    assert torch.equal(again["expr"], outputs["expr"])
    assert not torch.equal(again["va"], outputs["va"])
    gru = model.tasks["expr"].gru
    assert (gru.input_size, gru.hidden_size, gru.bidirectional) == (128, 8, True)


def test_gru_teacher_and_student_train_from_the_cache(prepared_videos, cnn_runs, tmp_path):
    runs = copy_runs(cnn_runs, tmp_path / "runs")
    cfg = tiny_config(prepared_videos, runs, "logger=none", *GRU_TINY)
    results = pipeline.run_pipeline(cfg)
    assert list(results) == ["cnn_teacher", "cnn_student", "gru_teacher", "gru_student"]
    student_run = view_run(runs, "demo", 0, "cnn_student")
    (cache,) = (student_run / "features").glob("*/manifest.json")  # one cache for both GRU stages
    manifest = json.loads(cache.read_text())
    checkpoint = (cache.parent / manifest["checkpoint"]).resolve()  # relative to the cache
    assert checkpoint == student_run / results["cnn_student"]["best_checkpoint"]
    for stage in ("gru_teacher", "gru_student"):
        assert results[stage]["epochs"] == 2
        assert set(results[stage]["best"]) >= {"val/total", "val/ccc_v", "val/expr_f1"}
    identity = json.loads((view_run(runs, "demo", 0, "gru_student") / "identity.json").read_text())
    assert identity["builds_on"]["features"]["key"] == student_run.name
    assert identity["builds_on"]["teacher"]["key"] == view_run(runs, "demo", 0, "gru_teacher").name
    student = torch.load(
        view_run(runs, "demo", 0, "gru_student") / "checkpoints" / "best.ckpt",
        weights_only=True,
        map_location="cpu",
    )
    assert all(key.startswith(("model.", "val_")) for key in student["state_dict"])
    teacher = view_run(runs, "demo", 0, "gru_teacher") / "checkpoints" / "best.ckpt"
    assert isinstance(load_temporal(teacher), TemporalModel)


def test_gru_stage_online_mode_trains_from_images(prepared_videos, cnn_runs, tmp_path):
    runs = copy_runs(cnn_runs, tmp_path / "runs")
    cfg = tiny_config(
        prepared_videos, runs, "logger=none", "stage=gru_teacher", "features.mode=online", *GRU_TINY
    )
    result = pipeline.run_pipeline(cfg)["gru_teacher"]
    assert result["epochs"] == 2
    assert not (view_run(runs, "demo", 0, "cnn_student") / "features").exists()


def test_gru_stage_resumes_after_a_crash(prepared_videos, cnn_runs, tmp_path):
    runs = copy_runs(cnn_runs, tmp_path / "runs")
    settings = ("logger=none", "stage=gru_teacher", *GRU_TINY, "stages.gru_teacher.max_epochs=3")
    with pytest.raises(RuntimeError, match="simulated crash"):
        pipeline.run_pipeline(tiny_config(prepared_videos, runs, *settings, *crash_at(2)))
    last = view_run(runs, "demo", 0, "gru_teacher") / "checkpoints" / "last.ckpt"
    steps = torch.load(last, weights_only=True)["global_step"]
    FitRecorder.clear()
    result = pipeline.run_pipeline(tiny_config(prepared_videos, runs, *settings, *RECORD))[
        "gru_teacher"
    ]
    assert FitRecorder.starts == [(2, steps)]
    assert [entry["epoch"] for entry in result["history"]] == [0, 1, 2]


def test_gru_student_without_gru_teacher_says_what_to_run(prepared_videos, cnn_runs, tmp_path):
    runs = copy_runs(cnn_runs, tmp_path / "runs")
    cfg = tiny_config(prepared_videos, runs, "logger=none", "stage=gru_student", *GRU_TINY)
    with pytest.raises(Exception, match="stage=gru_teacher"):
        pipeline.run_pipeline(cfg)
