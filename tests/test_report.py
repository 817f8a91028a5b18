"""`abaw report` and the results notebook on a hand-written runs folder in abaw-train's layout:
statuses, mean +/- std over seeds, the paper-figure rule, table formats, plots, the notebook."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

from abaw_lightning import cli, report
from abaw_lightning.data.loading.windows import WindowDataset, eval_windows
from abaw_lightning.errors import UserError
from abaw_lightning.report.plots import confusion_counts
from abaw_lightning.stages.predictions import frame_images
from abaw_lightning.store.lock import run_lock
from abaw_lightning.store.runs import RunDir, write_view

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "results.ipynb"
PNG = b"\x89PNG\r\n\x1a\n"
TEACHER = {  # seed -> (expr_f1, expr_acc, ccc_v, ccc_a)
    0: (0.40, 0.60, 0.40, 0.30),
    1: (0.45, 0.65, 0.45, 0.30),
    2: (0.50, 0.70, 0.50, 0.36),
}
STUDENT = {0: (0.50, 0.70, 0.50, 0.40), 1: (0.52, 0.72, 0.44, 0.42)}


def best_record(f1: float, acc: float, ccc_v: float, ccc_a: float, epoch: int = 1) -> dict:
    score = 0.67 * f1 + 0.33 * acc
    return {
        "epoch": epoch,
        "step": 10 * (epoch + 1),
        "val/expr_f1": f1,
        "val/expr_acc": acc,
        "val/expr_score": score,
        "val/ccc_v": ccc_v,
        "val/ccc_a": ccc_a,
        "val/total": score + ccc_v + ccc_a,
    }


TEACHER_SETTINGS = {"stage": {"datamodule": {"parts": ["expr", "va", "expr_va"], "seed": 0}}}


def student_settings(shared: bool, lam: float = 0.6) -> dict:
    distillation = {"lam": lam, "shared_annotations": shared}
    return {"stage": {"module": {"distillation": distillation}, "datamodule": {"seed": 0}}}


def write_run(
    runs: Path,
    kind: str,
    key: str,
    settings: dict,
    data_root: Path,
    values: tuple | None,
    predictions=None,
    variant: str | None = None,
    builds_on: dict | None = None,
) -> RunDir:
    """One store run as the pipeline writes it; `values=None`: interrupted (last.ckpt only)."""
    run = RunDir(runs / "store" / kind / key)
    run.checkpoints.mkdir(parents=True)
    identity = {
        "key": key,
        "variant": variant or f"v-{kind}",
        "kind": kind,
        "data": "d1",
        "settings": settings,
        "builds_on": builds_on or {},
    }
    run.identity.write_text(json.dumps(identity))
    run.config.write_text(f"data:\n  root: {data_root}\n")
    run.last.write_bytes(b"checkpoint")
    if values is not None:
        history = [best_record(*(v * 0.5 for v in values), epoch=0), best_record(*values)]
        record = {
            "best": history[1],
            "best_checkpoint": "checkpoints/best.ckpt",
            "epochs": 2,
            "global_step": 20,
            "wall_seconds": 12.5,
            "history": history,
        }
        run.metrics.write_text(json.dumps(record, indent=2))
    if predictions is not None:
        predictions.to_parquet(run.predictions, index=False)
    return run


def view(runs: Path, name: str, seed: int, stages: dict[str, RunDir], experiment: str = "") -> None:
    entries = {stage: (run, f"v-{run.kind}") for stage, run in stages.items()}
    write_view(runs / name / f"seed_{seed}", experiment or name, seed, [], entries)


def predictions_table() -> pd.DataFrame:
    """Four EXPR frames (one unlabelled) and three VA frames."""
    return pd.DataFrame(
        {
            "set": ["expr"] * 4 + ["va"] * 3,
            "image": [f"crops/val/{i:05d}.jpg" for i in range(7)],
            "expr_true": np.array([0, 4, 4, -1, -1, -1, -1], np.int8),
            "expr_pred": np.array([0, 4, 5, 2, 1, 1, 1], np.int8),
            "valence_true": np.array([np.nan] * 4 + [0.5, -0.2, 0.1], np.float32),
            "arousal_true": np.array([np.nan] * 4 + [0.3, 0.0, -0.4], np.float32),
            "valence_pred": np.array([0.1] * 4 + [0.4, -0.1, 0.0], np.float32),
            "arousal_pred": np.array([0.1] * 4 + [0.2, 0.1, -0.3], np.float32),
        }
    )


def prepared_folder(top: Path, synthetic: bool) -> Path:
    """A prepared folder whose manifest names source folders (in an `abaw synth` output or not)."""
    sources = {name: top / "sources" / name for name in ("affwild2", "expw", "afew_va")}
    for folder in sources.values():
        folder.mkdir(parents=True)
    if synthetic:
        (top / "sources" / "synth.json").write_text('{"seed": 0}')
    prepared = top / "prepared"
    prepared.mkdir()
    manifest = {"sources": {k: str(v) for k, v in sources.items()}, "rows": {}}
    (prepared / "manifest.json").write_text(json.dumps(manifest))
    return prepared


@pytest.fixture
def runs(tmp_path) -> Path:
    real = prepared_folder(tmp_path / "real", synthetic=False)
    synth = prepared_folder(tmp_path / "synth", synthetic=True)
    runs = tmp_path / "runs"
    for seed in range(4):
        values = TEACHER.get(seed)
        teacher = write_run(
            runs, "cnn_teacher", f"t{seed}", TEACHER_SETTINGS, real, values, predictions_table()
        )
        stages = {"cnn_teacher": teacher}
        if seed in STUDENT:
            stages["cnn_student"] = write_run(
                runs, "cnn_student", f"s{seed}", student_settings(False), real, STUDENT[seed]
            )
        elif seed == 2:
            broken = write_run(runs, "cnn_student", "s2", student_settings(False), real, None)
            broken.metrics.write_text("{ not json")
            stages["cnn_student"] = broken
        else:
            stages["cnn_student"] = RunDir(runs / "store" / "cnn_student" / "s3")  # not started
        view(runs, "paper_x", seed, stages)
    view(
        runs,
        "synth_y",
        0,
        {"cnn_teacher": write_run(runs, "cnn_teacher", "y0", TEACHER_SETTINGS, synth, TEACHER[0])},
    )
    (runs / "multirun" / "2026-01-01_00-00-00" / "0_synth_y_seed_0").mkdir(parents=True)
    return runs


def test_load_runs_lists_every_seed_with_its_status_and_data_source(runs):
    frame = report.load_runs(runs)
    assert frame[["experiment", "stage", "seed", "status"]].values.tolist() == [
        ["paper_x", "cnn_teacher", 0, "complete"],
        ["paper_x", "cnn_teacher", 1, "complete"],
        ["paper_x", "cnn_teacher", 2, "complete"],
        ["paper_x", "cnn_teacher", 3, "interrupted"],
        ["paper_x", "cnn_student", 0, "complete"],
        ["paper_x", "cnn_student", 1, "complete"],
        ["paper_x", "cnn_student", 2, frame.loc[6, "status"]],
        ["paper_x", "cnn_student", 3, "not started"],
        ["synth_y", "cnn_teacher", 0, "complete"],
    ]
    assert frame.loc[6, "status"].startswith("unreadable metrics.json")
    assert list(frame["data"]) == ["abaw2021"] * 7 + ["unknown", "synthetic"]
    assert math.isnan(frame.loc[3, "total"])
    assert frame.loc[0, "expr_f1"] == 0.40
    one = report.load_runs(runs / "paper_x")  # one experiment's folder works too
    assert set(one["experiment"]) == {"paper_x"}


def test_a_run_being_trained_now_reads_running_with_its_process(runs, capsys):
    interrupted = Path(report.load_runs(runs).loc[3, "path"])
    with run_lock(interrupted):  # the resume of seed 3 in another terminal
        frame = report.load_runs(runs)
        assert cli.main(["report", str(runs)]) == 0
    assert frame.loc[3, "status"].startswith(f"running: process {os.getpid()} on ")
    assert not frame.loc[3, "complete"]
    terminal = " ".join(capsys.readouterr().out.split())
    assert f"not averaged: paper_x/cnn_teacher seed 3: running: process {os.getpid()}" in terminal
    assert report.load_runs(runs).loc[3, "status"] == "interrupted"  # released: as before


def test_summary_is_mean_and_sample_std_over_complete_seeds_with_paper_figures(runs):
    table = report.summary(report.load_runs(runs)).set_index(["experiment", "stage"])
    assert list(table.index) == [
        ("paper_x", "cnn_teacher"),
        ("paper_x", "cnn_student"),
        ("synth_y", "cnn_teacher"),
    ]
    teacher = table.loc[("paper_x", "cnn_teacher")]
    assert (teacher["n"], teacher["seeds"]) == (3, [0, 1, 2])
    assert teacher["incomplete"] == ["seed 3: interrupted"]
    assert teacher["expr_f1_mean"] == pytest.approx(0.45)
    assert teacher["expr_f1_std"] == pytest.approx(0.05)
    assert teacher["expr_acc_mean"] == pytest.approx(0.65)
    assert teacher["expr_score_mean"] == pytest.approx(0.67 * 0.45 + 0.33 * 0.65)
    assert teacher["expr_score_std"] == pytest.approx(0.05)  # 0.67 * 0.05 + 0.33 * 0.05
    assert teacher["ccc_a_mean"] == pytest.approx(0.32)
    assert teacher["ccc_a_std"] == pytest.approx(math.sqrt(0.0012))
    assert teacher["total_mean"] == pytest.approx(0.67 * 0.45 + 0.33 * 0.65 + 0.45 + 0.32)
    assert (teacher["paper_expr"], teacher["paper_valence"], teacher["paper_arousal"]) == (
        0.513,
        0.438,
        0.398,
    )
    student = table.loc[("paper_x", "cnn_student")]
    assert student["n"] == 2
    assert student["ccc_v_std"] == pytest.approx(math.sqrt(0.0018))
    assert student["paper_row"] == "student CNN, no sharing (Eq. 9)"
    assert student["incomplete"][0].startswith("seed 2: unreadable metrics.json")
    assert student["incomplete"][1] == "seed 3: not started"
    synthetic = table.loc[("synth_y", "cnn_teacher")]
    assert synthetic["n"] == 1 and math.isnan(synthetic["expr_f1_std"])
    assert synthetic["data"] == "synthetic" and math.isnan(synthetic["paper_expr"])


def test_data_source_rule(tmp_path):
    assert report.data_source(str(prepared_folder(tmp_path / "a", synthetic=False))) == "abaw2021"
    assert report.data_source(str(prepared_folder(tmp_path / "b", synthetic=True))) == "synthetic"
    moved = prepared_folder(tmp_path / "c", synthetic=False)
    (tmp_path / "c" / "sources" / "expw").rmdir()
    assert report.data_source(str(moved)) == "unknown"  # a source that is gone proves nothing
    assert report.data_source(str(tmp_path / "nowhere")) == "unknown"


def test_cli_prints_json_csv_and_markdown(runs, capsys):
    assert cli.main(["report", str(runs), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["experiment"], r["stage"], r["n"]) for r in records] == [
        ("paper_x", "cnn_teacher", 3),
        ("paper_x", "cnn_student", 2),
        ("synth_y", "cnn_teacher", 1),
    ]
    assert records[2]["expr_f1_std"] is None and records[2]["paper_expr"] is None
    assert cli.main(["report", str(runs), "--format", "csv"]) == 0
    csv = capsys.readouterr().out.splitlines()
    assert csv[0].startswith("row,experiment,variant,settings,stage,n,seeds,incomplete,data,")
    assert csv[1].startswith(
        "paper_x/cnn_teacher,paper_x,,,cnn_teacher,3,0 1 2,seed 3: interrupted,"
    )
    assert cli.main(["report", str(runs / "paper_x"), "--format", "md"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| experiment | stage | n | EXPR | Valence | Arousal | F1 |")
    assert "| paper EXPR | paper V | paper A | incomplete |" in lines[0]
    assert lines[2].startswith("| paper_x | cnn_teacher | 3 | 0.516 ± 0.050 | 0.450 ± 0.050 |")
    assert lines[2].endswith("| 0.513 | 0.438 | 0.398 | seed 3: interrupted |")


def test_cli_out_writes_the_table_and_png_plots(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli.main(["report", str(runs), "--out", str(out)]) == 0
    terminal = capsys.readouterr().out
    assert "0.516 ± 0.050" in terminal and "paper 0.513" in terminal
    assert "not averaged: paper_x/cnn_teacher seed 3: interrupted" in terminal
    assert (out / "summary.md").read_text().startswith("| experiment | stage |")
    pngs = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert pngs == [
        "distributions.png",
        "paper_x/cnn_student/curves.png",
        "paper_x/cnn_teacher/confusion.png",
        "paper_x/cnn_teacher/curves.png",
        "paper_x/cnn_teacher/va_density.png",
        "synth_y/cnn_teacher/curves.png",
    ]
    assert all((out / png).read_bytes().startswith(PNG) for png in pngs)
    assert "no confusion matrix" in terminal  # cnn_student's best seed has no predictions file


def test_best_seed_history_and_confusion_counts(runs):
    frame = report.load_runs(runs)
    assert report.best_seed(frame, "paper_x/cnn_teacher") == 2
    history = report.load_history(frame)
    teacher = history[history["row"] == "paper_x/cnn_teacher"]
    assert teacher[["seed", "epoch"]].values.tolist() == [  # metrics.json's epochs 0, 1
        [0, 1],
        [0, 2],
        [1, 1],
        [1, 2],
        [2, 1],
        [2, 2],
    ]
    assert teacher["ccc_v"].tolist() == pytest.approx([0.2, 0.4, 0.225, 0.45, 0.25, 0.5])
    counts = confusion_counts(report.load_predictions(frame, "paper_x/cnn_teacher", 2))
    expected = np.zeros((7, 7), np.int64)
    expected[0, 0], expected[4, 4], expected[4, 5] = 1, 1, 1
    np.testing.assert_array_equal(counts, expected)
    figure = report.va_density(predictions_table(), "x")
    assert isinstance(figure, matplotlib.figure.Figure) and len(figure.axes) == 3


def test_missing_or_empty_runs_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        report.load_runs(tmp_path / "nowhere")
    with pytest.raises(UserError, match="no experiment in"):
        report.load_runs(tmp_path)
    old = tmp_path / "paper_x" / "seed_0" / "cnn_teacher"  # the layout before the store
    old.mkdir(parents=True)
    (old / "metrics.json").write_text("{}")
    with pytest.raises(UserError, match="runs of the layout before the stage store"):
        report.load_runs(tmp_path)


def test_frame_images_of_gru_windows_are_the_masked_frames_once_each(tmp_path):
    table = pd.DataFrame(
        {
            "image": [f"v{v}/{f:05d}.jpg" for v, n in ((0, 5), (1, 2)) for f in range(n)],
            "video": ["v0"] * 5 + ["v1"] * 2,
            "frame": [1, 2, 3, 4, 5, 1, 2],
            "expr": np.zeros(7, np.int8),
            "valence": np.zeros(7, np.float32),
            "arousal": np.zeros(7, np.float32),
        }
    )
    windows, mask = eval_windows(table, length=3)
    images = frame_images(WindowDataset(table, tmp_path, windows, None, mask))
    assert images.tolist() == table["image"].tolist()


def test_notebook_executes_on_a_runs_folder(runs, monkeypatch):
    monkeypatch.setenv("ABAW_RUNS_DIR", str(runs))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 + 3 + 2  # distributions; curves per stage; teacher's two plots
    tables = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "0.516 ± 0.050" in tables and "seed 3: interrupted" in tables


def sweep_runs(runs: Path, real: Path) -> None:
    """A lam sweep as `abaw-train -m ... lam=0.3,0.9 seed=0,1` leaves it: one teacher per seed
    shared by both views, one student per value and seed."""
    for seed in (0, 1):
        teacher = write_run(runs, "cnn_teacher", f"st{seed}", TEACHER_SETTINGS, real, TEACHER[seed])
        for lam in (0.3, 0.9):
            values = tuple(v + lam / 10 for v in STUDENT[seed])
            student = write_run(
                runs,
                "cnn_student",
                f"s{lam}-{seed}",
                student_settings(True, lam),
                real,
                values,
                variant=f"lam{lam}",
                builds_on={"teacher": {"kind": "cnn_teacher", "key": f"st{seed}"}},
            )
            stages = {
                "cnn_teacher": (teacher, "v-cnn_teacher"),
                "cnn_student": (student, f"lam{lam}"),
            }
            write_view(runs / f"sweep+lam={lam}" / f"seed_{seed}", "sweep", seed, [], stages)


def test_sweep_variants_are_rows_named_by_what_differs(tmp_path):
    real = prepared_folder(tmp_path / "real", synthetic=False)
    runs = tmp_path / "runs"
    sweep_runs(runs, real)
    table = report.summary(report.load_runs(runs))
    assert table[["row", "n"]].values.tolist() == [
        ["sweep/cnn_teacher", 2],  # shared by both variants: one row, each seed once
        ["sweep/cnn_student[lam=0.3]", 2],
        ["sweep/cnn_student[lam=0.9]", 2],
    ]
    assert table["variant"].tolist() == ["", "lam=0.3", "lam=0.9"]
    assert table.loc[1, "expr_f1_mean"] == pytest.approx(0.51 + 0.03)


def test_paired_comparison_equals_scipy_and_a_hand_computed_interval(tmp_path, capsys):
    from scipy import stats

    real = prepared_folder(tmp_path / "real", synthetic=False)
    runs = tmp_path / "runs"
    sweep_runs(runs, real)
    frame = report.load_runs(runs)
    a, b = "sweep/cnn_teacher", "sweep/cnn_student[lam=0.9]"
    table = report.compare(frame, a, b).set_index("metric")
    # ccc_v per seed: teacher 0.40, 0.45; student (lam 0.9) 0.59, 0.53 -> differences 0.19, 0.08
    d = np.array([0.19, 0.08])
    row = table.loc["ccc_v"]
    assert row["n"] == 2 and row["seeds"] == [0, 1]
    assert row["difference"] == pytest.approx(0.135)
    half = 12.706204736174707 * d.std(ddof=1) / math.sqrt(2)  # t(0.975, df=1), by hand
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.135 - half, 0.135 + half))
    expected = stats.ttest_rel([0.59, 0.53], [0.40, 0.45]).pvalue
    assert row["p_value"] == pytest.approx(expected)
    t = 0.135 / (d.std(ddof=1) / math.sqrt(2))  # the paired t statistic, by hand
    assert row["p_value"] == pytest.approx(2 * stats.t.sf(t, 1))
    assert cli.main(["report", str(runs), "--compare", a, b, "--format", "csv"]) == 0
    csv = capsys.readouterr().out.splitlines()
    assert csv[0].startswith("metric,a,b,a_mean,b_mean,difference,ci_low,ci_high,p_value,n")
    assert cli.main(["report", str(runs), "--compare", a, "sweep/nothing"]) == 2
    assert "rows are: sweep/cnn_teacher, sweep/cnn_student[lam=0.3]," in capsys.readouterr().err


def optimizer_sweep(runs: Path, real: Path, experiment: str = "sweep", stage: str = "cnn_student"):
    """Two student variants that differ in four settings (a label longer than MAX_LABEL), keys
    alike in their first 8 characters, over seeds 0 and 1, sharing one teacher per seed."""
    variants = {
        "a1b2c3d4e5f6": {"lam": 0.3, "lr": 0.001, "momentum": 0.9, "weight_decay": 0.0001},
        "a1b2c3d4ffff": {"lam": 0.9, "lr": 0.01, "momentum": 0.95, "weight_decay": 0.0005},
    }
    for seed in (0, 1):
        teacher = write_run(runs, "cnn_teacher", f"ot{seed}", TEACHER_SETTINGS, real, TEACHER[seed])
        for number, (variant, chosen) in enumerate(variants.items()):
            settings = student_settings(True, chosen["lam"])
            settings["stage"]["module"]["optimizer"] = {
                k: v for k, v in chosen.items() if k != "lam"
            }
            values = tuple(v + number / 10 for v in STUDENT[seed])
            student = write_run(
                runs,
                "cnn_student",
                f"o{number}-{seed}",
                settings,
                real,
                values,
                variant=variant,
                builds_on={"teacher": {"kind": "cnn_teacher", "key": f"ot{seed}"}},
            )
            stages = {"cnn_teacher": (teacher, "v-cnn_teacher"), stage: (student, variant)}
            write_view(
                runs / f"{experiment}+{number}" / f"seed_{seed}", experiment, seed, [], stages
            )


LONG_A = "lam=0.3,lr=0.001,momentum=0.9,weight_decay=0.0001"
LONG_B = "lam=0.9,lr=0.01,momentum=0.95,weight_decay=0.0005"


def test_rows_name_the_fewest_settings_with_a_legend_of_all_and_compare_takes_either(
    tmp_path, capsys, recwarn
):
    runs = tmp_path / "runs"
    optimizer_sweep(runs, prepared_folder(tmp_path / "real", synthetic=False))
    table = report.summary(report.load_runs(runs))
    # lam, lr, momentum and weight decay all differ: lam alone tells the variants apart
    assert table[["row", "settings"]].values.tolist() == [
        ["sweep/cnn_teacher", ""],
        ["sweep/cnn_student[lam=0.3]", LONG_A],
        ["sweep/cnn_student[lam=0.9]", LONG_B],
    ]
    out = tmp_path / "report"
    assert cli.main(["report", str(runs), "--out", str(out)]) == 0
    terminal = capsys.readouterr().out
    legend = terminal.split("variants whose names show only some of their settings:\n", 1)
    assert legend[1].splitlines()[:2] == [
        f"  sweep/cnn_student[lam=0.3]: {LONG_A}",
        f"  sweep/cnn_student[lam=0.9]: {LONG_B}",
    ]
    assert LONG_A not in legend[0]  # the table shows the names
    assert "wrote 5 files to" in terminal  # table, distributions, 3 curves (no predictions)
    assert (out / "sweep" / "cnn_student" / "lam=0.3" / "curves.png").is_file()
    markdown = (out / "summary.md").read_text().splitlines()
    assert markdown[0].startswith("| experiment | variant | settings | stage | n |")
    assert markdown[3].startswith(f"| sweep | lam=0.3 | {LONG_A} | cnn_student | 2 |")
    assert not [w for w in recwarn if "layout" in str(w.message)]
    frame = report.load_runs(runs)
    by_name = report.compare(frame, "sweep/cnn_teacher", "sweep/cnn_student[lam=0.9]")
    by_settings = report.compare(frame, "sweep/cnn_teacher", f"sweep/cnn_student[{LONG_B}]")
    pd.testing.assert_frame_equal(by_name, by_settings)
    assert set(by_settings["b"]) == {"sweep/cnn_student[lam=0.9]"}  # named as in the table
    # ccc_v: teacher 0.40, 0.45; variant b 0.60, 0.54
    assert by_name.set_index("metric").loc["ccc_v", "difference"] == pytest.approx(0.145)
    capsys.readouterr()
    b = "sweep/cnn_student[lam=0.9]"
    assert (
        cli.main(["report", str(runs), "--compare", "sweep/cnn_teacher", b, "--out", str(out)]) == 0
    )
    shown = capsys.readouterr().out
    assert f"variants whose names show only some of their settings:\n  {b}: {LONG_B}\n" in shown
    header = (out / "comparison.md").read_text().splitlines()[0]
    assert header == f"A = sweep/cnn_teacher, B = {b} ({LONG_B}) (paired by seed)"


def test_a_variant_that_never_started_leaves_the_other_labels_alone(tmp_path):
    real = prepared_folder(tmp_path / "real", synthetic=False)
    runs = tmp_path / "runs"
    sweep_runs(runs, real)
    teacher = RunDir(runs / "store" / "cnn_teacher" / "st0")
    for key, folder in (("c0ffee001", False), ("c0ffee002", True)):  # folder: failed early
        never = RunDir(runs / "store" / "cnn_student" / f"never-{key}")
        if folder:
            never.root.mkdir(parents=True)
        stages = {"cnn_teacher": (teacher, "v-cnn_teacher"), "cnn_student": (never, key)}
        write_view(runs / f"sweep+lam={key}" / "seed_0", "sweep", 0, [], stages)
    frame = report.load_runs(runs)
    students = frame[frame["stage"] == "cnn_student"]
    assert students[["variant", "seed", "status"]].values.tolist() == [
        ["lam=0.3", 0, "complete"],
        ["lam=0.3", 1, "complete"],
        ["lam=0.9", 0, "complete"],
        ["lam=0.9", 1, "complete"],
        ["vc0ffee001", 0, "not started"],
        ["vc0ffee002", 0, "started"],
    ]
    assert set(students["settings"].iloc[4:]) == {report.runs.UNKNOWN}
    with pytest.raises(UserError, match=r"names several rows \(sweep/cnn_student\[vc0ffee001\]"):
        report.compare(frame, "sweep/cnn_teacher", f"sweep/cnn_student[{report.runs.UNKNOWN}]")
    with pytest.raises(UserError, match="has no complete run to compare \\(seed 0: not started\\)"):
        report.compare(frame, "sweep/cnn_teacher", "sweep/cnn_student[vc0ffee001]")


def test_a_setting_only_some_variants_have_reads_unset(tmp_path):
    real = prepared_folder(tmp_path / "real", synthetic=False)
    runs = tmp_path / "runs"
    sweep_runs(runs, real)
    settings = student_settings(True, 0.3)
    settings["stage"]["module"]["distillation"]["temperature"] = 2
    extra = write_run(runs, "cnn_student", "temp", settings, real, STUDENT[0], variant="lamT")
    teacher = RunDir(runs / "store" / "cnn_teacher" / "st0")
    stages = {"cnn_teacher": (teacher, "v-cnn_teacher"), "cnn_student": (extra, "lamT")}
    write_view(runs / "sweep+temperature=2" / "seed_0", "sweep", 0, [], stages)
    frame = report.load_runs(runs)
    # the extra variant builds on no teacher: its teacher's settings are unset, named by role
    students = frame[frame["stage"] == "cnn_student"].drop_duplicates("settings")
    parts = "['expr', 'va', 'expr_va']"
    assert students[["variant", "settings"]].values.tolist() == [
        ["temperature=2", "lam=0.3,temperature=2,teacher.data=unset,teacher.parts=unset"],
        [
            "lam=0.3,temperature=unset",
            f"lam=0.3,temperature=unset,teacher.data=d1,teacher.parts={parts}",
        ],
        ["lam=0.9", f"lam=0.9,temperature=unset,teacher.data=d1,teacher.parts={parts}"],
    ]  # each named by the fewest settings that tell it from the other two


def test_compare_with_out_writes_the_comparison_file_too(tmp_path, capsys):
    from scipy import stats

    runs = tmp_path / "runs"
    sweep_runs(runs, prepared_folder(tmp_path / "real", synthetic=False))
    a, b, out = "sweep/cnn_teacher", "sweep/cnn_student[lam=0.9]", tmp_path / "cmp"
    assert cli.main(["report", str(runs), "--compare", a, b, "--out", str(out)]) == 0
    terminal = capsys.readouterr().out
    assert "paired over 2 seeds [0, 1]" in terminal and f"wrote {out / 'comparison.md'}" in terminal
    lines = (out / "comparison.md").read_text().splitlines()
    assert lines[0] == f"A = {a}, B = {b} (paired by seed)"
    d = np.array([0.19, 0.08])  # ccc_v differences per seed (student lam 0.9 - teacher)
    half = 12.706204736174707 * d.std(ddof=1) / math.sqrt(2)
    p = stats.ttest_rel([0.59, 0.53], [0.40, 0.45]).pvalue
    valence = f"| Valence | 0.425 | 0.560 | +0.135 | [{0.135 - half:+.3f}, {0.135 + half:+.3f}] |"
    assert f"{valence} {p:.3f} | 2 |" in lines
    csv = ["--out", str(out), "--format", "csv"]
    assert cli.main(["report", str(runs), "--compare", a, b, *csv]) == 0
    written = pd.read_csv(out / "comparison.csv").set_index("metric")
    assert written.loc["ccc_v", "difference"] == pytest.approx(0.135)
    assert written.loc["ccc_v", "p_value"] == pytest.approx(p)


def test_a_view_or_one_seed_folder_of_it_is_a_runs_folder_too(runs, capsys):
    one = report.load_runs(runs / "paper_x" / "seed_1")
    assert one[["row", "seed", "status"]].values.tolist() == [
        ["paper_x/cnn_teacher", 1, "complete"],
        ["paper_x/cnn_student", 1, "complete"],
    ]
    assert cli.main(["report", str(runs / "paper_x" / "seed_1"), "--format", "json"]) == 0
    assert [r["n"] for r in json.loads(capsys.readouterr().out)] == [1, 1]
    with pytest.raises(UserError, match=r"or a view's seed folder \(<runs_dir>/<view>/seed_<s>/"):
        report.load_runs(runs / "store")


def test_best_epoch_counts_from_one_and_the_files_keep_lightnings_index(runs):
    frame = report.load_runs(runs)
    teacher = frame.iloc[0]
    saved = json.loads((Path(teacher["path"]) / "metrics.json").read_text())
    assert saved["best"]["epoch"] == 1  # Lightning's second epoch
    assert teacher["best_epoch"] == 2
    assert math.isnan(frame.loc[3, "best_epoch"])  # interrupted


@pytest.mark.parametrize(
    ("p_value", "shown"),
    [
        (0.0371, "0.037"),
        (0.37, "0.370"),
        (1.0, "1.000"),
        (0.001, "0.001"),
        (0.0009996, "< 0.001"),  # would round to 0.001
        (1e-12, "< 0.001"),
        (math.nan, "–"),
    ],
)
def test_p_values_show_three_decimals_or_below_one_thousandth(p_value, shown):
    from abaw_lightning.report.compare import format_p

    assert format_p(p_value) == shown


def test_figure_folders_are_one_bounded_safe_name_per_part():
    from abaw_lightning.report.report_command import MAX_NAME, row_folder, safe_name

    assert safe_name("val/total") == "val%2Ftotal"
    assert safe_name("lam=0.3") == "lam=0.3"
    assert safe_name("..") == "%2E%2E"
    long, other = "a/" * 150, "a/" * 149 + "b/"
    assert len(safe_name(long)) <= MAX_NAME and "/" not in safe_name(long)
    assert safe_name(long) != safe_name(other)  # cut names end with a digest of the whole
    assert row_folder("e", "s", "data.root=/x/y") == Path("e/s/data.root=%2Fx%2Fy")
    assert row_folder("e", "s", "") == Path("e/s")


def test_plural_and_numbers_that_the_terminal_never_cuts(runs):
    from rich.console import Console

    from abaw_lightning.report.tables import rich_table, widened
    from abaw_lightning.text import plural

    assert [plural(1, "seed"), plural(2, "seed"), plural(0, "file")] == [
        "1 seed",
        "2 seeds",
        "0 files",
    ]
    table = report.summary(report.load_runs(runs))
    for width in (70, 125):  # narrower than the table: text folds, numbers stay whole
        narrow = Console(width=width, record=True)
        narrow.print(widened(rich_table(table, "t"), width), crop=False)
        text = narrow.export_text()
        assert "0.516 ± 0.050" in text and "1.456 ± 0.014" in text and "paper 0.513" in text
        assert "experiment" in text and "…" not in text


def test_distribution_labels_of_long_rows_leave_constrained_layout_room():
    import warnings
    from io import BytesIO

    names = [
        ("paper_student_no_sharing", "cnn_student_no_sharing", "x" * 39 + str(i)) for i in range(3)
    ]
    frame = pd.DataFrame(
        [
            {"row": f"{e}/{s}[{v}]", "experiment": e, "stage": s, "variant": v, "complete": True}
            | {name: 0.1 * seed for name in report.tables.DISPLAY}
            for e, s, v in names
            for seed in range(3)
        ]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report.metric_distributions(frame).savefig(BytesIO(), dpi=110)
    assert [str(w.message) for w in caught] == []


def test_validation_curves_count_whole_epochs_from_one(runs):
    frame = report.load_runs(runs)
    history = report.load_history(frame)
    for rows in (history, history[history["epoch"] == 1]):  # two epochs, and a single one
        axis = report.validation_curves(rows, "x").axes[0]
        low, high = axis.get_xlim()
        ticks = [tick for tick in axis.get_xticks() if low <= tick <= high]
        assert ticks == sorted(rows["epoch"].unique())
        assert axis.get_xlabel() == "epoch"


def test_a_report_into_its_old_folder_removes_only_the_files_it_no_longer_writes(tmp_path):
    runs = tmp_path / "runs"
    sweep_runs(runs, prepared_folder(tmp_path / "real", synthetic=False))
    out = tmp_path / "report"
    assert cli.main(["report", str(runs), "--out", str(out)]) == 0
    assert (out / "sweep" / "cnn_student" / "lam=0.3" / "curves.png").is_file()
    (out / "notes.txt").write_text("mine")
    (out / "sweep" / "cnn_student" / "lam=0.9" / "figure.svg").write_text("mine too")
    # one view alone: one student variant, so its row (and folder) has no variant any more
    assert cli.main(["report", str(runs / "sweep+lam=0.3"), "--out", str(out)]) == 0
    assert (out / "sweep" / "cnn_student" / "curves.png").is_file()
    assert not (out / "sweep" / "cnn_student" / "lam=0.3").exists()  # stale and emptied: gone
    assert not (out / "sweep" / "cnn_student" / "lam=0.9" / "curves.png").exists()
    assert (out / "sweep" / "cnn_student" / "lam=0.9" / "figure.svg").read_text() == "mine too"
    assert (out / "notes.txt").read_text() == "mine"
