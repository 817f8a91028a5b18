"""Multiruns through the real `abaw-train -m` entry point on a tiny CPU config: per-seed folders,
sweeps over experiments, W&B runs finished job by job, an interrupted sweep rerun, predictions
that reproduce metrics.json, 2-process DDP, and the SLURM launcher config."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from support import TINY

from abaw_lightning.configs import CONFIG_DIR
from abaw_lightning.metrics import ccc, expr_score
from abaw_lightning.report import load_runs, summary

pytestmark = pytest.mark.slow  # every test here starts abaw-train processes

SWEEP = [
    *TINY,
    "data.val_batch_size=16",
    "pipeline=[cnn_teacher]",
    "stages.cnn_teacher.max_epochs=1",
    "+trainer.limit_train_batches=2",
]
"""One step-limited CNN teacher per job."""
ENV = {**os.environ, "WANDB_MODE": "offline", "NO_ALBUMENTATIONS_UPDATE": "1"}
METRICS = ("expr_score", "expr_f1", "expr_acc", "ccc_v", "ccc_a", "total")


def train_command(prepared: Path, runs: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "abaw_lightning.train",
        "-m",
        f"data.root={prepared}",
        f"runs_dir={runs}",
        *SWEEP,
        *overrides,
    ]


def run_ok(command: list[str]) -> str:
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def stage_dir(runs: Path, experiment: str, seed: int, stage: str = "cnn_teacher") -> Path:
    """The run an experiment's seed uses for a stage, through its view (named by the sweep's
    overrides, e.g. demo+<hash>, so found by the experiment recorded in view.json)."""
    (view,) = [
        path.parent
        for path in runs.glob(f"{experiment}*/seed_{seed}/view.json")
        if json.loads(path.read_text())["experiment"] == experiment
    ]
    return view / stage


def metrics(runs: Path, experiment: str, seed: int) -> dict:
    return json.loads((stage_dir(runs, experiment, seed) / "metrics.json").read_text())


def recomputed(run: Path) -> dict[str, float]:
    """The ABAW metrics recomputed from val_predictions.parquet."""
    frame = pd.read_parquet(run / "val_predictions.parquet")
    expr = frame[(frame["set"] == "expr") & (frame["expr_true"] >= 0)]
    scores = expr_score(
        torch.tensor(expr["expr_pred"].to_numpy()).long(),
        torch.tensor(expr["expr_true"].to_numpy()).long(),
    )
    va = frame[(frame["set"] == "va") & frame["valence_true"].notna()]
    cccs = {
        name: float(
            ccc(torch.tensor(va[f"{dim}_pred"].values), torch.tensor(va[f"{dim}_true"].values))
        )
        for name, dim in (("ccc_v", "valence"), ("ccc_a", "arousal"))
    }
    return {
        "expr_f1": scores["f1"],
        "expr_acc": scores["acc"],
        "expr_score": scores["score"],
    } | cccs


def wandb_times(run: Path) -> tuple[str, str]:
    """(first, "finishing run") timestamps of the stage's latest W&B run, from its debug.log."""
    run_id = (run / "wandb_id").read_text().strip()
    log = sorted(run.glob(f"wandb/offline-run-*-{run_id}/logs/debug.log"))[-1]
    lines = log.read_text().splitlines()
    finish = [line for line in lines if f"finishing run abaw-lightning/{run_id}" in line]
    assert finish, f"{log} has no finish record"
    return lines[0][:23], finish[0][:23]


def kill_when(process: subprocess.Popen, folder: Path, pattern: str) -> None:
    """SIGKILL ``process`` as soon as a file matching ``pattern`` appears under ``folder``."""
    deadline = time.monotonic() + 300
    while not list(folder.glob(pattern)) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(folder.glob(pattern)), process.stderr.read().decode()[-3000:]


