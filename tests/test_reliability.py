"""Faults a run must survive (issue: reliability): kills at any moment resume to exactly the
uninterrupted run, a full disk keeps the previous checkpoint, unreadable and planted checkpoints
are passed over without running anything, one writer per run, SIGTERM, and a killed sweep through
submitit's local launcher."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from support import TINY, SimulatedKill, kill_at, store_runs, tiny_config, view_run

from abaw_lightning import pipeline
from abaw_lightning.errors import UserError
from abaw_lightning.store.lock import lock_holder, run_lock
from abaw_lightning.store.plan import make_plan
from abaw_lightning.training import checkpoint_io
from abaw_lightning.training.checkpoint_io import AtomicCheckpointIO, remove_temporary_files

ENV = {**os.environ, "WANDB_MODE": "offline", "NO_ALBUMENTATIONS_UPDATE": "1"}
STAGE = [
    "logger=none",
    "stage=cnn_teacher",
    "stages.cnn_teacher.max_epochs=3",
    "checkpoint_every_n_steps=2",
]
"""3 epochs of 6 steps, a periodic checkpoint every 2 steps."""
NO_KILL = "key_ignores=[callbacks.kill,callbacks.record]"


@pytest.fixture(scope="module")
def uninterrupted(prepared, tmp_path_factory) -> tuple[dict, Path]:
    """The stage trained in one go: what every interrupted run must end up equal to."""
    runs = tmp_path_factory.mktemp("uninterrupted")
    result = pipeline.run_pipeline(tiny_config(prepared, runs, *STAGE))["cnn_teacher"]
    return result, view_run(runs, "demo", 0, "cnn_teacher")


def assert_same_run(result: dict, run: Path, reference: tuple[dict, Path]) -> None:
    """metrics.json (history, steps, best epoch) and the best checkpoint's weights are equal."""
    expected, expected_run = reference
    assert result["history"] == expected["history"]
    assert (result["global_step"], result["epochs"]) == (
        expected["global_step"],
        expected["epochs"],
    )
    assert result["best"] == expected["best"]
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    wanted = torch.load(expected_run / "checkpoints" / "best.ckpt", weights_only=True)
    for key, value in wanted["state_dict"].items():
        assert torch.equal(best[key], value), key


PHASES = ("batch", "in_save", "validation", "in_validation")
"""Kill moments at one step, in the order a fit reaches them."""


def moments(seed: int) -> list[tuple[int, str]]:
    """Eight kill moments, two per phase, at seeded-random steps, in the order a run reaches
    them: after a step, half-way through a periodic checkpoint write, before an epoch's
    validation (the end-of-epoch window), and during a validation."""
    rng = np.random.default_rng(seed)
    steps = {
        "batch": range(1, 18),
        "in_save": (2, 4, 8, 10, 14, 16),  # the periodic saves (not on an epoch's last batch)
        "validation": (6, 12, 18),
        "in_validation": (6, 12, 18),
    }
    chosen = [(int(step), phase) for phase in PHASES for step in rng.choice(steps[phase], 2, False)]
    return sorted(chosen, key=lambda moment: (moment[0], PHASES.index(moment[1])))


@pytest.mark.slow
def test_kills_at_eight_random_moments_end_as_the_uninterrupted_run(
    prepared, tmp_path, uninterrupted
):
    killed = []
    for step, phase in moments(seed=2026):
        try:
            pipeline.run_pipeline(tiny_config(prepared, tmp_path, *STAGE, *kill_at(step, phase)))
        except SimulatedKill:
            killed.append((step, phase))
    assert killed == moments(seed=2026)  # each moment was reached after the resume before it
    result = pipeline.run_pipeline(tiny_config(prepared, tmp_path, *STAGE, NO_KILL))["cnn_teacher"]
    run = view_run(tmp_path, "demo", 0, "cnn_teacher")
    assert_same_run(result, run, uninterrupted)
    assert not list(run.rglob("*.tmp"))  # no orphaned temporary file


