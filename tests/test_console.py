"""A quiet console: user errors as one `error:` line (under `-m` too), known library chatter
filtered precisely at its source, and Hydra's job lines without their log prefixes."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from pytorch_lightning.callbacks import EarlyStopping
from support import TINY, crash_at

from abaw_lightning import cli, pipeline
from abaw_lightning.configs import CONFIG_DIR
from abaw_lightning.data.synth.scales import SCALES
from abaw_lightning.errors import UserError, print_user_error
from abaw_lightning.quiet import LIGHTNING_INFO_LOGGER, quiet_libraries
from abaw_lightning.text import decimals
from abaw_lightning.training.callbacks import EpochLine, ProgressBar

ENV = {**os.environ, "WANDB_MODE": "offline", "NO_ALBUMENTATIONS_UPDATE": "1"}
TRAIN = [sys.executable, "-m", "abaw_lightning.train"]
NOISE = {
    "litlogger tip": r"litlogger",
    "LeafSpec deprecation": r"LeafSpec",
    "log_every_n_steps": r"smaller than the logging interval",
    "checkpoint folder": r"exists and is not empty",
    "W&B anonymous": r"anonymous setting has no effect",
    "Hydra log prefix": r"^\[\d{4}-\d\d-\d\d [\d:,]+\]\[[\w.]+\]\[INFO\]",
    "traceback": r"Traceback",
    "model summary": r"Total params",
    "W&B history panel": r"Run history:",
}
"""What every stage or resume printed before (issue 12), as it appeared."""


def noise_in(output: str) -> list[str]:
    return [name for name, line in NOISE.items() if re.search(line, output, re.MULTILINE)]


def test_user_error_is_one_unwrapped_line_with_its_brackets(capsys):
    message = "cannot read " + "/very/long/path" * 8 + " (row 3): fix [self.images[row] for x]"
    print_user_error(UserError(message))
    assert capsys.readouterr().err == f"error: {message}\n"


def emitted(message: str, category: type[Warning], module: str) -> bool:
    """Whether a warning attributed to `module` gets through the filters installed now."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_libraries()
        warnings.warn_explicit(message, category, f"/site/{module}.py", 1, module=module)
    return bool(caught)


