"""Config checks before a job runs: a typo in a setting, a stage or a choice is one clear error
naming the setting and the fix, not a failure hours in when the stage is built."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support import tiny_config

from abaw_lightning.configs import check_job, compose_jobs
from abaw_lightning.errors import UserError


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=abc", "seed must be an integer, got 'abc'"),
        ("+stages.cnn_studnet.max_epochs=1", "did you mean stages.cnn_student?"),
        (
            "+stages.cnn_student.module.distillation.lamb=0.3",
            "takes no setting 'lamb': did you mean lam?",
        ),
        (
            "model.arch=resnet51",
            "model.arch=resnet51 is not one of resnet10 | resnet18 | resnet34 | resnet50",
        ),
        ("model.layout=cafe", "model.layout=cafe is not one of"),
        ("va_anchors=center", "va_anchors=center is not one of"),
        ("+trainer.max_epoch=3", "trainer.max_epoch: pytorch_lightning.Trainer takes no setting"),
        ("trainer._target_=abaw_lightning.nowhere.Trainer", "cannot be imported"),
        (
            "stages.cnn_student.module.distillation.lam=abc",
            "distillation.lam='abc' must be a number",
        ),
        (
            "stages.cnn_student.module.distillation.lam=1.5",
            "stages.cnn_student.module.distillation.lam=1.5 must lie in [0, 1]",
        ),
        ("stages.cnn_student.module.distillation.kd_t2=yes", "kd_t2='yes' must be true or false"),
        ("stages.cnn_teacher.max_epochs=abc", "max_epochs='abc' must be a whole number"),
        ("data.batch_size=0", "data.batch_size=0 must be a whole number of at least 1"),
        ("data.image_size=abc", "data.image_size='abc' must be a whole number"),
        ("data.num_workers=-1", "data.num_workers=-1 must be a whole number of at least 0"),
        (
            "stages.cnn_teacher.module.optimizer.lr=abc",
            "stages.cnn_teacher.module.optimizer.lr='abc' must be a positive number",
        ),
        ("stages.gru_teacher.module.optimizer.lr=-1", "optimizer.lr=-1 must be a positive number"),
        (
            "stages.cnn_student.module.optimizer.betas=[0.5,1.5]",
            "optimizer.betas=[0.5, 1.5] must be two numbers in [0, 1)",
        ),
        ("trainer.precision=abc", "is not one of 64 | 32 | 16 | transformer-engine |"),
        ("model.dropout=2", "model.dropout=2 must lie in [0, 1)"),
        ("model.weights=ferplus", "model.weights_path=null: weights=ferplus reads its file"),
    ],
)
def test_a_mistake_in_the_config_is_one_error_naming_it(tmp_path, override, message):
    cfg = tiny_config(tmp_path, tmp_path / "runs", override)
    with pytest.raises(UserError) as error:
        check_job(cfg)
    assert message in " ".join(str(error.value).split())
    if not override.startswith("+"):  # named by the key the user set, not where it ends up
        assert str(error.value).startswith(override.partition("=")[0].split(".", 1)[0])


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("logger=wandb",),
        ("logger=csv", "seed=0"),
        ("experiment=paper",),
        ("stages.cnn_student.module.distillation.lam=0.9", "model.arch=resnet10"),
    ],
)
def test_the_shipped_configs_pass_the_check(tmp_path, overrides):
    check_job(tiny_config(tmp_path, tmp_path / "runs", *overrides))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "stages.cnn_student.module.distillation.lamb=0.3",
            "stages.cnn_student.module.distillation.lamb is not a setting: did you mean "
            "stages.cnn_student.module.distillation.lam?",
        ),
        ("modle.arch=resnet18", "modle.arch is not a setting: did you mean model.arch?"),
        ("experiment=dmeo", "experiment=dmeo is not an option: did you mean experiment=demo?"),
        ("logger=csvv", "logger=csvv is not an option: did you mean logger=csv? the options are"),
    ],
)
def test_a_mistyped_override_is_named_with_the_setting_it_likely_means(override, message):
    with pytest.raises(UserError) as error:
        compose_jobs([override])
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["experiment=demo", "stages.cnn_student.module.distillation.lamb=0.3"],
            "did you mean stages.cnn_student.module.distillation.lam?",
        ),
        (
            ["-m", "experiment=demo", "stages.cnn_student.module.distillation.lam=0.3,abc"],
            "stages.cnn_student.module.distillation.lam='abc' must be a number",
        ),
        (
            ["-m", "experiment=demo", "data.root=/nonexistent", "seed=0,1"],
            "prepared data folder /nonexistent does not exist",
        ),
    ],
)
def test_abaw_train_stops_a_mistake_with_one_error_line_before_any_job(
    tmp_path, arguments, message
):
    env = {**os.environ, "WANDB_MODE": "offline", "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "abaw_lightning.train", *arguments, f"runs_dir={tmp_path}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert [line for line in output.splitlines() if line.startswith("error: ")] == [
        f"error: {line}" for line in [done.stderr.strip().removeprefix("error: ")]
    ]
    assert message in done.stderr and "Traceback" not in output and "HYDRA_FULL" not in output
    assert not list(tmp_path.iterdir())  # no job started: nothing written
