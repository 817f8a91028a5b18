"""`abaw synth` then `abaw prepare`: every frame the generator meant to be kept is kept."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from abaw_lightning.data.ingest.balancing import decimate_every, decimate_expr
from abaw_lightning.data.ingest.prepare import prepare
from abaw_lightning.data.synth import generate


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    root = tmp_path_factory.mktemp("roundtrip")
    record = generate(root / "synth", seed=3, scale="tiny", workers=1)
    manifest = prepare(
        root / "synth" / "affwild2",
        root / "prepared",
        expw=root / "synth" / "expw",
        afew_va=root / "synth" / "afew_va",
        affectnet=root / "synth" / "affectnet",
        workers=1,
    )
    return record, manifest, root / "prepared"


def table(prepared: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(prepared / f"{name}.parquet")


def test_affwild2_frames_kept_exactly(round_trip):
    record, manifest, prepared = round_trip
    expected = record["affwild2"]["expected"]
    for task in ("expr", "va"):
        for split, name in (("train", f"train_{task}"), ("validation", f"val_{task}")):
            rows = table(prepared, f"affwild2/{name}")
            assert len(rows) == expected[task][split]["kept"], name
            assert (prepared / rows["image"]).map(Path.is_file).all()
    train_expr = table(prepared, "affwild2/train_expr")
    counts = np.bincount(train_expr["expr"], minlength=7).tolist()
    assert counts == expected["expr"]["train"]["class_counts"]
    shared = train_expr["valence"].notna().sum()
    assert shared == expected["expr_train_with_shared_va"]
    shared_expr = (table(prepared, "affwild2/train_va")["expr"] >= 0).sum()
    assert shared_expr == expected["va_train_with_shared_expr"]
    assert manifest["affwild2_videos"]["with_both_annotations"] == expected["videos_with_both"]


def test_parts_hold_the_decimated_affwild2_rows_and_every_other_source(round_trip):
    record, _, prepared = round_trip
    train_expr = table(prepared, "affwild2/train_expr")
    train_va = table(prepared, "affwild2/train_va")
    expr_part = table(prepared, "parts/expr")
    va_part = table(prepared, "parts/va")
    keep_expr = decimate_expr(train_expr["expr"].to_numpy())
    affwild2_expr = expr_part[expr_part["source"] == "affwild2"]
    assert affwild2_expr["image"].tolist() == train_expr["image"][keep_expr].tolist()
    keep_va = decimate_every(len(train_va), 5)
    affwild2_va = va_part[va_part["source"] == "affwild2"]
    assert affwild2_va["image"].tolist() == train_va["image"][keep_va].tolist()
    assert (expr_part["source"] == "expw").sum() == record["expw"]["expected"]["kept_faces"]
    assert (va_part["source"] == "afew_va").sum() == record["afew_va"]["expected"]["kept_frames"]
    usable = record["affectnet"]["expected"]["usable_rows_with_va"]
    assert len(table(prepared, "parts/expr_va")) == sum(usable.values())
    for part in ("expr", "va", "expr_va"):
        rows = table(prepared, f"parts/{part}")
        assert (rows["weight"] > 0).all()
        assert (prepared / rows["image"]).map(Path.is_file).all()
