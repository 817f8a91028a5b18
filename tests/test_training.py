"""The CNN stages through the real Hydra configs, shrunk to a tiny CPU run, on the stage store."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
import pytorch_lightning as pl
import torch
from support import (
    RECORD,
    TEST_CALLBACKS,
    FitRecorder,
    crash_at,
    tiny_config,
    train_in_process,
    view_run,
)

from abaw_lightning import pipeline
from abaw_lightning.errors import UserError
from abaw_lightning.stages.base import NonFiniteLossError


def test_teacher_then_student_train_validate_and_write_artifacts(prepared, tmp_path):
    cfg = tiny_config(prepared, tmp_path, "logger=csv", "pipeline=[cnn_teacher,cnn_student]")
    results = pipeline.run_pipeline(cfg)
    assert list(results) == ["cnn_teacher", "cnn_student"]
    view = json.loads((tmp_path / "demo" / "seed_0" / "view.json").read_text())
    assert view["experiment"] == "demo" and view["seed"] == 0
    for stage, result in results.items():
        root = view_run(tmp_path, "demo", 0, stage)
        assert root.parent == tmp_path / "store" / stage
        assert (tmp_path / "demo" / "seed_0" / stage).resolve() == root  # the view's link
        identity = json.loads((root / "identity.json").read_text())
        assert identity["key"] == root.name and identity["seed"] == 0
        assert (root / "config.yaml").is_file()
        assert (root / "checkpoints" / "best.ckpt").is_file()
        assert (root / "checkpoints" / "last.ckpt").is_file()
        assert (root / "csv" / "metrics.csv").is_file()
        saved = json.loads((root / "metrics.json").read_text())
        assert saved == result
        assert saved["best_checkpoint"] == "checkpoints/best.ckpt"  # relative to the run
        assert saved["epochs"] == 2
        assert [entry["epoch"] for entry in saved["history"]] == [0, 1]
        last = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["global_step"] == saved["global_step"]  # the end state, even without progress
        best = max(saved["history"], key=lambda entry: entry["val/total"])
        assert saved["best"] == best
        expected_total = best["val/expr_score"] + best["val/ccc_v"] + best["val/ccc_a"]
        assert best["val/total"] == pytest.approx(expected_total, abs=1e-6)
        assert 0 <= best["val/expr_f1"] <= 1
    student = json.loads(
        (view_run(tmp_path, "demo", 0, "cnn_student") / "identity.json").read_text()
    )
    teacher_key = view_run(tmp_path, "demo", 0, "cnn_teacher").name
    assert student["builds_on"]["teacher"]["key"] == teacher_key


class Inspect(pl.Callback):
    """What the student sees of its teacher during a training step."""

    checks: ClassVar[dict[str, bool]] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        teacher = module.teacher
        in_optimizer = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
        Inspect.checks.update(
            eval=not teacher.training,
            frozen=not any(p.requires_grad for p in teacher.parameters()),
            no_grad=all(p.grad is None for p in teacher.parameters()),
            not_optimized=not any(id(p) in in_optimizer for p in teacher.parameters()),
        )


def test_student_teacher_is_frozen_eval_and_not_saved(prepared, tmp_path):
    pipeline.run_pipeline(tiny_config(prepared, tmp_path, "logger=none", "stage=cnn_teacher"))
    Inspect.checks.clear()
    cfg = tiny_config(
        prepared,
        tmp_path,
        "logger=none",
        "stage=cnn_student",
        "+callbacks.inspect._target_=test_training.Inspect",
        TEST_CALLBACKS,
    )
    pipeline.run_pipeline(cfg)
    assert Inspect.checks == {"eval": True, "frozen": True, "no_grad": True, "not_optimized": True}
    ckpt = torch.load(
        view_run(tmp_path, "demo", 0, "cnn_student") / "checkpoints" / "best.ckpt",
        weights_only=True,
    )
    assert all(key.startswith(("model.", "val_")) for key in ckpt["state_dict"])
    assert "teacher" not in ckpt["hyper_parameters"]
    distillation = ckpt["hyper_parameters"]["distillation"]
    assert distillation == {
        "lam": 0.6,
        "temperature": 1.5,
        "kd_t2": True,
        "shared_annotations": True,
    }


def test_interrupted_stage_resumes_with_same_step_epoch_and_wandb_run(prepared, tmp_path):
    settings = ("logger=wandb", "stage=cnn_teacher", "stages.cnn_teacher.max_epochs=3")
    with pytest.raises(RuntimeError, match="simulated crash"):
        pipeline.run_pipeline(tiny_config(prepared, tmp_path, *settings, *crash_at(1)))
    root = view_run(tmp_path, "demo", 0, "cnn_teacher")
    assert not (root / "metrics.json").exists()
    assert (root / "checkpoints" / "last.ckpt").is_file()
    run_id = (root / "wandb_id").read_text().strip()
    steps_per_epoch = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)[
        "global_step"
    ]
    assert steps_per_epoch > 0
    FitRecorder.clear()
    result = pipeline.run_pipeline(tiny_config(prepared, tmp_path, *settings, *RECORD))
    result = result["cnn_teacher"]
    assert FitRecorder.starts == [(1, steps_per_epoch)]
    assert FitRecorder.folders == [str(root)]
    assert result["global_step"] == 3 * steps_per_epoch
    assert [entry["epoch"] for entry in result["history"]] == [0, 1, 2]
    assert (root / "wandb_id").read_text().strip() == run_id
    offline_runs = list((root / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline_runs) == 2  # the first process and the resumed one, one W&B run id
    assert all(list(run.glob("run-*.wandb")) for run in offline_runs)


def test_finished_stage_is_skipped_and_non_result_settings_share_the_run(prepared, tmp_path):
    cfg = tiny_config(prepared, tmp_path, "logger=none", "stage=cnn_teacher")
    first = pipeline.run_pipeline(cfg)["cnn_teacher"]
    metrics = view_run(tmp_path, "demo", 0, "cnn_teacher") / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    FitRecorder.clear()
    other = tiny_config(
        prepared,
        tmp_path,
        "logger=csv",
        "stage=cnn_teacher",
        "data.val_batch_size=7",
        "channels_last=false",
        "trainer.log_every_n_steps=5",
        "checkpoint_every_n_steps=3",
        *RECORD,
    )
    assert pipeline.run_pipeline(other)["cnn_teacher"] == first
    assert FitRecorder.starts == []  # nothing trained again
    assert metrics.stat().st_mtime_ns == stamp
    assert len(list((tmp_path / "store" / "cnn_teacher").iterdir())) == 1


@pytest.mark.slow
def test_seed_zero_is_honoured_and_seeds_differ(prepared, tmp_path):
    results = {}
    for seed, runs in ((0, "a"), (0, "b"), (1, "c")):
        cfg = tiny_config(
            prepared, tmp_path / runs, "logger=none", "stage=cnn_teacher", f"seed={seed}"
        )
        assert cfg.seed == seed
        results[runs] = pipeline.run_pipeline(cfg)["cnn_teacher"]["history"]
    assert (view_run(tmp_path / "a", "demo", 0, "cnn_teacher") / "metrics.json").is_file()
    assert results["a"] == results["b"]
    assert results["a"] != results["c"]
    keys = {view_run(tmp_path / r, "demo", s, "cnn_teacher").name for s, r in ((0, "a"), (1, "c"))}
    assert len(keys) == 2


def test_student_without_teacher_says_what_to_run(prepared, tmp_path):
    cfg = tiny_config(prepared, tmp_path, "logger=none", "stage=cnn_student")
    with pytest.raises(UserError, match="stage=cnn_teacher"):
        pipeline.run_pipeline(cfg)


def test_missing_prepared_dataset_says_what_to_run(tmp_path):
    cfg = tiny_config(tmp_path / "nowhere", tmp_path, "logger=none")
    with pytest.raises(UserError, match="abaw prepare"):
        pipeline.run_pipeline(cfg)


def test_unknown_stage_is_a_user_error(prepared, tmp_path):
    cfg = tiny_config(prepared, tmp_path, "logger=none", "stage=cnn_teachr")
    with pytest.raises(UserError, match="unknown stage 'cnn_teachr'"):
        pipeline.run_pipeline(cfg)


class PoisonVaPart(pl.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == 2:
            batch["va"]["va"][0, 0] = float("inf")


def test_non_finite_loss_stops_with_step_part_and_checkpoint(prepared, tmp_path):
    cfg = tiny_config(
        prepared,
        tmp_path,
        "logger=none",
        "stage=cnn_teacher",
        "+callbacks.poison._target_=test_training.PoisonVaPart",
        TEST_CALLBACKS,
    )
    with pytest.raises(NonFiniteLossError, match=r"global step 2 .*part\(s\) \['va'\]"):
        pipeline.run_pipeline(cfg)
    root = view_run(tmp_path, "demo", 0, "cnn_teacher")
    assert (root / "checkpoints" / "nonfinite.ckpt").is_file()


def test_cli_reports_config_typo_and_user_errors_without_traceback(tmp_path, monkeypatch, capfd):
    with pytest.raises(SystemExit) as typo:
        train_in_process(monkeypatch, "experiment=demo", "data.rot=x")
    assert typo.value.code != 0
    err = capfd.readouterr().err
    assert "data.rot" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as missing:
        train_in_process(
            monkeypatch, "experiment=demo", f"data.root={tmp_path}/none", f"runs_dir={tmp_path}"
        )
    assert missing.value.code == 2
    err = capfd.readouterr().err
    assert "abaw prepare" in err and "Traceback" not in err


def test_compiled_backbone_keeps_checkpoint_keys():
    from abaw_lightning.stages import CnnStudent

    settings = {"model": {"arch": "resnet18"}, "optimizer": {"lr": 1e-4, "betas": [0.5, 0.999]}}
    plain = CnnStudent(**settings)
    compiled = CnnStudent(**settings, compile_backbone=True)
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert compiled.hparams.compile_backbone is True


def test_a_sweep_whose_jobs_cannot_run_stops_before_the_first(tmp_path, monkeypatch, capfd):
    with pytest.raises(SystemExit) as exit_:
        train_in_process(
            monkeypatch,
            "-m",
            "experiment=demo",
            "seed=0,1",
            f"data.root={tmp_path}/none",
            f"runs_dir={tmp_path}",
        )
    assert exit_.value.code == 2
    err = capfd.readouterr().err
    expected = (
        f"error: prepared data folder {tmp_path}/none does not exist: run `abaw prepare ... "
        f"--out {tmp_path}/none` first (or set data.root to it)."
    )
    assert [line for line in err.splitlines() if line.startswith("error:")] == [expected]
    assert "Traceback" not in err and len(err.splitlines()) <= 3, err
    assert not (tmp_path / "multirun").exists()  # no job was launched


def test_multirun_user_error_fails_its_job_and_the_others_still_run(
    prepared, tmp_path, monkeypatch, capfd
):
    with pytest.raises(SystemExit) as exit_:  # Hydra runs both jobs, then exits non-zero
        train_in_process(
            monkeypatch,
            "-m",
            "experiment=demo",
            "stage=cnn_student",  # no teacher: each job refuses at its start, not at the plan
            "seed=0,1",
            f"data.root={prepared}",
            f"runs_dir={tmp_path}",
        )
    assert exit_.value.code != 0
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 3  # each job's line, then Hydra's summary of the first failure
    assert all("builds on cnn_teacher, not complete for seed" in line for line in errors)
    assert {"seed 0" in errors[0], "seed 1" in errors[1]} == {True}
    assert "Traceback" not in err and len(err.splitlines()) <= 10, err