@pytest.mark.slow
def test_a_full_disk_keeps_the_previous_checkpoint(prepared, tmp_path, monkeypatch):
    saves = {"count": 0}
    real_save = torch.save

    def save(obj, file):
        saves["count"] += 1
        if saves["count"] == 5:  # last.ckpt at step 8 (after 2, 4, best and last at 6)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, file)

    monkeypatch.setattr(checkpoint_io.torch, "save", save)
    with pytest.raises(UserError, match=r"No space left on device.*last\.ckpt there is still"):
        pipeline.run_pipeline(tiny_config(prepared, tmp_path, *STAGE))
    (run,) = store_runs(tmp_path, "cnn_teacher", complete=False)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 6  # the write at step 6 is kept, the one at step 8 failed
    assert not list(run.rglob("*.tmp"))
    monkeypatch.setattr(checkpoint_io.torch, "save", real_save)
    result = pipeline.run_pipeline(tiny_config(prepared, tmp_path, *STAGE))["cnn_teacher"]
    assert result["global_step"] == 18


def test_orphaned_temporary_files_are_removed(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {}, "global_step": 1}, tmp_path / "last.ckpt")
    orphan = tmp_path / ".last.ckpt.12345.tmp"  # a writer killed mid-write leaves this
    orphan.write_bytes(b"half a checkpoint")
    assert remove_temporary_files(tmp_path) == [orphan]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.slow
def test_an_unreadable_last_checkpoint_is_named_and_the_best_one_resumes(
    prepared, tmp_path, capsys
):
    with pytest.raises(SimulatedKill):
        pipeline.run_pipeline(tiny_config(prepared, tmp_path, *STAGE, *kill_at(9, "batch")))
    (run,) = store_runs(tmp_path, "cnn_teacher", complete=False)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # cut off, as a full disk under Lightning left it
    capsys.readouterr()
    result = pipeline.run_pipeline(tiny_config(prepared, tmp_path, *STAGE, NO_KILL))
    out = capsys.readouterr().out
    assert f"warning: {last} does not load" in out
    assert f"resuming from {run / 'checkpoints' / 'best.ckpt'}" in out
    assert [e["epoch"] for e in result["cnn_teacher"]["history"]] == [0, 1, 2]


