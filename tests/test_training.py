"""The CNN stages through the real Hydra configs, shrunk to a tiny CPU run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from prepared_data import write_prepared

from abaw_lightning import pipeline
from abaw_lightning.errors import UserError
from abaw_lightning.stages.base import NonFiniteLossError
from abaw_lightning.train import CONFIG_DIR

TINY = [
    "data.image_size=32",
    "data.batch_size=6",
    "data.val_batch_size=32",
    "data.num_workers=0",
    "model.arch=resnet18",
    "trainer.log_every_n_steps=1",
    "stages.cnn_teacher.max_epochs=2",
    "stages.cnn_student.max_epochs=2",
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("prepared"), rows=36)


def config(prepared: Path, runs: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "experiment=demo",
                f"data.root={prepared}",
                f"runs_dir={runs}",
                *TINY,
                *overrides,
            ],
        )


class StepRecorder(pl.Callback):
    """Records where each fit starts, to see a resumed run continue."""

    starts: ClassVar[list[tuple[int, int]]] = []

    def on_train_start(self, trainer, pl_module):
        StepRecorder.starts.append((trainer.current_epoch, trainer.global_step))


class CrashAtEpoch(pl.Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


@pytest.fixture
def extra_callbacks(monkeypatch):
    """Append callbacks to the ones the pipeline builds."""
    added: list[pl.Callback] = []
    original = pipeline._callbacks

    def patched(*args, **kwargs):
        return original(*args, **kwargs) + added

    monkeypatch.setattr(pipeline, "_callbacks", patched)
    return added


def test_teacher_then_student_train_validate_and_write_artifacts(prepared, tmp_path):
    cfg = config(prepared, tmp_path, "logger=csv", "pipeline=[cnn_teacher,cnn_student]")
    results = pipeline.run_pipeline(cfg)
    assert list(results) == ["cnn_teacher", "cnn_student"]
    for stage, result in results.items():
        root = tmp_path / "demo" / "seed_0" / stage
        assert (root / "config.yaml").is_file()
        assert (root / "checkpoints" / "best.ckpt").is_file()
        assert (root / "checkpoints" / "last.ckpt").is_file()
        saved = json.loads((root / "metrics.json").read_text())
        assert saved == result
        assert saved["epochs"] == 2
        assert [entry["epoch"] for entry in saved["history"]] == [0, 1]
        best = max(saved["history"], key=lambda entry: entry["val/total"])
        assert saved["best"] == best
        expected_total = best["val/expr_score"] + best["val/ccc_v"] + best["val/ccc_a"]
        assert best["val/total"] == pytest.approx(expected_total, abs=1e-6)
        assert 0 <= best["val/expr_f1"] <= 1


def test_student_teacher_is_frozen_eval_and_not_saved(prepared, tmp_path):
    cfg = config(prepared, tmp_path, "logger=none")
    pipeline.run_stage(cfg, "cnn_teacher")
    student_checks = {}

    class Inspect(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            teacher = module.teacher
            student_checks["eval"] = not teacher.training
            student_checks["frozen"] = not any(p.requires_grad for p in teacher.parameters())
            student_checks["no_grad"] = all(p.grad is None for p in teacher.parameters())
            in_optimizer = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
            student_checks["not_optimized"] = not any(
                id(p) in in_optimizer for p in teacher.parameters()
            )

    original = pipeline._callbacks
    pipeline._callbacks = lambda *a, **k: [*original(*a, **k), Inspect()]
    try:
        pipeline.run_stage(cfg, "cnn_student")
    finally:
        pipeline._callbacks = original
    assert student_checks == {
        "eval": True,
        "frozen": True,
        "no_grad": True,
        "not_optimized": True,
    }
    ckpt = torch.load(
        tmp_path / "demo" / "seed_0" / "cnn_student" / "checkpoints" / "best.ckpt",
        weights_only=True,
    )
    assert all(key.startswith(("model.", "val_")) for key in ckpt["state_dict"])
    assert "teacher" not in ckpt["hyper_parameters"]
    assert ckpt["hyper_parameters"]["shared_annotations"] is True
    assert ckpt["hyper_parameters"]["lam"] == 0.6


def test_interrupted_stage_resumes_with_same_step_epoch_and_wandb_run(
    prepared, tmp_path, extra_callbacks
):
    cfg = config(prepared, tmp_path, "logger=wandb", "stages.cnn_teacher.max_epochs=3")
    root = tmp_path / "demo" / "seed_0" / "cnn_teacher"
    extra_callbacks.append(CrashAtEpoch(1))
    with pytest.raises(RuntimeError, match="simulated crash"):
        pipeline.run_stage(cfg, "cnn_teacher")
    assert not (root / "metrics.json").exists()
    assert (root / "checkpoints" / "last.ckpt").is_file()
    run_id = (root / "wandb_id").read_text().strip()
    steps_per_epoch = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)[
        "global_step"
    ]
    assert steps_per_epoch > 0

    extra_callbacks[:] = [StepRecorder()]
    StepRecorder.starts.clear()
    result = pipeline.run_stage(cfg, "cnn_teacher")
    assert StepRecorder.starts == [(1, steps_per_epoch)]
    assert result["global_step"] == 3 * steps_per_epoch
    assert [entry["epoch"] for entry in result["history"]] == [0, 1, 2]
    assert (root / "wandb_id").read_text().strip() == run_id
    offline_runs = list((root / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline_runs) == 2  # the first process and the resumed one, one W&B run id
    assert all(list(run.glob("run-*.wandb")) for run in offline_runs)


def test_finished_stage_is_skipped(prepared, tmp_path, extra_callbacks):
    cfg = config(prepared, tmp_path, "logger=none", "stage=cnn_teacher")
    first = pipeline.run_pipeline(cfg)["cnn_teacher"]
    metrics = tmp_path / "demo" / "seed_0" / "cnn_teacher" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    extra_callbacks.append(CrashAtEpoch(0))  # would fail if the stage trained again
    assert pipeline.run_pipeline(cfg)["cnn_teacher"] == first
    assert metrics.stat().st_mtime_ns == stamp


def test_seed_zero_is_honoured_and_seeds_differ(prepared, tmp_path):
    results = {}
    for seed, runs in ((0, "a"), (0, "b"), (1, "c")):
        cfg = config(prepared, tmp_path / runs, "logger=none", "stage=cnn_teacher", f"seed={seed}")
        assert cfg.seed == seed
        results[runs] = pipeline.run_pipeline(cfg)["cnn_teacher"]["history"]
    assert (tmp_path / "a" / "demo" / "seed_0" / "cnn_teacher" / "metrics.json").is_file()
    assert results["a"] == results["b"]
    assert results["a"] != results["c"]


def test_student_without_teacher_says_what_to_run(prepared, tmp_path):
    cfg = config(prepared, tmp_path, "logger=none", "stage=cnn_student")
    with pytest.raises(UserError, match="stage=cnn_teacher"):
        pipeline.run_pipeline(cfg)


def test_missing_prepared_dataset_says_what_to_run(tmp_path):
    cfg = config(tmp_path / "nowhere", tmp_path, "logger=none")
    with pytest.raises(UserError, match="abaw prepare"):
        pipeline.run_pipeline(cfg)


def test_unknown_stage_is_a_user_error(prepared, tmp_path):
    cfg = config(prepared, tmp_path, "logger=none", "stage=cnn_teachr")
    with pytest.raises(UserError, match="unknown stage 'cnn_teachr'"):
        pipeline.run_pipeline(cfg)


def test_non_finite_loss_stops_with_step_part_and_checkpoint(prepared, tmp_path, extra_callbacks):
    class PoisonVaPart(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 2:
                batch["va"]["va"][0, 0] = float("inf")

    extra_callbacks.append(PoisonVaPart())
    cfg = config(prepared, tmp_path, "logger=none", "stage=cnn_teacher")
    with pytest.raises(NonFiniteLossError, match=r"global step 2 .*part\(s\) \['va'\]"):
        pipeline.run_pipeline(cfg)
    assert (
        tmp_path / "demo" / "seed_0" / "cnn_teacher" / "checkpoints" / "nonfinite.ckpt"
    ).is_file()


def test_cli_reports_config_typo_and_user_errors_without_traceback(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline"}
    train = [sys.executable, "-m", "abaw_lightning.train"]
    typo = subprocess.run(
        [*train, "experiment=demo", "data.rot=x"], capture_output=True, text=True, env=env
    )
    assert typo.returncode != 0
    assert "data.rot" in typo.stderr
    assert "Traceback" not in typo.stderr
    missing = subprocess.run(
        [*train, "experiment=demo", f"data.root={tmp_path}/none", f"runs_dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert missing.returncode == 2
    assert "abaw prepare" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_kill_9_mid_epoch_then_rerun_continues(prepared, tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "NO_ALBUMENTATIONS_UPDATE": "1"}
    command = [
        sys.executable,
        "-m",
        "abaw_lightning.train",
        "experiment=demo",
        f"data.root={prepared}",
        f"runs_dir={tmp_path}",
        "stage=cnn_teacher",
        "logger=none",
        "checkpoint_every_n_steps=2",
        "stages.cnn_teacher.max_epochs=4",
        *[o for o in TINY if "max_epochs" not in o],
    ]
    last = tmp_path / "demo" / "seed_0" / "cnn_teacher" / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert last.is_file(), process.stderr.read().decode()
    saved_step = torch.load(last, weights_only=True)["global_step"]
    assert saved_step >= 2
    rerun = subprocess.run(command, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming from" in rerun.stdout
    metrics = json.loads((last.parent.parent / "metrics.json").read_text())
    assert metrics["epochs"] == 4


def test_compiled_backbone_keeps_checkpoint_keys():
    from abaw_lightning.stages import CnnStudent

    settings = {"arch": "resnet18"}, {"lr": 1e-4, "betas": [0.5, 0.999]}
    plain = CnnStudent(*settings)
    compiled = CnnStudent(*settings, compile_backbone=True)
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert compiled.hparams.compile_backbone is True


def test_multirun_user_error_fails_its_job_and_the_others_still_run(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline"}
    sweep = subprocess.run(
        [
            sys.executable,
            "-m",
            "abaw_lightning.train",
            "-m",
            "experiment=demo",
            "seed=0,1",
            f"data.root={tmp_path}/none",
            f"runs_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert sweep.returncode != 0
    assert sweep.stderr.count("abaw prepare") >= 2  # both jobs ran and said what to do
    assert "cnn_teacher (seed 1): starting" in sweep.stdout  # after seed 0 failed
    expected = (
        f"error: prepared data folder {tmp_path}/none does not exist: run `abaw prepare ... "
        f"--out {tmp_path}/none` first (or set data.root to it)."
    )
    errors = [line for line in sweep.stderr.splitlines() if line.startswith("error:")]
    assert errors == [expected] * 3  # each job's line, then Hydra's summary of the first failure
    assert "Traceback" not in sweep.stderr and len(sweep.stderr.splitlines()) <= 10, sweep.stderr
