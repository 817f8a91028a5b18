"""Config checks before a job runs: a typo in a setting, a stage or a choice is one clear error
naming the setting and the fix, not a failure hours in when the stage is built."""

from __future__ import annotations

import pytest
from support import tiny_config

from abaw_lightning.configs import check_job
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
        ("stages.cnn_student.module.distillation.lam=1.5", "lam=1.5 must lie in [0, 1]"),
        ("stages.cnn_student.module.distillation.kd_t2=yes", "kd_t2='yes' must be true or false"),
        ("stages.cnn_teacher.max_epochs=abc", "max_epochs='abc' must be a whole number"),
        ("data.batch_size=0", "datamodule.batch_size=0 must be a whole number of at least 1"),
        ("data.image_size=abc", "datamodule.image_size='abc' must be a whole number"),
    ],
)
def test_a_mistake_in_the_config_is_one_error_naming_it(tmp_path, override, message):
    cfg = tiny_config(tmp_path, tmp_path / "runs", override)
    with pytest.raises(UserError) as error:
        check_job(cfg)
    assert message in " ".join(str(error.value).split())


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
