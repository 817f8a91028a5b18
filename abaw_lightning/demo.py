"""`abaw demo`: synthetic datasets -> prepare -> the four stages for one seed -> a metrics table."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from abaw_lightning.errors import UserError
from abaw_lightning.schema import METRIC_NAMES
from abaw_lightning.text import decimals

console = Console()
METRICS = tuple(METRIC_NAMES[name] for name in ("expr_score", "expr_f1", "ccc_v", "ccc_a", "total"))
CHANCE = {
    "val/expr_score": 1 / 7,
    "val/expr_f1": 1 / 7,
    "val/ccc_v": 0.0,
    "val/ccc_a": 0.0,
    "val/total": 1 / 7,
}
"""Roughly what a model without signal scores (uniform guessing over 7 classes, CCC 0)."""
SCALES = ("tiny", "small", "medium")
"""`abaw synth`'s scales (data.synth.scales.SCALES, not imported here: `abaw demo --help` stays
fast)."""
SCALE_OVERRIDES = {
    "tiny": (
        "data.batch_size=8",
        "data.windows.length=8",
        "data.windows.train_stride=4",
        "data.windows.batch_size=4",
    ),
}
"""Settings a scale needs before the user's overrides: tiny's parts hold 24-108 rows and its
videos 12-28 frames, under the demo's batch of 32 and its 32-frame windows."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("data/demo"), help="working folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of training")
    parser.add_argument(
        "--scale",
        default="small",
        choices=SCALES,
        help="synthetic data size, as `abaw synth --scale` (sizes in `abaw synth --help`): tiny: "
        "a smoke test of the install in about a minute (with "
        f"{' '.join(SCALE_OVERRIDES['tiny'])}); small (default): the demo; medium: about 8 times "
        "small's data",
    )
    parser.add_argument(
        "overrides", nargs="*", help="extra Hydra overrides, e.g. stages.cnn_teacher.max_epochs=2"
    )


def synthesize_and_prepare(out: Path, seed: int, scale: str = "small") -> None:
    """The synthetic datasets in ``out/synth`` (kept if already there) and their prepared folder
    ``out/prepared``."""
    from abaw_lightning.data.ingest.prepare import prepare
    from abaw_lightning.data.synth import generate

    synth = out / "synth"
    record = synth / "synth.json"
    if record.is_file():
        made = json.loads(record.read_text())
        if (made.get("scale"), made.get("seed")) != (scale, seed):
            raise UserError(
                f"{out} holds the synthetic data of --scale {made.get('scale')} --seed "
                f"{made.get('seed')} (its {record}), not of --scale {scale} --seed {seed}: pass "
                f"--out {out}-{scale}-{seed} for a demo of its own, or delete {synth} to make it "
                "again here"
            )
    else:
        generate(synth, seed=seed, scale=scale)
    prepare(
        synth / "affwild2",
        out / "prepared",
        expw=synth / "expw",
        afew_va=synth / "afew_va",
        affectnet=synth / "affectnet",
    )


def results_table(results: dict[str, dict]) -> Table:
    """The best validation metrics of every stage, with the chance level for reference."""
    table = Table(title="demo: best validation metrics per stage (synthetic Aff-Wild2 validation)")
    table.add_column("stage")
    for metric in METRICS:
        table.add_column(metric.removeprefix("val/"), justify="right")
    table.add_column("epochs", justify="right")
    for stage, result in results.items():
        best = result["best"]
        row = [decimals(best[metric]) for metric in METRICS]
        table.add_row(stage, *row, str(result["epochs"]))
    table.add_row("chance", *(decimals(CHANCE[metric]) for metric in METRICS), "", style="dim")
    return table


def run(args: argparse.Namespace) -> int:
    from hydra import initialize_config_dir

    from abaw_lightning.configs import CONFIG_DIR, check_job, compose_job
    from abaw_lightning.pipeline import run_pipeline
    from abaw_lightning.store.plan import duration
    from abaw_lightning.store.views import view_name

    started = time.monotonic()
    settings = [*SCALE_OVERRIDES.get(args.scale, ()), *args.overrides]
    overrides = [
        "experiment=demo",
        f"data.root={args.out / 'prepared'}",
        f"runs_dir={args.out / 'runs'}",
        f"seed={args.seed}",
        *settings,
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose_job(overrides)
    check_job(cfg)  # a mistyped override before minutes of synthesis
    synthesize_and_prepare(args.out, args.seed, args.scale)
    results = run_pipeline(cfg, overrides=settings)
    if not results:  # dry_run=true: the plan was all
        return 0
    console.print(results_table(results))
    view = Path(cfg.runs_dir) / view_name(cfg.experiment_name, settings) / f"seed_{cfg.seed}"
    console.print(
        f"done in {duration(time.monotonic() - started)}; runs in {view}",
        soft_wrap=True,
        highlight=False,
    )
    return 0
