"""The stage runs' loggers (abaw_lightning.training.loggers): W&B runs read back from their offline
transaction logs through W&B's own reader (group, job type, name, tags, the job's config, the best
epoch's summary), every validation epoch exactly once after kills and resumes (W&B and CSV), and
W&B's own settings deciding online or offline."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest
import wandb
from hydra.utils import instantiate
from omegaconf import open_dict
from support import SimulatedKill, kill_at, tiny_config, view_run

from abaw_lightning import pipeline
from abaw_lightning.training import loggers
from abaw_lightning.training.loggers import (
    CSVLogger,
    LoggedSteps,
    WandbLogger,
    read_wandb_log,
    validation_rows,
    wandb_mode,
)

STAGE = ("stage=cnn_teacher", "stages.cnn_teacher.max_epochs=3")


def flat(config: dict, prefix: str = "") -> dict:
    """W&B's nested config as the UI shows it: ``data.root``."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value and key != "_wandb":
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_segments(run: Path) -> list[list[dict]]:
    """The records of each process's offline W&B log of a stage run (one id), in order."""
    run_id = (run / "wandb_id").read_text().strip()
    files = sorted(run.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    return [read_wandb_log(path) for path in files]


def merged(records: list[dict], kind: str) -> dict:
    """The run's final config or summary: the updates of its records, in order."""
    result: dict = {}
    for record in records:
        if record["type"] == kind:
            result |= record[kind].get("update", {})
        elif record["type"] == "run" and kind == "config":
            result |= record["run"]["config"]["update"]
    return result


def history(records: list[dict]) -> list[dict]:
    return [r["history"]["item"] for r in records if r["type"] == "history"]


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@pytest.fixture
def no_network(monkeypatch):
    """Any connection to a non-loopback address fails (W&B's own service runs on this host)."""
    real = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not loopback(address[0]):
            raise OSError(f"test: no network ({address})")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


def test_logged_steps_by_hand():
    logged = LoggedSteps()
    logged.add({"train/loss": 1.0, "epoch": 0}, 3)
    logged.add({"val/total": 0.5, "epoch": 0}, 3)
    assert logged.new({"train/loss": 1.0, "epoch": 0}, 3) == {}
    assert logged.new({"lr-Adam": 0.1}, 3) == {"lr-Adam": 0.1}
    assert logged.new({"train/loss": 2.0, "epoch": 1}, 4) == {"train/loss": 2.0, "epoch": 1}
    assert logged.new({"val/total": 0.5, "epoch": 0}, 3) == {}
    assert logged.new({"val/total": 0.7, "epoch": 1}, 7) == {"val/total": 0.7, "epoch": 1}
    online = LoggedSteps(through=5, validated=1)  # known from a summary only
    assert online.new({"train/loss": 1.0, "epoch": 1}, 5) == {}
    assert online.new({"train/loss": 1.0, "epoch": 1}, 6) != {}
    assert online.new({"val/total": 0.5, "epoch": 0}, 3) == {}
    assert online.new({"val/total": 0.7, "epoch": 1}, 5) == {"val/total": 0.7, "epoch": 1}
    # Lightning logs a validation one step before the global step the history records
    epochs = [{"epoch": 1, "step": 8, "val/total": 0.7}, {"epoch": 0, "step": 4, "val/total": 0.5}]
    assert validation_rows(epochs) == [
        ({"val/total": 0.5, "epoch": 0}, 3),
        ({"val/total": 0.7, "epoch": 1}, 7),
    ]


@pytest.fixture
def own_wandb_settings(monkeypatch, tmp_path):
    """This machine's W&B settings and credentials out of the way: a temporary home, config
    folder, netrc and working folder, and a fresh W&B session that reads them."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loggers, "_notice_shown", False)
    wandb.teardown()
    yield tmp_path
    wandb.teardown()


def login(home: Path) -> None:
    """Credentials as `wandb login` leaves them: a 40-character key in the netrc, for W&B's
    default host."""
    host = urlparse(wandb.Settings().base_url).hostname
    netrc = home / "netrc"
    netrc.write_text(f"machine {host}\n  login user\n  password {'k' * 40}\n")
    netrc.chmod(0o600)


def test_without_credentials_or_wandb_mode_runs_log_offline_with_a_notice(
    own_wandb_settings, capsys
):
    assert wandb_mode(None) == "offline"
    assert wandb_mode(None) == "offline"
    out = capsys.readouterr().out
    assert out.count("W&B: no login found") == 1  # once per process
    assert "`wandb login`" in out and "wandb sync" in out
    assert wandb_mode("online") == "online"  # logger.mode=online is the user's choice


def test_wandb_login_or_settings_decide_when_credentials_exist(own_wandb_settings, monkeypatch):
    login(own_wandb_settings)
    assert wandb_mode(None) is None  # W&B's own default: online
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode(None) is None  # W&B reads WANDB_MODE itself


def test_the_composed_logger_does_not_force_offline(own_wandb_settings, monkeypatch):
    login(own_wandb_settings)
    monkeypatch.setenv("WANDB_MODE", "online")
    wandb.teardown()
    cfg = tiny_config(own_wandb_settings, own_wandb_settings / "runs", "logger=wandb")
    with open_dict(cfg):
        cfg.run = {"dir": "r", "wandb_id": "abc", "name": "demo/seed_0/cnn_teacher"} | {
            "group": "demo",
            "stage": "cnn_teacher",
            "kind": "cnn_teacher",
        }
    logger = instantiate(cfg.logger, _convert_="all")
    assert isinstance(logger, WandbLogger) and not logger._offline
    assert "mode" not in logger._wandb_init and "anonymous" not in logger._wandb_init
    assert logger._wandb_init["tags"] == ["seed_0", "cnn_teacher"]
    assert os.environ["WANDB_MODE"] == "online"
    chosen = WandbLogger(project="p", save_dir="r", anonymous=True, offline=True)
    assert chosen._wandb_init["anonymous"] == "allow" and chosen._wandb_init["mode"] == "offline"
    assert os.environ["WANDB_MODE"] == "online"  # Lightning's offline=True would set dryrun


def test_wandb_run_holds_the_variant_the_job_config_and_the_best_epoch(
    prepared_small, tmp_path, no_network
):
    settings = ("logger=wandb", "experiment_name=tracked", *STAGE)
    result = pipeline.run_pipeline(tiny_config(prepared_small, tmp_path, *settings))["cnn_teacher"]
    assert os.environ["WANDB_MODE"] == "offline"
    root = view_run(tmp_path, "tracked", 0, "cnn_teacher")
    (records,) = read_segments(root)
    run = next(record["run"] for record in records if record["type"] == "run")
    assert run["run_group"] == "tracked"
    assert run["job_type"] == "cnn_teacher"
    assert run["display_name"] == "tracked/seed_0/cnn_teacher"
    assert run["tags"] == ["seed_0", "cnn_teacher"]
    assert run["telemetry"]["feature"]["offline"]
    config = flat(merged(records, "config"))
    identity = json.loads((root / "identity.json").read_text())
    assert config["seed"] == 0 and config["experiment_name"] == "tracked"
    assert config["data.root"] == str(prepared_small)
    assert config["trainer.precision"] == "32-true"
    assert config["run.key"] == identity["key"] == root.name
    assert config["run.kind"] == "cnn_teacher" and config["run.group"] == "tracked"
    assert config["stages.cnn_teacher.max_epochs"] == 3
    assert not any(key.startswith("stages.cnn_student") for key in config)
    assert config["image_size"] == 32  # the module's hyperparameters, logged by Lightning
    summary = merged(records, "summary")
    best = result["best"]
    assert summary["best/val/total"] == best["val/total"]
    assert summary["best/epoch"] == best["epoch"]
    assert summary["best/val/ccc_a"] == best["val/ccc_a"]
    assert [row["epoch"] for row in history(records) if "val/total" in row] == [0, 1, 2]


def test_killed_and_resumed_wandb_run_holds_every_validation_epoch_once(prepared_small, tmp_path):
    settings = ("logger=wandb", *STAGE)
    with pytest.raises(SimulatedKill):  # in epoch 1: W&B got epoch 0 and steps 4-5
        pipeline.run_pipeline(
            tiny_config(prepared_small, tmp_path, *settings, *kill_at(6, "batch"))
        )
    root = view_run(tmp_path, "demo", 0, "cnn_teacher")
    with pytest.raises(SimulatedKill):  # resumed from epoch 1, killed in epoch 2 ...
        pipeline.run_pipeline(
            tiny_config(prepared_small, tmp_path, *settings, *kill_at(10, "batch"))
        )
    second = next(sorted(root.glob("wandb/offline-run-*"))[-1].glob("run-*.wandb"))
    second.write_bytes(second.read_bytes()[:7])  # ... by kill -9: W&B's log kept its header only
    result = pipeline.run_pipeline(tiny_config(prepared_small, tmp_path, *settings))["cnn_teacher"]

    segments = read_segments(root)
    assert len(segments) == 3 and history(segments[1]) == []
    rows = [row for segment in segments for row in history(segment)]
    validations = [row for row in rows if "val/total" in row]
    assert [row["epoch"] for row in validations] == [0, 1, 2]  # 1 was lost, then logged again
    assert [history(segment)[0].get("val/total") for segment in segments[2:]] == [
        result["history"][1]["val/total"]
    ]
    for row, epoch in zip(validations, result["history"], strict=True):
        assert row["trainer/global_step"] == epoch["step"] - 1
        assert {k: v for k, v in row.items() if k.startswith("val/")} == {
            k: v for k, v in epoch.items() if k.startswith("val/")
        }
    losses = [row["trainer/global_step"] for row in rows if "train/loss" in row]
    assert len(losses) == len(set(losses))  # no training step twice either
    assert set(range(8, 12)) <= set(losses)  # after the last checkpoint nothing is lost
    summary = merged([record for segment in segments for record in segment], "summary")
    assert summary["best/val/total"] == result["best"]["val/total"]
    assert summary["validated_epochs"] == 3


def test_resumed_csv_log_keeps_its_rows_and_equals_an_uninterrupted_one(prepared_small, tmp_path):
    settings = ("logger=csv", *STAGE)
    pipeline.run_pipeline(tiny_config(prepared_small, tmp_path / "whole", *settings))
    whole = (view_run(tmp_path / "whole", "demo", 0, "cnn_teacher") / "csv/metrics.csv").read_text()
    runs = tmp_path / "killed"
    with pytest.raises(SimulatedKill):  # in epoch 1, resumed from the end of epoch 0
        pipeline.run_pipeline(tiny_config(prepared_small, runs, *settings, *kill_at(6, "batch")))
    log = view_run(runs, "demo", 0, "cnn_teacher") / "csv/metrics.csv"
    lines = log.read_text().splitlines(keepends=True)
    validation = next(i for i, line in enumerate(lines) if line.startswith("0,,3,,"))
    kept = "".join(lines[:validation])
    log.write_text(kept + lines[validation][:20])  # killed while writing epoch 0's validation
    with pytest.warns(UserWarning, match="metrics.csv: dropped its last row, cut off"):
        pipeline.run_pipeline(tiny_config(prepared_small, runs, *settings))
    resumed = log.read_text()
    assert resumed.startswith(kept)  # the rows before the kill stay
    assert resumed == whole  # epoch 0's validation written again, every row once, in order


def test_csv_logger_appends_where_lightnings_deletes(tmp_path):
    first = CSVLogger(tmp_path, name="csv", version="")
    first.log_metrics({"train/loss": 1.0, "epoch": 0}, step=0)
    first.log_metrics({"val/total": 0.5, "epoch": 0}, step=0)
    first.save()
    second = CSVLogger(tmp_path, name="csv", version="")
    second.resume_history([{"epoch": 0, "step": 1, "val/total": 0.5}], 1)
    second.log_metrics({"train/loss": 1.0, "epoch": 0}, step=0)  # held: not written again
    second.log_metrics({"train/loss": 0.9, "epoch": 1}, step=1)
    second.save()
    assert (tmp_path / "csv" / "metrics.csv").read_text().splitlines() == [
        "epoch,step,train/loss,val/total",
        "0,0,1.0,",
        "0,0,,0.5",
        "1,1,0.9,",
    ]
