"""The stage store (issue: experiments on a stage store): run identity, sweeps with no renaming,
shared stages trained once, the paper's table in one command, plans, views, disk use."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from prepared_data import write_prepared
from support import (
    GRU_TINY,
    RECORD,
    TINY,
    FitRecorder,
    SimulatedKill,
    kill_at,
    store_runs,
    tiny_config,
    train_in_process,
    view_run,
)

from abaw_lightning import cli, pipeline, report
from abaw_lightning.errors import UserError
from abaw_lightning.store.lock import run_lock
from abaw_lightning.store.plan import estimates, make_plan
from abaw_lightning.store.views import view_name

QUICK = [
    "+trainer.limit_train_batches=2",
    "stages.cnn_teacher.max_epochs=1",
    "stages.cnn_student.max_epochs=1",
]


def keys(cfg) -> dict[str, str]:
    return {name: run.key for name, run in make_plan(cfg).runs.items()}


def test_keys_follow_what_decides_the_result_and_nothing_else(prepared, tmp_path):
    base = keys(tiny_config(prepared, tmp_path, "pipeline=[cnn_teacher,cnn_student]"))
    same = keys(
        tiny_config(
            prepared,
            tmp_path / "elsewhere",
            "pipeline=[cnn_teacher,cnn_student]",
            "data.num_workers=3",
            "data.val_batch_size=5",
            "logger=csv",
            "channels_last=false",
            "checkpoint_every_n_steps=7",
            "trainer.log_every_n_steps=9",
            "experiment_name=renamed",
        )
    )
    assert same == base  # workers, logger, paths, names, checkpoint interval: one run
    copy = shutil.copytree(prepared, tmp_path / "copy")  # the data by content, not by path
    assert keys(tiny_config(copy, tmp_path, "pipeline=[cnn_teacher,cnn_student]")) == base
    lam = keys(
        tiny_config(
            prepared,
            tmp_path,
            "pipeline=[cnn_teacher,cnn_student]",
            "stages.cnn_student.module.distillation.lam=0.3",
        )
    )
    assert lam["cnn_teacher"] == base["cnn_teacher"] and lam["cnn_student"] != base["cnn_student"]
    teacher_lr = keys(
        tiny_config(
            prepared,
            tmp_path,
            "pipeline=[cnn_teacher,cnn_student]",
            "stages.cnn_teacher.module.optimizer.lr=0.01",
        )
    )
    assert all(teacher_lr[name] != base[name] for name in base)  # the student builds on it
    for override in ("seed=1", "trainer.precision=bf16-mixed", "stages.cnn_teacher.patience=1"):
        changed = keys(tiny_config(prepared, tmp_path, "pipeline=[cnn_teacher]", override))
        assert changed["cnn_teacher"] != base["cnn_teacher"], override
    # devices x batch size is the effective batch: 2 processes of 3 equal 1 of 6
    ddp = keys(
        tiny_config(
            prepared,
            tmp_path,
            "pipeline=[cnn_teacher]",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.precision=32-true",
            "data.batch_size=3",
        )
    )
    single = keys(
        tiny_config(prepared, tmp_path, "pipeline=[cnn_teacher]", "+trainer.benchmark=true")
    )
    assert ddp["cnn_teacher"] == single["cnn_teacher"] == base["cnn_teacher"]
    tables = (prepared / "parts" / "expr.parquet").read_bytes()
    try:  # the same folder with other content is other data
        shutil.copy(prepared / "parts" / "va.parquet", prepared / "parts" / "expr.parquet")
        assert keys(tiny_config(prepared, tmp_path, "pipeline=[cnn_teacher]")) != single
    finally:
        (prepared / "parts" / "expr.parquet").write_bytes(tables)


def test_view_names_keep_only_result_changing_overrides():
    overrides = [
        "experiment=paper_student_sharing",
        "stages.cnn_student.module.distillation.lam=0.3",
        "seed=4",
        "data.root=/data/prepared",
        "data.num_workers=4",
        "logger=csv",
        "hydra/launcher=slurm",
        "stages.cnn_student.datamodule.num_workers=2",
    ]
    assert view_name("paper_student_sharing", overrides) == "paper_student_sharing+lam=0.3"
    both = [
        "stages.cnn_teacher.module.optimizer.lr=1e-3",
        "stages.cnn_student.module.optimizer.lr=1e-2",
    ]
    assert view_name("x", both) == "x+cnn_teacher.lr=1e-3+cnn_student.lr=1e-2"
    assert view_name("x", ["stages.gru_student.max_epochs=2", "data.parts=[expr,va]"]) == (
        "x+gru_student.max_epochs=2+parts=[expr,va]"
    )
    assert view_name("x", [f"data.parts=[{'a' * 200}]"]).startswith("x+")
    assert len(view_name("x", [f"data.parts=[{'a' * 200}]"])) < 20
    many = [f"stages.cnn_teacher.module.optimizer.weight_decay{i}=0.00{i}" for i in range(9)]
    first, second = view_name("x", [*many, "lam=0.3"]), view_name("x", [*many, "lam=0.9"])
    assert first.startswith("x+weight_decay0=0.000+weight_decay1=0.001+")  # readable prefix
    assert first != second and len(first) <= 100 and len(second) <= 100  # told apart by a digest
    swept = frozenset({"lam"})
    assert view_name("x", [*many, "lam=0.3"], swept).startswith("x+lam=0.3+weight_decay0=0.000+")


@pytest.mark.slow
def test_lam_sweep_trains_each_teacher_once_and_reports_two_variants(
    prepared, tmp_path, monkeypatch
):
    FitRecorder.clear()
    train_in_process(
        monkeypatch,
        "-m",
        "experiment=demo",
        f"data.root={prepared}",
        f"runs_dir={tmp_path}",
        "pipeline=[cnn_teacher,cnn_student]",
        "logger=none",
        *TINY,
        *QUICK,
        *RECORD,
        "stages.cnn_student.module.distillation.lam=0.3,0.9",
        "seed=0,1",
    )
    folders = [Path(folder).name for folder in FitRecorder.folders]
    assert len(folders) == 6 and len(set(folders)) == 6  # 2 teachers + 4 students, each once
    assert len(store_runs(tmp_path, "cnn_teacher")) == 2
    students = store_runs(tmp_path, "cnn_student")
    assert len(students) == 4
    totals = {json.loads((s / "metrics.json").read_text())["best"]["val/total"] for s in students}
    assert len(totals) == 4  # four distinct results, none read from another setting's run
    table = report.summary(report.load_runs(tmp_path)).set_index("row")
    assert table.loc["demo/cnn_teacher", "n"] == 2
    assert table.loc["demo/cnn_student[lam=0.3]", "n"] == 2
    assert table.loc["demo/cnn_student[lam=0.9]", "n"] == 2
    assert len(table) == 3


@pytest.mark.slow
def test_paper_in_one_command_plans_six_distinct_runs_then_reuses_them(
    tmp_path, monkeypatch, capsys
):
    prepared = write_prepared(tmp_path / "prepared", rows=96, videos=3)
    arguments = [
        "experiment=paper",
        f"data.root={prepared}",
        f"runs_dir={tmp_path / 'runs'}",
        "logger=none",
        *TINY,
        *GRU_TINY,
        "stages.cnn_teacher_2task.max_epochs=1",
        "stages.cnn_student_no_sharing.max_epochs=1",
    ]
    assert cli.main(["plan", *arguments]) == 0
    plan = capsys.readouterr().out
    assert "1 job, 6 stages, 6 distinct runs: 6 to train, 0 to resume, 0 to reuse" in plan
    FitRecorder.clear()
    train_in_process(monkeypatch, *arguments, *RECORD)
    assert len(FitRecorder.starts) == 6
    kinds = {
        kind: len(store_runs(tmp_path / "runs", kind))
        for kind in ("cnn_teacher", "cnn_student", "gru_teacher", "gru_student")
    }
    assert kinds == {"cnn_teacher": 2, "cnn_student": 2, "gru_teacher": 1, "gru_student": 1}
    FitRecorder.clear()
    capsys.readouterr()
    train_in_process(monkeypatch, *arguments, *RECORD)
    assert FitRecorder.starts == []  # a second invocation trains nothing
    assert "6 runs: 0 to train, 0 to resume, 6 to reuse" in capsys.readouterr().out
    # the single-row experiments are the same runs: nothing to train for the GRU student row
    row = [a for a in arguments if "2task" not in a and "no_sharing" not in a]
    row[0] = "experiment=paper_gru_student"
    train_in_process(monkeypatch, *row, *RECORD)
    assert FitRecorder.starts == []
    table = report.summary(report.load_runs(tmp_path / "runs")).set_index("row")
    assert table.loc["paper/cnn_teacher_2task", "paper_row"] is None  # synthetic data: no figures
    assert list(table.loc[[r for r in table.index if r.startswith("paper/")], "n"]) == [1] * 6


def test_two_experiments_share_their_teacher(prepared, tmp_path):
    FitRecorder.clear()
    for experiment in ("paper_student_sharing", "paper_student_no_sharing"):
        cfg = tiny_config(prepared, tmp_path, "logger=none", *QUICK, *RECORD, experiment=experiment)
        pipeline.run_pipeline(cfg)
    teachers = [f for f in FitRecorder.folders if "/cnn_teacher/" in f]
    assert len(teachers) == 1  # trained once, reused by the second experiment
    assert len(store_runs(tmp_path, "cnn_student")) == 2
    shared = view_run(tmp_path, "paper_student_sharing", 0, "cnn_teacher")
    assert view_run(tmp_path, "paper_student_no_sharing", 0, "cnn_teacher") == shared


@pytest.mark.slow
def test_a_killed_run_stays_resumable_under_its_own_settings_only(prepared, tmp_path):
    stage = ["logger=none", "stage=cnn_teacher", "checkpoint_every_n_steps=2"]
    stage += ["stages.cnn_teacher.max_epochs=3", "key_ignores=[callbacks.kill,callbacks.record]"]
    with pytest.raises(SimulatedKill):  # as kill -9 after step 5: last.ckpt holds step 4
        pipeline.run_pipeline(tiny_config(prepared, tmp_path, *stage, *kill_at(5, "batch")))
    (killed,) = store_runs(tmp_path, "cnn_teacher", complete=False)
    saved = (killed / "checkpoints" / "last.ckpt").read_bytes()
    FitRecorder.clear()
    changed = [*stage, "stages.cnn_teacher.module.optimizer.lr=0.01", *RECORD]
    pipeline.run_pipeline(tiny_config(prepared, tmp_path, *changed))
    assert FitRecorder.starts == [(0, 0)]  # a new run, from scratch
    assert Path(FitRecorder.folders[0]).name != killed.name
    assert (killed / "checkpoints" / "last.ckpt").read_bytes() == saved  # the old one is kept
    assert not (killed / "metrics.json").exists()
    FitRecorder.clear()
    pipeline.run_pipeline(tiny_config(prepared, tmp_path, *stage, *RECORD))  # its own settings
    assert FitRecorder.folders == [str(killed)]
    assert FitRecorder.starts == [(0, 4)]  # resumed where the kill left it
    assert json.loads((killed / "metrics.json").read_text())["global_step"] == 18


def test_dry_run_prints_the_plan_and_trains_nothing(prepared, tmp_path, capsys):
    cfg = tiny_config(
        prepared, tmp_path, "logger=none", "dry_run=true", "pipeline=[cnn_teacher,cnn_student]"
    )
    assert pipeline.run_pipeline(cfg) == {}
    out = capsys.readouterr().out
    assert "plan demo seed 0: 2 runs: 2 to train, 0 to resume, 0 to reuse" in out
    assert not (tmp_path / "demo").exists()  # no view: a dry run writes nothing
    assert not (tmp_path / "store").exists()


def test_dry_run_on_a_machine_without_the_trainers_device_warns_and_plans(
    prepared, tmp_path, capsys
):
    cfg = tiny_config(prepared, tmp_path, "logger=none", "dry_run=true", "trainer=gpu")
    assert pipeline.run_pipeline(cfg) == {}
    out = " ".join(capsys.readouterr().out.split())
    assert "on this machine the job would stop here" in out
    assert "plan demo seed 0" in out


def test_a_job_that_fails_before_training_leaves_no_view_and_no_run(prepared, tmp_path):
    cfg = tiny_config(
        prepared,
        tmp_path,
        "logger=none",
        "stage=cnn_teacher",
        "model.weights=file",
        f"model.weights_path={tmp_path / 'missing.pt'}",
    )
    with pytest.raises(UserError, match=r"missing\.pt"):
        pipeline.run_pipeline(cfg)
    assert not list(tmp_path.glob("demo*"))
    assert not list(tmp_path.glob("store/*/*"))


def test_a_stage_whose_upstream_is_missing_names_every_run_to_do_first(prepared, tmp_path):
    cfg = tiny_config(prepared, tmp_path, "logger=none", "stage=gru_teacher")
    with pytest.raises(UserError) as error:
        pipeline.run_pipeline(cfg)
    message = str(error.value)
    assert "builds on cnn_teacher, cnn_student, not complete for seed 0" in message
    assert "pipeline=[cnn_teacher,cnn_student] in place of stage=gru_teacher" in message
    assert not list(tmp_path.glob("demo*")) and not (tmp_path / "store").exists()


def test_plan_estimates_from_finished_runs_and_copied_runs_folders_work(prepared, tmp_path, capsys):
    runs = tmp_path / "runs"
    pipeline.run_pipeline(tiny_config(prepared, runs, "logger=none", "stage=cnn_teacher", *QUICK))
    copied = shutil.copytree(runs, tmp_path / "copied", symlinks=True)
    capsys.readouterr()
    assert (
        cli.main(
            [
                "plan",
                "experiment=demo",
                f"data.root={prepared}",
                f"runs_dir={copied}",
                *TINY,
                *QUICK,
                "pipeline=[cnn_teacher,cnn_student]",
                "seed=0,1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "2 jobs, 4 stages, 4 distinct runs: 3 to train, 0 to resume, 1 to reuse" in out
    assert "about" in out  # the finished teacher's wall time estimates the other teacher
    pipeline.run_pipeline(tiny_config(prepared, copied, "logger=none", "stage=cnn_student", *QUICK))
    student = view_run(copied, "demo", 0, "cnn_student")
    identity = json.loads((student / "identity.json").read_text())
    assert (copied / "store" / "cnn_teacher" / identity["builds_on"]["teacher"]["key"]).is_dir()
    assert not list(runs.glob("store/cnn_student/*"))  # the original folder was never written


@pytest.mark.slow
def test_disk_use_and_dropping_finished_feature_caches(tmp_path, capsys):
    prepared = write_prepared(tmp_path / "prepared", rows=96, videos=3)
    runs = tmp_path / "runs"
    cfg = tiny_config(
        prepared, runs, "logger=none", "pipeline=[cnn_teacher,cnn_student,gru_teacher]", *GRU_TINY
    )
    pipeline.run_pipeline(cfg)
    student = view_run(runs, "demo", 0, "cnn_student")
    assert list((student / "features").glob("*/features.npy"))
    assert cli.main(["runs", "du", str(runs)]) == 0
    du = capsys.readouterr().out
    assert "cnn_student" in du and "gru_teacher" in du and "all" in du
    assert cli.main(["runs", "drop-features", str(runs), "--dry-run"]) == 0
    assert "would drop" in capsys.readouterr().out and (student / "features").is_dir()
    assert cli.main(["runs", "drop-features", str(runs)]) == 0
    assert not (student / "features").exists()
    FitRecorder.clear()  # a new GRU run extracts the cache again
    again = tiny_config(
        prepared,
        runs,
        "logger=none",
        "stage=gru_teacher",
        *GRU_TINY,
        "stages.gru_teacher.max_epochs=1",
        *RECORD,
    )
    pipeline.run_pipeline(again)
    assert len(FitRecorder.starts) == 1
    assert list((student / "features").glob("*/features.npy"))


def test_estimates_come_from_the_variants_own_runs_or_its_own_pace(prepared, tmp_path):
    """A new run: the median wall time of its variant's finished seeds; a resumed one: its own
    seconds per epoch for the epochs those took (max_epochs when none has); nothing else."""
    cfg = tiny_config(prepared, tmp_path, "stage=cnn_teacher", "stages.cnn_teacher.max_epochs=10")
    planned = make_plan(cfg).runs["cnn_teacher"]
    for seed, (seconds, epochs) in enumerate([(30.0, 4), (50.0, 6), (70.0, 8)], start=1):
        other = tmp_path / "store" / "cnn_teacher" / f"seed{seed}"
        other.mkdir(parents=True)
        (other / "identity.json").write_text(json.dumps({"variant": planned.variant}))
        metrics = {"best": {}, "wall_seconds": seconds, "epochs": epochs}
        (other / "metrics.json").write_text(json.dumps(metrics))
    unrelated = tmp_path / "store" / "cnn_teacher" / "other"
    unrelated.mkdir()
    (unrelated / "identity.json").write_text(json.dumps({"variant": "another"}))
    (unrelated / "metrics.json").write_text(json.dumps({"wall_seconds": 1.0, "epochs": 1}))
    assert estimates(tmp_path, [planned]) == {planned.key: 50.0}

    planned.dir.checkpoints.mkdir(parents=True)
    planned.dir.last.write_bytes(b"interrupted")
    (planned.dir.root / "progress.json").write_text(json.dumps({"epoch": 1, "wall_seconds": 20.0}))
    assert planned.action == "resume"
    assert estimates(tmp_path, [planned]) == {planned.key: 10.0 * (6 - 2)}
    for other in (tmp_path / "store" / "cnn_teacher").glob("seed*"):
        shutil.rmtree(other)
    assert estimates(tmp_path, [planned]) == {planned.key: 10.0 * (10 - 2)}
    shutil.rmtree(unrelated)
    (planned.dir.root / "progress.json").unlink()
    assert estimates(tmp_path, [planned]) == {}


def test_a_verbose_plan_names_each_sweep_point_and_what_else_each_run_does(
    prepared, tmp_path, capsys
):
    runs = tmp_path / "runs"
    sweep = [
        "experiment=demo",
        f"data.root={prepared}",
        f"runs_dir={runs}",
        *TINY,
        "stages.cnn_student.module.distillation.lam=0.3,0.9",  # last: a long name shows it first
    ]
    teacher = make_plan(tiny_config(prepared, runs)).runs["cnn_teacher"].dir
    with run_lock(teacher.root):  # as a sweep training the teacher elsewhere holds it
        assert cli.main(["plan", "-v", *sweep]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert re.search(r"plan demo\+lam=0\.3\+image_size=32\S+ seed 0: 4 runs: 4 to train", out)
    assert re.search(r"plan demo\+lam=0\.9\+image_size=32\S+ seed 0: 4 runs: 4 to train", out)
    assert f"being trained now by process {os.getpid()} on " in out
    assert "gru_teacher store/gru_teacher/" in out
    assert out.count("extracts cnn_student's features first") == 2  # per job: GRU teacher only
    assert "2 jobs, 8 stages, 7 distinct runs" in out  # one teacher for both values of lam
    assert not runs.exists() or not list(runs.glob("demo*"))  # planning writes no view


def test_prune_deletes_unfinished_runs_no_process_trains_and_their_views(
    prepared, tmp_path, capsys
):
    runs = tmp_path / "runs"
    stage = ["logger=none", "stage=cnn_teacher", *QUICK]
    pipeline.run_pipeline(tiny_config(prepared, runs, *stage))
    unfinished = {}
    for lr in ("1e-2", "1e-4"):
        setting = f"stages.cnn_teacher.module.optimizer.lr={lr}"
        cfg = tiny_config(prepared, runs, *stage, setting, *kill_at(1, "batch"))
        with pytest.raises(SimulatedKill):
            pipeline.run_pipeline(cfg)
        unfinished[lr] = make_plan(cfg).runs["cnn_teacher"].dir
    # the view a sweep over lr would have given the first (in process, every job's view is demo)
    view = runs / "demo+lr=1e-2" / "seed_0"
    pipeline.write_view(view, "demo", 0, [], {"cnn_teacher": (unfinished["1e-2"], "v")})
    (complete,) = store_runs(runs, "cnn_teacher")
    with run_lock(unfinished["1e-4"].root):  # a process resuming that one now
        assert cli.main(["runs", "prune", str(runs), "--dry-run"]) == 0
        dry = " ".join(capsys.readouterr().out.split())
        assert (
            f"would delete {unfinished['1e-2'].root} (started, no checkpoint, no epoch validated"
            in dry
        )
        assert f"kept {unfinished['1e-4'].root}: being trained now by process {os.getpid()}" in dry
        assert str(complete) not in dry
        assert f"would delete the view {runs / 'demo+lr=1e-2' / 'seed_0'}" in dry
        assert unfinished["1e-2"].root.is_dir()  # a dry run deletes nothing
        assert cli.main(["runs", "prune", str(runs)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"deleted {unfinished['1e-2'].root}" in out
    assert not unfinished["1e-2"].root.exists() and not (runs / "demo+lr=1e-2").exists()
    assert unfinished["1e-4"].identity.is_file() and (runs / "demo" / "seed_0").is_dir()
    assert (complete / "metrics.json").is_file()
