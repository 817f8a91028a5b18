"""The stage runs' Lightning loggers: W&B and CSV logs that a kill and a resume leave whole (every
validation epoch exactly once), online or offline as W&B's own settings say, and the best epoch
(the one the report and the checkpoint use) in W&B's summary.

A resumed fit recomputes exactly what the killed one did, so a step a log already holds is never
logged again; `ResumeLoggers` hands each logger the checkpoint's validation history at the start of
a resumed fit (``resume_history``), and the epochs the log lacks (a kill came before W&B's
transaction log was flushed) are logged from it.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning import loggers
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities.rank_zero import rank_zero_only, rank_zero_warn
from rich.console import Console

from abaw_lightning.schema import MONITOR

BOOKKEEPING = frozenset({"epoch", "step", "trainer/global_step"})
"""Keys every logged row carries beside its metrics (they say where the row is, not what)."""
VALIDATED_EPOCHS = "validated_epochs"
"""W&B summary key: how many epochs the run's log holds the validation of (a resumed online run
reads it back to know which validations reached the server)."""

_notice_shown = False


def _identity(key: str) -> str:
    return key


class LoggedSteps:
    """What a log already holds, and which part of a new row is new: training metrics by step,
    validations by epoch (one per epoch; Lightning logs its metrics in one row).

    ``through`` and ``validated`` describe a log known only by its summary (an online W&B run):
    every training metric up to step ``through``, the validations of the epochs below
    ``validated``.
    """

    def __init__(self, through: int = -1, validated: int = 0) -> None:
        self.keys: dict[int, set[str]] = {}
        self.epochs: set[int] = set(range(validated))
        self.through = through

    def add(self, row: Mapping[str, Any], step: int) -> None:
        if any(key.startswith("val/") for key in row) and row.get("epoch") is not None:
            self.epochs.add(int(row["epoch"]))
        training = {k for k in row if k not in BOOKKEEPING and not k.startswith("val/")}
        self.keys.setdefault(step, set()).update(training)

    def held(self, key: str, step: int, epoch: Any) -> bool:
        if key.startswith("val/"):
            return epoch is not None and int(epoch) in self.epochs
        return step <= self.through or key in self.keys.get(step, ())

    def new(
        self, row: Mapping[str, Any], step: int, stored: Callable[[str], str] = _identity
    ) -> dict[str, Any]:
        """The metrics of ``row`` the log lacks at ``step`` (keys as ``stored`` names them in
        the log), with the row's bookkeeping keys; empty when it holds them all."""
        epoch = row.get("epoch")
        fresh = {
            key: value
            for key, value in row.items()
            if key not in BOOKKEEPING and not self.held(stored(key), step, epoch)
        }
        if not fresh:
            return {}
        return {key: value for key, value in row.items() if key in BOOKKEEPING or key in fresh}