class Payload:
    """A pickle that runs code when loaded without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_checkpoint_runs_nothing_even_with_weights_only_forced_off(
    prepared, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    cfg = tiny_config(prepared, tmp_path, *STAGE)
    run = make_plan(cfg).runs["cnn_teacher"].dir
    marker = tmp_path / "code-ran"
    run.checkpoints.mkdir(parents=True)
    with open(run.last, "wb") as file:
        pickle.dump({"state_dict": {}, "global_step": Payload(marker)}, file)
    torch.save({"state_dict": Payload(marker)}, run.checkpoints / "best.ckpt")
    result = pipeline.run_pipeline(cfg)["cnn_teacher"]
    assert not marker.exists()  # neither our resume check nor Lightning's load ran the payload
    out = capsys.readouterr().out
    assert "does not load" in out and "starts again from scratch" in out
    assert result["global_step"] == 18


HOLDER = """
import sys, time
from pathlib import Path
from abaw_lightning.store.lock import run_lock
with run_lock(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock(folder: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_a_second_writer_waits_for_the_first_and_names_it(prepared, tmp_path, capsys):
    cfg = tiny_config(prepared, tmp_path, *STAGE, "stages.cnn_teacher.max_epochs=1")
    run = make_plan(cfg).runs["cnn_teacher"].dir
    holder = hold_lock(run.root, 3)
    started = time.monotonic()
    pipeline.run_pipeline(cfg)
    assert time.monotonic() - started >= 2  # it waited for the other writer
    holder.wait()
    out = capsys.readouterr().out
    assert f"waiting for process {holder.pid} on " in out
    assert run.complete


def test_a_lock_left_by_a_killed_process_never_blocks(prepared, tmp_path, capsys):
    cfg = tiny_config(prepared, tmp_path, *STAGE, "stages.cnn_teacher.max_epochs=1")
    run = make_plan(cfg).runs["cnn_teacher"].dir
    holder = hold_lock(run.root, 600)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (run.root / ".lock").is_file()  # the file stays; the OS released the lock
    pipeline.run_pipeline(cfg)
    assert "waiting" not in capsys.readouterr().out and run.complete
    with run_lock(run.root):  # and it can be taken again at once
        pass


DISCARDER = """
import sys, time
from pathlib import Path
from abaw_lightning.store.lock import discard_unstarted, run_lock
folder = Path(sys.argv[1])
with run_lock(folder):
    print("holding", flush=True)
    time.sleep(1.5)
    discard_unstarted(folder, lambda: False)  # its job failed before the run started
"""


def test_a_waiter_on_a_run_its_holder_discarded_locks_the_folder_afresh(tmp_path):
    folder = tmp_path / "store" / "cnn_teacher" / "abc"
    holder = subprocess.Popen(
        [sys.executable, "-c", DISCARDER, str(folder)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    assert holder.stdout.readline().strip() == "holding"
    assert lock_holder(folder).startswith(f"process {holder.pid} on ")
    waited = []
    with run_lock(folder, waited.append):
        assert waited  # it waited for the holder, which removed the folder meanwhile
        assert (folder / ".lock").is_file()  # the waiter holds the lock of the folder made again
        assert lock_holder(folder).startswith(f"process {os.getpid()} on ")
    holder.wait()
    assert lock_holder(folder) is None


@pytest.mark.slow
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_once_or_twice_saves_says_how_to_resume_and_exits_130(
    prepared, tmp_path, uninterrupted, capsys, presses
):
    ctrl_c = ["+callbacks.kill._target_=support.CtrlC", "+callbacks.kill.step=5", NO_KILL]
    cfg = tiny_config(prepared, tmp_path, *STAGE, *ctrl_c, f"+callbacks.kill.times={presses}")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with pytest.raises(SystemExit) as stop:
            pipeline.run_pipeline(cfg)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stop.value.code == 128 + signal.SIGINT
    out = " ".join(capsys.readouterr().out.split())
    assert "stopped by SIGINT" in out and "run the same command again to resume it" in out
    (run,) = store_runs(tmp_path, "cnn_teacher", complete=False)
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert saved == 5  # the first press stops at the step's end, a second one at once
    result = pipeline.run_pipeline(tiny_config(prepared, tmp_path, *STAGE, NO_KILL))["cnn_teacher"]
    assert_same_run(result, run, uninterrupted)


@pytest.mark.slow
def test_sigterm_saves_says_how_to_resume_and_exits_non_zero(prepared, tmp_path, uninterrupted):
    arguments = [
        "experiment=demo",
        f"data.root={prepared}",
        f"runs_dir={tmp_path}",
        *TINY,
        *STAGE,
    ]
    command = [sys.executable, "-m", "abaw_lightning.train", *arguments]
    process = subprocess.Popen(
        command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("store/cnn_teacher/*/checkpoints/last.ckpt")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 128 + signal.SIGTERM, output[-2000:]
    assert "stopped by SIGTERM" in output and "run the same command again to resume" in output
    (run,) = store_runs(tmp_path, "cnn_teacher", complete=False)
    stopped_at = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < stopped_at < 18
    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert "resuming from" in rerun.stdout
    result = json.loads((run / "metrics.json").read_text())
    assert_same_run(result, run, uninterrupted)


@pytest.mark.slow
def test_a_killed_sweep_through_submitit_finishes_equal_to_uninterrupted_runs(
    prepared, tmp_path, uninterrupted
):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    runs = tmp_path / "runs"
    command = [
        sys.executable,
        "-m",
        "abaw_lightning.train",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "experiment=demo",
        f"data.root={prepared}",
        f"runs_dir={runs}",
        *TINY,
        *STAGE,
        "seed=0,1",
    ]
    sweep = subprocess.Popen(
        command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not list(runs.glob("store/cnn_teacher/*/checkpoints/last.ckpt")):
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.stderr.read()[-3000:]
        time.sleep(0.05)
    os.killpg(sweep.pid, signal.SIGKILL)  # the launcher and the job it runs
    sweep.wait()
    assert not list(runs.glob("store/cnn_teacher/*/metrics.json"))
    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    seed_0 = view_run(runs, "demo+" + _suffix(runs), 0, "cnn_teacher")
    result = json.loads((seed_0 / "metrics.json").read_text())
    assert_same_run(result, seed_0, uninterrupted)
    seed_1 = view_run(runs, "demo+" + _suffix(runs), 1, "cnn_teacher")
    assert json.loads((seed_1 / "metrics.json").read_text())["global_step"] == 18


def _suffix(runs: Path) -> str:
    """The sweep's view name after ``demo+`` (its overrides name it)."""
    (view,) = [p.name for p in runs.glob("demo+*") if p.is_dir()]
    return view.removeprefix("demo+")