def test_warnings_are_filtered_by_message_category_and_module():
    checkpoint = ("Checkpoint directory /r/checkpoints exists and is not empty.", UserWarning)
    module = "pytorch_lightning.callbacks.model_checkpoint"
    assert not emitted(*checkpoint, module)
    assert emitted(*checkpoint, "my_project.callbacks")
    assert emitted("Checkpoint directory /r is missing.", UserWarning, module)
    assert emitted(checkpoint[0], DeprecationWarning, module)
    leaf = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`"
    pytree = "pytorch_lightning.utilities._pytree"
    assert not emitted(leaf, FutureWarning, pytree)
    assert emitted("`torch.foo` is deprecated", FutureWarning, pytree)
    interval = "The number of training batches (4) is smaller than the logging interval Trainer("
    assert not emitted(interval, UserWarning, "pytorch_lightning.loops.fit_loop")
    assert emitted("The number of training batches (0) is zero", UserWarning, "pytorch_lightning")
    result = "pytorch_lightning.trainer.connectors.logger_connector.result"
    sync = "It is recommended to use `self.log('{}', ..., sync_dist=True)` when logging on epoch"
    assert not emitted(sync.format("val/ccc_v"), UserWarning, result)
    assert emitted(sync.format("train/loss"), UserWarning, result)  # not a torchmetrics value


def test_only_the_litlogger_tip_and_restated_lines_are_dropped_from_lightnings_info_lines():
    logger = logging.getLogger(LIGHTNING_INFO_LOGGER)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        quiet_libraries()
        quiet_libraries()
        logger.info("💡 Tip: For seamless cloud logging, try installing [litlogger](https://x)")
        logger.info("GPU available: False, used: False")
        logger.info("💡 Tip: something else")
        logger.info("`Trainer.fit` stopped: `max_epochs=3` reached.")
        logger.info("Restoring states from the checkpoint path at /r/checkpoints/last.ckpt")
        logger.info("Restored all states from the checkpoint at /r/checkpoints/last.ckpt")
        logger.info("`Trainer.fit` stopped: `max_steps=3` reached.")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert records == [
        "GPU available: False, used: False",
        "💡 Tip: something else",
        "`Trainer.fit` stopped: `max_steps=3` reached.",
    ]
    assert len(logger.filters) == 1


RUN = [
    *TINY,
    "experiment=demo",
    "stage=cnn_teacher",
    "trainer.log_every_n_steps=50",  # more than the batches of an epoch: Lightning's warning
]
"""A tiny stage as `abaw-train` runs it, with the settings that made Lightning chatter."""


@pytest.mark.slow
def test_a_resumed_stage_prints_none_of_the_known_noise(prepared_small, tmp_path):
    runs = tmp_path / "runs"
    settings = [
        *RUN,
        f"data.root={prepared_small}",
        f"runs_dir={runs}",
        "stages.cnn_teacher.max_epochs=2",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*settings, "logger=wandb", *crash_at(1)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        pipeline.run_pipeline(cfg)  # interrupted after epoch 0: the command below resumes it
    command = [
        *TRAIN,
        *RUN,
        f"data.root={prepared_small}",
        f"runs_dir={runs}",
        "logger=wandb",
        "stages.cnn_teacher.max_epochs=2",
    ]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "resuming from" in output and "wandb: " in output
    assert re.search(r"^GPU available: False", output, re.MULTILINE)  # Lightning's own lines stay
    assert noise_in(output) == [], output


@pytest.mark.slow
def test_a_two_stage_run_prints_its_plan_stages_epochs_and_results_only(prepared_small, tmp_path):
    """Teacher then student, W&B without WANDB_MODE and without credentials (a temporary home):
    offline, said once."""
    home = tmp_path / "home"
    env = {k: v for k, v in ENV.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    env |= {"HOME": str(home), "WANDB_CONFIG_DIR": str(home / "wandb"), "NETRC": str(home / "n")}
    home.mkdir()
    runs = tmp_path / "runs"
    command = [
        *TRAIN,
        *[setting for setting in RUN if not setting.startswith("stage=")],
        "pipeline=[cnn_teacher,cnn_student]",
        f"data.root={prepared_small}",
        f"runs_dir={runs}",
        "logger=wandb",
        "stages.cnn_teacher.max_epochs=2",
        "stages.cnn_student.max_epochs=2",
    ]
    done = subprocess.run(command, env=env, cwd=home, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert noise_in(output) == [], output
    assert output.count("W&B: no login found and WANDB_MODE is not set") == 1
    assert re.search(r"^plan demo\S* seed 0: 2 runs: 2 to train", output, re.MULTILINE)
    starts = re.findall(r"^(\w+) \(seed 0\): starting$", output, re.MULTILINE)
    assert starts == ["cnn_teacher", "cnn_student"]
    epochs = re.findall(r"^epoch (\d)/2  val/total \d\.\d{4} \(best ", output, re.MULTILINE)
    assert epochs == ["1", "2", "1", "2"]
    results = re.findall(r"^✓ (\w+) [0-9a-f]{12}: best val/total \d\.\d{4}$", output, re.MULTILINE)
    assert results == ["cnn_teacher", "cnn_student"]
    for kind in ("cnn_teacher", "cnn_student"):
        assert list((runs / "store" / kind).glob("*/wandb/offline-run-*/run-*.wandb"))


def test_synth_shows_one_progress_bar_per_step_counting_its_frames(tmp_path, capsys):
    assert cli.main(["synth", "--out", str(tmp_path), "--scale", "tiny", "--workers", "2"]) == 0
    out = capsys.readouterr().out  # not a terminal: each bar is printed once, complete
    steps = re.findall(r"^synth (\w[\w ]+?) +━+ (\d+)/(\d+) +(frames|images) ", out, re.MULTILINE)
    assert [name for name, *_ in steps] == [
        "affwild2 videos",
        "affwild2 test videos",
        "afew_va clips",
        "expw images",
        "affectnet images",
    ]
    assert all(done == total and int(total) > 0 for _, done, total, _ in steps)
    tiny = SCALES["tiny"]
    assert int(steps[2][2]) == tiny.afew_clips * tiny.afew_frames
    assert int(steps[3][2]) == tiny.expw_images


def test_epoch_lines_progress_bar_and_early_stop_count_epochs_from_one(capsys):
    stopper = EarlyStopping(monitor="val/total", mode="max", patience=3)
    stopper.stopped_epoch = 5  # Lightning's index: the sixth epoch
    trainer = SimpleNamespace(
        callbacks=[stopper], max_epochs=8, is_global_zero=True, progress_bar_callback=None
    )
    EpochLine().on_train_end(trainer, None)
    line = " ".join(capsys.readouterr().out.split())
    assert line == "stopped early after epoch 6/8: val/total did not improve for 3 epochs"
    stopper.stopped_epoch = 0  # ran to max_epochs: no line
    EpochLine().on_train_end(trainer, None)
    assert capsys.readouterr().out == ""
    bar = ProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=8)
    assert bar._get_train_description(0).strip() == "Epoch 1/8"
    assert bar._get_train_description(7).strip() == "Epoch 8/8"


def test_numbers_that_round_to_zero_never_read_minus_zero():
    assert [decimals(v) for v in (-0.0001, -0.0, 0.0004, -0.0006, -1.5)] == [
        "0.000",
        "0.000",
        "0.000",
        "-0.001",
        "-1.500",
    ]
