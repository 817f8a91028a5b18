"""`abaw demo`: synthetic datasets -> prepare -> the four stages for one seed -> a metrics table."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from abaw_lightning.schema import METRIC_NAMES

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


def synthesize_and_prepare(out: Path, seed: int, scale: str = "small") -> Path:
    """The synthetic datasets (kept if already there) and their prepared folder."""
    from abaw_lightning.data.ingest.prepare import prepare
    from abaw_lightning.data.synth import generate

    synth = out / "synth"
    if not (synth / "synth.json").is_file():
        generate(synth, seed=seed, scale=scale)
    prepared = out / "prepared"
    prepare(
        synth / "affwild2",
        prepared,
        expw=synth / "expw",
        afew_va=synth / "afew_va",
        affectnet=synth / "affectnet",
    )
    return prepared


def results_table(results: dict[str, dict]) -> Table:
    """The best validation metrics of every stage, with the chance level for reference."""
    table = Table(title="demo: best validation metrics per stage (synthetic Aff-Wild2 validation)")
    table.add_column("stage")
    for metric in METRICS:
        table.add_column(metric.removeprefix("val/"), justify="right")
    table.add_column("epochs", justify="right")
    for stage, result in results.items():
        best = result["best"]
        row = [f"{best[metric]:.3f}" for metric in METRICS]
        table.add_row(stage, *row, str(result["epochs"]))
    table.add_row("chance", *(f"{CHANCE[metric]:.3f}" for metric in METRICS), "", style="dim")
    return table


def run(args: argparse.Namespace) -> int:
    from hydra import compose, initialize_config_dir

    from abaw_lightning.configs import CONFIG_DIR
    from abaw_lightning.pipeline import run_pipeline

    started = time.monotonic()
    prepared = synthesize_and_prepare(args.out, args.seed, args.scale)
    overrides = [
        "experiment=demo",
        f"data.root={prepared}",
        f"runs_dir={args.out / 'runs'}",
        f"seed={args.seed}",
        *SCALE_OVERRIDES.get(args.scale, ()),
        *args.overrides,
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    results = run_pipeline(cfg)
    console.print(results_table(results))
    minutes = (time.monotonic() - started) / 60
    console.print(f"done in {minutes:.1f} min; runs in {args.out / 'runs' / 'demo'}")
    return 0