def validation_rows(epochs: Iterable[Mapping[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """The row Lightning logged for each validated epoch of a `ValidationHistory` (its ``val/*``
    metrics and epoch) and its step, in epoch order. Lightning logs a validation at the count of
    batches that stepped, which it increments after the validation: one less than the global step
    the history records."""
    ordered = sorted(epochs, key=lambda record: record["epoch"])
    return [
        (
            {k: v for k, v in r.items() if k.startswith("val/")} | {"epoch": r["epoch"]},
            r["step"] - 1,
        )
        for r in ordered
    ]


def best_epoch(epochs: Mapping[int, Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The epoch with the highest `val/total`, the first on ties (as `ValidationHistory.best`)."""
    scored = [epochs[epoch] for epoch in sorted(epochs) if MONITOR in epochs[epoch]]
    return max(scored, key=lambda record: record[MONITOR]) if scored else None


def read_wandb_log(path: Path) -> list[dict[str, Any]]:
    """The records of a W&B transaction log (``run-<id>.wandb``) as dicts, read by W&B's own
    reader (``wandb leet inspect --json``, in wandb-core); a log cut off by a kill reads up to
    its last complete record."""
    from wandb.util import get_core_path

    command = [get_core_path(), "leet", "inspect", "--json", "--no-observability"]
    done = subprocess.run(
        [*command, "--run-file", str(path)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"wandb-core could not read {path}: {done.stderr.strip()[-300:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def wandb_history(
    records: Iterable[Mapping[str, Any]], logged: LoggedSteps | None = None
) -> LoggedSteps:
    """What the history rows of a W&B log hold (added to ``logged``), by `trainer/global_step`."""
    logged = logged if logged is not None else LoggedSteps()
    for record in records:
        row = record.get("history", {}).get("item", {}) if record.get("type") == "history" else {}
        if "trainer/global_step" in row:
            metrics = {key: value for key, value in row.items() if not key.startswith("_")}
            logged.add(metrics, int(row["trainer/global_step"]))
    return logged


def wandb_mode(requested: str | None) -> str | None:
    """The ``mode`` for ``wandb.init``: ``requested`` if given; otherwise W&B's own choice
    (``WANDB_MODE``, ``wandb offline``, ``wandb login``), except that without credentials and
    without ``WANDB_MODE`` the run is logged offline (``None``: W&B's choice stands)."""
    if requested is not None or "WANDB_MODE" in os.environ:
        return requested
    from wandb.sdk import wandb_setup

    settings = wandb_setup.singleton().settings
    if settings.mode not in ("online", "run") or _has_credentials(settings.base_url):
        return None
    global _notice_shown
    if not _notice_shown:
        _notice_shown = True
        Console(soft_wrap=True).print(
            "W&B: no login found and WANDB_MODE is not set, so runs are logged offline into each "
            "run's wandb/ folder; `wandb login` (or WANDB_MODE=online) logs them online, "
            "`wandb sync <run>/wandb/offline-run-*` uploads offline ones later",
            highlight=False,
            markup=False,
        )
    return "offline"


def _has_credentials(host: str) -> bool:
    """Whether W&B finds credentials for ``host`` (an API key in the environment, ~/.netrc or
    its settings), without prompting or contacting the server."""
    try:
        from wandb.sdk.lib import wbauth
    except ImportError:  # an older wandb: it decides (and prompts) itself
        return True
    found = wbauth.authenticate_session(
        host=host, source="abaw-train", prompt=False, update_session=False
    )
    return found is not None


class WandbLogger(loggers.WandbLogger):
    """Lightning's WandbLogger for the stage runs.

    - ``mode`` (online, offline, disabled) as W&B's own settings decide (`wandb_mode`); nothing
      is forced on the rest of the process (Lightning's ``offline=True`` sets
      ``WANDB_MODE=dryrun`` for it). ``offline=True`` is ``mode="offline"``.
    - The ``best/*`` summary keys: the best epoch's validation metrics and ``best/epoch``, also
      when the best epoch came before a resume.
    - A resumed run (same id) holds every validation epoch exactly once: a row W&B already has
      (read back from the earlier offline logs of the id, or the online run's summary) is not
      logged again, and ``resume_history`` logs the validations W&B never received.
    """

    def __init__(
        self,
        *,
        mode: str | None = None,
        offline: bool = False,
        anonymous: bool | None = None,
        tags: Iterable[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if tags is not None:
            kwargs["tags"] = list(dict.fromkeys(str(tag) for tag in tags))
        super().__init__(anonymous=anonymous, **kwargs)
        if anonymous is None:  # wandb answers an unset `anonymous` with a notice
            self._wandb_init.pop("anonymous", None)
        mode = wandb_mode("offline" if offline else mode)
        if mode is not None:
            self._wandb_init["mode"] = mode
        self._logged: LoggedSteps | None = None
        self._epochs: dict[int, dict[str, Any]] = {}

    def _stored(self, key: str) -> str:
        return f"{self._prefix}{self.LOGGER_JOIN_CHAR}{key}" if self._prefix else key

    def _already_logged(self) -> LoggedSteps:
        """What W&B holds of this run, read once: offline, the history of the earlier offline
        logs of its id; online (a resumed run), its summary."""
        if self._logged is not None:
            return self._logged
        run = self.experiment
        if not run.offline:
            summary = run.summary if run.resumed else {}
            self._logged = LoggedSteps(
                through=int(summary.get("trainer/global_step", -1)),
                validated=int(summary.get(VALIDATED_EPOCHS, 0)),
            )
            return self._logged
        current = Path(run.dir).parent.resolve()
        folders = Path(self.save_dir or ".", "wandb").glob(f"offline-run-*-{run.id}")
        self._logged = LoggedSteps()
        for folder in sorted(f for f in folders if f.resolve() != current):
            log = folder / f"run-{run.id}.wandb"
            if not log.is_file():
                continue
            try:
                wandb_history(read_wandb_log(log), self._logged)
            except (OSError, RuntimeError, ValueError) as error:
                rank_zero_warn(f"{error}; its epochs are logged again")
        return self._logged

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Lightning's row, less what W&B already holds at ``step``; a validation row also
        updates the ``best/*`` summary."""
        row = dict(metrics)
        if step is None:
            super().log_metrics(row, step)
            return
        validation = MONITOR in row and "epoch" in row
        if validation:
            self._epochs[int(row["epoch"])] = {"epoch": int(row["epoch"])} | {
                k: v for k, v in row.items() if k.startswith("val/")
            }
        logged = self._already_logged()
        new = logged.new(row, step, self._stored)
        if new:
            logged.add({self._stored(key): value for key, value in new.items()}, step)
            super().log_metrics(new, step)
        if validation:
            self._update_summary()

    def _update_summary(self) -> None:
        best = best_epoch(self._epochs)
        summary = {VALIDATED_EPOCHS: max(self._epochs) + 1}
        if best is not None:
            summary |= {f"best/{key}": value for key, value in best.items()}
        self.experiment.summary.update(summary)

    @rank_zero_only
    def resume_history(self, epochs: list[dict[str, Any]], step: int) -> None:
        """At the start of a (resumed) fit: log the validations of the restored history that W&B
        lacks (a kill came before they were written), so the best epoch counts them too."""
        for row, at in validation_rows(epochs):
            self.log_metrics(row, at)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, continuing an existing ``metrics.csv`` instead of deleting it."""

    def _check_log_dir_exists(self) -> None:
        """(Lightning deletes the old file here.) Read what the file holds; a last row cut off by
        a kill is dropped, its step is logged again."""
        self.logged = LoggedSteps()
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        content = path.read_bytes()
        if content and not content.endswith(b"\n"):
            content = content[: content.rfind(b"\n") + 1]
            path.write_bytes(content)
            rank_zero_warn(f"{path}: dropped its last row, cut off when the run was killed")
        if not content:
            path.unlink()
            return
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            self.metrics_keys = list(reader.fieldnames or [])
            for row in reader:
                if row.get("step"):
                    present = {key: value for key, value in row.items() if value not in ("", None)}
                    self.logged.add(present, int(float(row["step"])))

    def sort_by_step(self) -> None:
        """Rewrite the file in step order (rows logged for a resume come after later steps)."""
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            rows = list(csv.DictReader(file))
        rows.sort(key=lambda row: int(float(row["step"])))
        with self._fs.open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)


class CSVLogger(loggers.CSVLogger):
    """Lightning's CSVLogger that a resume appends to: the rows from before a kill stay, a step
    the file already holds is not written again, and ``resume_history`` writes the validations
    the file lacks; every validation epoch is in ``metrics.csv`` exactly once."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def _stored(self, key: str) -> str:
        return f"{self._prefix}{self.LOGGER_JOIN_CHAR}{key}" if self._prefix else key

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        row = dict(metrics)
        if step is not None:
            row = self.experiment.logged.new(row, step, self._stored)
            if not row:
                return
            self.experiment.logged.add({self._stored(k): v for k, v in row.items()}, step)
        super().log_metrics(row, step)

    @rank_zero_only
    def resume_history(self, epochs: list[dict[str, Any]], step: int) -> None:
        """At the start of a (resumed) fit: write the validations of the restored history that
        the file lacks, then keep the file in step order."""
        written = False
        for row, at in validation_rows(epochs):
            if self.experiment.logged.new(row, at, self._stored):
                self.log_metrics(row, at)
                written = True
        if written:
            self.save()
            self.experiment.sort_by_step()
