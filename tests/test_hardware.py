"""`check_trainer_settings`: trainer settings the machine cannot run are one line saying what to
pass instead, checked on the configs as composed (GPUs simulated where the test needs them)."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from abaw_lightning import hardware
from abaw_lightning.errors import UserError
from abaw_lightning.hardware import check_trainer_settings
from abaw_lightning.train import CONFIG_DIR


def gpus(monkeypatch, count: int, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Quadro RTX 6000")
    monkeypatch.setattr(hardware, "_mps_available", lambda: False)


def trainer_settings(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    return OmegaConf.to_container(cfg.trainer, resolve=True)


def refusal(settings: dict) -> str:
    with pytest.raises(UserError) as error:
        check_trainer_settings(settings)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_gpu_trainer_without_a_gpu_says_what_to_pass(monkeypatch):
    gpus(monkeypatch, 0)
    assert refusal(trainer_settings("trainer=gpu")) == (
        "trainer.accelerator=gpu but torch finds no CUDA "
        "or MPS GPU on this machine: pass trainer=cpu, or trainer=default, which uses a GPU when "
        "there is one (or trainer.accelerator=cpu to keep the other trainer settings)."
    )
    assert "no CUDA GPU" in refusal({"accelerator": "cuda"})
    assert "pass trainer=cpu" in refusal(trainer_settings("trainer=ddp"))
    for choice in ("default", "cpu", "debug"):
        check_trainer_settings(trainer_settings(f"trainer={choice}"))
    ddp_on_cpu = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
    check_trainer_settings(trainer_settings(*ddp_on_cpu, "trainer.precision=32-true"))


def test_precision_the_device_lacks(monkeypatch):
    gpus(monkeypatch, 0)
    for settings in ({"accelerator": "cpu", "precision": "16-mixed"}, {"precision": 16}):
        assert refusal(settings).endswith(
            "needs a GPU; on the CPU pass trainer.precision=bf16-mixed or "
            "trainer.precision=32-true."
        )
    check_trainer_settings({"accelerator": "cpu", "precision": "bf16-mixed"})
    gpus(monkeypatch, 1, bf16=False)
    assert refusal(trainer_settings("trainer=gpu")) == (
        "trainer.precision=bf16-mixed: this GPU (Quadro RTX 6000) has no bfloat16; pass "
        "trainer.precision=16-mixed (or 32-true)."
    )
    check_trainer_settings(trainer_settings("trainer=gpu", "trainer.precision=16-mixed"))


def test_more_gpus_than_the_machine_has(monkeypatch):
    gpus(monkeypatch, 1)
    check_trainer_settings(trainer_settings("trainer=gpu"))
    check_trainer_settings(trainer_settings("trainer=ddp"))  # devices=-1: all there are
    for devices in (2, "2", [0, 1], "0,1"):
        assert refusal({"accelerator": "gpu", "devices": devices}).endswith(
            "GPUs but this machine has 1: pass trainer.devices=1 (or trainer.devices=-1 for "
            "all of them)."
        )


@pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(), reason="needs no GPU"
)
def test_lightning_fails_where_the_check_refuses_a_gpu(tmp_path):
    with pytest.raises(InstantiationException, match="No supported gpu backend"):
        instantiate(trainer_settings("trainer=gpu"), default_root_dir=str(tmp_path))


def test_several_processes_need_a_spawning_strategy(monkeypatch):
    gpus(monkeypatch, 0)
    for settings in (
        trainer_settings("trainer=cpu", "trainer.devices=4"),
        {"accelerator": "cpu", "devices": 2, "strategy": "ddp"},
        {"accelerator": "cpu", "devices": 1, "num_nodes": 2},
    ):
        message = refusal(settings)
        assert "would re-launch this command" in message
        assert message.endswith("pass trainer=ddp (ddp_spawn), or trainer.devices=1.")
    check_trainer_settings(trainer_settings("trainer=ddp", "trainer.accelerator=cpu"))
    gpus(monkeypatch, 2)
    assert "runs 2 training processes" in refusal(
        trainer_settings("trainer=gpu", "trainer.devices=2")
    )
    assert "runs 2 training processes" in refusal(
        trainer_settings("trainer=gpu", "trainer.devices=-1")
    )
    check_trainer_settings(trainer_settings("trainer=ddp"))
    check_trainer_settings(trainer_settings("trainer=gpu"))