def test_interrupted_sweep_over_experiments_and_seeds_reruns_then_reports(prepared_small, tmp_path):
    runs = tmp_path / "runs"
    experiments = ("demo", "paper_teacher_2task")
    command = train_command(
        prepared_small,
        runs,
        "experiment=demo,paper_teacher_2task",
        "seed=0,1",
        "logger=wandb",
        "trainer=cpu",
        "checkpoint_every_n_steps=1",
    )
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_when(process, runs, "demo*/seed_1/cnn_teacher/checkpoints/last.ckpt")
    finished = stage_dir(runs, "demo", 0) / "metrics.json"
    stamp = finished.stat().st_mtime_ns
    interrupted = load_runs(runs)
    assert interrupted[["seed", "status"]].values.tolist() == [[0, "complete"], [1, "interrupted"]]
    assert summary(interrupted).loc[0, "incomplete"] == ["seed 1: interrupted"]

    output = run_ok(command)
    assert re.search(r"cnn_teacher \(seed 0\) is complete", output)
    assert re.search(r"cnn_teacher\S* \(seed 1\): resuming from", output)
    assert finished.stat().st_mtime_ns == stamp
    (sweep,) = [p for p in runs.glob("multirun/*") if (p / "3_paper_teacher_2task_seed_1").is_dir()]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [
        "0_demo_seed_0",
        "1_demo_seed_1",
        "2_paper_teacher_2task_seed_0",
        "3_paper_teacher_2task_seed_1",
    ]
    order = [stage_dir(runs, e, s) for e in experiments for s in (0, 1)]
    times = [wandb_times(run) for run in order[1:]]  # the jobs that trained now
    for (_, finished_at), (started_at, _) in itertools.pairwise(times):
        assert finished_at <= started_at  # each job finished its W&B run before the next began
    for run in order:
        saved = json.loads((run / "metrics.json").read_text())
        assert saved["epochs"] == 1
        for name, value in recomputed(run).items():
            assert value == pytest.approx(saved["best"][f"val/{name}"], abs=2e-6), (run, name)
    table = summary(load_runs(runs)).set_index("row")
    assert list(table.index) == [f"{e}/cnn_teacher" for e in experiments]
    for experiment in experiments:
        row = table.loc[f"{experiment}/cnn_teacher"]
        assert (row["n"], row["seeds"], row["incomplete"]) == (2, [0, 1], [])
        for name in METRICS:
            values = [metrics(runs, experiment, seed)["best"][f"val/{name}"] for seed in (0, 1)]
            assert row[f"{name}_mean"] == pytest.approx(statistics.mean(values), abs=1e-12)
            assert row[f"{name}_std"] == pytest.approx(statistics.stdev(values), abs=1e-12)


def test_ddp_spawn_two_cpu_processes_train_and_record(prepared_small, tmp_path):
    runs = tmp_path / "runs"
    output = run_ok(
        train_command(
            prepared_small,
            runs,
            "experiment=demo",
            "seed=0",
            "logger=none",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.precision=32-true",
            "trainer.benchmark=false",
        )
    )
    assert "distributed_backend=gloo" in output or "Starting with 2 processes" in output
    assert "LeafSpec" not in output and "sync_dist" not in output  # filters reach the spawned
    run = stage_dir(runs, "demo", 0)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["epochs"] == 1
    assert saved["global_step"] == 2  # limit_train_batches per process
    assert [entry["epoch"] for entry in saved["history"]] == [0]
    for name, value in recomputed(run).items():  # 24 frames split evenly: no padding
        assert value == pytest.approx(saved["best"][f"val/{name}"], abs=2e-6), name


def test_slurm_launcher_config_composes():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "experiment=paper_gru_student", "seed=3"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert (
        launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    )
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (1, 1, 1)
    assert (launcher.array_parallelism, launcher.timeout_min, launcher.max_num_timeout) == (
        10,
        1440,
        3,
    )
    assert launcher.submitit_folder.endswith("/.submitit/%j")
    sweep = OmegaConf.to_container(cfg.hydra.sweep)  # unresolved: hydra.job.num is set per job
    assert sweep["subdir"] == "${hydra.job.num}_${experiment_name}_seed_${seed}"
