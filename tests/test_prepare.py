"""`abaw prepare`: exact parts, shared labels within a split, decimation, weights, manifest,
square crops of at least 134 px, re-runs that reuse crops, user errors (crop geometry:
test_crops.py; bad frames, stale crops, interruptions: test_prepare_integrity.py)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import fixtures_formats as ff
import numpy as np
import pandas as pd
import pytest

from abaw_lightning.cli import main
from abaw_lightning.data.ingest.prepare import prepare
from abaw_lightning.errors import UserError

COLUMNS = ["image", "source", "video", "frame", "expr", "valence", "arousal"]


def va_line(frame: int) -> str:
    return f"{0.05 * frame:.2f},{-0.05 * frame:.2f}"


def write_affwild2(root: Path) -> Path:
    """EXPR train a, b; EXPR val c; VA train a; VA val b, c (b crosses splits between tasks)."""
    expr_a = ["0"] * 4 + ["-1"] + ["0"] * 9  # frame 5 unlabelled, frame 14 has no jpg
    ff.affwild2_annotation(root, "expr", "Train_Set", "a", expr_a)
    ff.affwild2_annotation(root, "expr", "Train_Set", "b", ["4", "4", "4", "5", "5", "1"])
    ff.affwild2_annotation(root, "expr", "Validation_Set", "c", ["2", "3"], newline_at_end=False)
    va_a = [va_line(f) if f != 3 else "-5,-5" for f in range(1, 14)]
    ff.affwild2_annotation(root, "va", "Train_Set", "a", va_a)
    ff.affwild2_annotation(root, "va", "Validation_Set", "b", ["0.1,0.2", "0.3,0.4"])
    ff.affwild2_annotation(root, "va", "Validation_Set", "c", ["0.5,0.5", "-0.5,-0.5", "0,0"])
    ff.affwild2_frames(root, "a", [*range(1, 14), 15])
    ff.affwild2_frames(root, "b", range(1, 7))
    ff.affwild2_frames(root, "c", range(1, 4))
    return root


def write_sources(tmp_path: Path) -> dict[str, Path]:
    """ExpW (2 faces of one image, a corrupt and a missing image), AFEW-VA, AffectNet."""
    expw = ff.expw_dataset(
        tmp_path / "expw",
        [
            "p.jpg 0 2 2 18 18 5.0 3",
            "p.jpg 1 0 10 30 20 5.0 6",
            "q.jpg 0 0 0 10 10 5.0 0",
            "r.jpg 0 0 0 5 5 1.0 1",
        ],
        {"p.jpg": np.full((24, 32, 3), 90, np.uint8), "q.jpg": b"\xff\xd8 not a jpeg"},
    )
    afew = tmp_path / "afew_va"
    frames = {k: ff.afew_va_frame(5, -3) for k in ("00000", "00001", "00002")}
    ff.afew_va_clip(
        afew, "001", frames, ["00000", "00001"], image=np.zeros((200, 200, 3), np.uint8)
    )
    image = np.full((100, 100, 3), 60, np.uint8)
    affectnet = ff.affectnet_dataset(
        tmp_path / "affectnet",
        [
            ff.affectnet_row("1/a.jpg", 1, 0.5, -0.3),
            ff.affectnet_row("1/b.jpg", 1, -0.1, 0.2),
            ff.affectnet_row("1/c.jpg", 3, -2, -2),
            ff.affectnet_row("1/d.tif", 0, 0, 0),
            ff.affectnet_row("1/e.jpg", 8, -2, -2),
            ff.affectnet_row("1/bad.jpg", 2, 0.1, 0.1),
        ],
        [ff.affectnet_row("2/v.bmp", 5, 0.25, 0.75)],
        {
            **{p: image for p in ("1/a.jpg", "1/b.jpg", "1/c.jpg", "1/d.tif", "1/e.jpg")},
            "1/bad.jpg": b"garbage",
            "2/v.bmp": image,
        },
        wrapper="AffectNet_manual",
    )
    return {
        "affwild2": write_affwild2(tmp_path / "affwild2"),
        "expw": expw,
        "afew_va": afew,
        "affectnet": affectnet,
    }


def rows_of(table: pd.DataFrame, *columns: str) -> list[tuple]:
    return [tuple(row) for row in table[list(columns)].itertuples(index=False)]


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*.jpg"))}


@pytest.fixture
def sources(tmp_path):
    return write_sources(tmp_path)


def prepare_all(sources: dict[str, Path], out: Path, workers: int = 1, **kwargs) -> dict:
    """`prepare` of every source `write_sources` wrote."""
    return prepare(
        sources["affwild2"],
        out,
        expw=sources["expw"],
        afew_va=sources["afew_va"],
        affectnet=sources["affectnet"],
        workers=workers,
        **kwargs,
    )


def test_prepare_all_sources(tmp_path, sources):
    out = tmp_path / "prepared"
    manifest = prepare_all(sources, out, workers=2)

    expr = pd.read_parquet(out / "parts" / "expr.parquet")
    assert list(expr.columns) == [*COLUMNS, "weight"]
    # decimation: Neutral rows 0, 10 of a (frame 5 unlabelled, 14 without jpg are not numbered),
    # then Happiness / Sadness at even renumbered positions.
    assert rows_of(expr, "image", "source", "video", "frame", "expr") == [
        ("affwild2_images/a/00001.jpg", "affwild2", "a", 1, 0),
        ("affwild2_images/a/00012.jpg", "affwild2", "a", 12, 0),
        ("affwild2_images/b/00001.jpg", "affwild2", "b", 1, 4),
        ("affwild2_images/b/00003.jpg", "affwild2", "b", 3, 4),
        ("affwild2_images/b/00004.jpg", "affwild2", "b", 4, 5),
        ("affwild2_images/b/00006.jpg", "affwild2", "b", 6, 1),
        ("crops/expw/p_0.jpg", "expw", "", -1, 4),
        ("crops/expw/p_1.jpg", "expw", "", -1, 0),
    ]
    np.testing.assert_allclose(expr["valence"], [0.05, 0.6] + [np.nan] * 6, rtol=1e-6)
    np.testing.assert_allclose(expr["arousal"], [-0.05, -0.6] + [np.nan] * 6, rtol=1e-6)
    np.testing.assert_allclose(expr["weight"], [1 / 3] * 4 + [1, 1] + [1 / 3] * 2)
    assert all(pd.api.types.is_string_dtype(expr[c]) for c in ("image", "source", "video"))
    assert expr.dtypes.astype(str).tolist()[3:] == [
        "int64",
        "int8",
        "float32",
        "float32",
        "float64",
    ]

    va = pd.read_parquet(out / "parts" / "va.parquet")
    assert rows_of(va, "image", "video", "frame", "expr") == [
        ("affwild2_images/a/00001.jpg", "a", 1, 0),
        ("affwild2_images/a/00007.jpg", "a", 7, 0),
        ("affwild2_images/a/00012.jpg", "a", 12, 0),
        ("crops/afew_va/001/00000.jpg", "001", 0, -1),
        ("crops/afew_va/001/00001.jpg", "001", 1, -1),
    ]
    np.testing.assert_allclose(va["valence"], [0.05, 0.35, 0.6, 0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(va["arousal"], [-0.05, -0.35, -0.6, -0.3, -0.3], rtol=1e-6)
    np.testing.assert_allclose(va["weight"], [1, 1, 1, 0.5, 0.5])

    expr_va = pd.read_parquet(out / "parts" / "expr_va.parquet")
    assert rows_of(expr_va, "image", "source", "expr") == [
        ("crops/affectnet/1/a.jpg", "affectnet", 4),
        ("crops/affectnet/1/b.jpg", "affectnet", 4),
        ("crops/affectnet/1/d.jpg", "affectnet", 0),
        ("crops/affectnet/2/v.jpg", "affectnet", 2),
    ]
    np.testing.assert_allclose(expr_va["valence"], [0.5, -0.1, 0, 0.25], rtol=1e-6)
    np.testing.assert_allclose(expr_va["weight"], [0.75, 0.75, 1, 1])

    # Aff-Wild2 tables: all frames, shared labels only within the split.
    train_expr = pd.read_parquet(out / "affwild2" / "train_expr.parquet")
    assert rows_of(train_expr, "video", "frame") == [
        *[("a", f) for f in (1, 2, 3, 4, *range(6, 14))],
        *[("b", f) for f in range(1, 7)],
    ]
    no_va = rows_of(train_expr[train_expr["valence"].isna()], "video", "frame")
    assert no_va == [("a", 3)] + [("b", f) for f in range(1, 7)]
    train_va = pd.read_parquet(out / "affwild2" / "train_va.parquet")
    assert rows_of(train_va, "frame", "expr") == [
        (f, -1 if f == 5 else 0) for f in [1, 2, *range(4, 14)]
    ]
    val_expr = pd.read_parquet(out / "affwild2" / "val_expr.parquet")
    assert rows_of(val_expr, "video", "frame", "expr") == [("c", 1, 2), ("c", 2, 3)]
    np.testing.assert_allclose(val_expr["valence"], [0.5, -0.5])
    val_va = pd.read_parquet(out / "affwild2" / "val_va.parquet")
    # b is EXPR train and VA validation: its validation VA rows get no expression.
    assert rows_of(val_va, "video", "frame", "expr") == [
        ("b", 1, -1),
        ("b", 2, -1),
        ("c", 1, 2),
        ("c", 2, 3),
        ("c", 3, -1),
    ]
    assert list(val_va.columns) == COLUMNS

    link = out / "affwild2_images"
    assert (
        link.is_symlink() and link.resolve() == (sources["affwild2"] / "cropped_aligned").resolve()
    )
    assert (out / expr["image"][0]).is_file()

    for image in [*expr["image"][6:], *va["image"][3:], *expr_va["image"]]:
        assert cv2.imread(str(out / image)).shape == (134, 134, 3)  # all faces under 134 px

    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["sources"] == {k: str(v.resolve()) for k, v in sources.items()}
    assert manifest["options"]["expr_va_source_used"] == "affectnet"
    assert manifest["rows"] == {
        "parts/expr": {"affwild2": 6, "expw": 2, "total": 8},
        "parts/va": {"affwild2": 3, "afew_va": 2, "total": 5},
        "parts/expr_va": {"affectnet": 4, "total": 4},
        "affwild2/train_expr": {"affwild2": 18, "total": 18},
        "affwild2/train_va": {"affwild2": 12, "total": 12},
        "affwild2/val_expr": {"affwild2": 2, "total": 2},
        "affwild2/val_va": {"affwild2": 5, "total": 5},
    }
    assert manifest["decimation"] == {
        "expr": {"affwild2_before": 18, "affwild2_after": 6},
        "va": {"affwild2_before": 12, "affwild2_after": 3},
    }
    assert manifest["affwild2_videos"] == {
        "train_expr": 2,
        "train_va": 1,
        "val_expr": 1,
        "val_va": 2,
        "with_both_annotations": 3,
        "with_both_annotations_train": 1,
        "with_both_annotations_val": 1,
    }
    counts = {name: entry["counts"] for name, entry in manifest["skipped"].items()}
    assert counts == {
        "affwild2": {
            "EXPR train: annotated frame has no jpg": 1,
            "EXPR train: not annotated (-1)": 1,
            "VA train: not annotated (-5)": 1,
        },
        "expw": {"corrupt or unreadable image": 1, "image missing": 1},
        "afew_va": {"frame image missing": 1},
        "affectnet": {
            "corrupt or unreadable image": 1,
            "expression 8 (none)": 1,
            "valence/arousal not annotated (-2)": 1,
        },
    }
    q = sources["expw"] / "image" / "origin" / "q.jpg"
    assert manifest["skipped"]["expw"]["examples"]["corrupt or unreadable image"] == [str(q)]
    fresh = {"reused": 0, "redone": 0, "stale_deleted": 0}
    assert manifest["crops"] == {
        "expw": {"made": 2, "failed": 1, **fresh},
        "afew_va": {"made": 2, "failed": 0, **fresh},
        "affectnet": {"made": 4, "failed": 1, **fresh},
    }
    assert manifest["affwild2_frames"] == {"checked": 22, "bad": 0, "bad_files": {}}

    # a re-run into the same folder reuses every crop and writes the same tables
    before = mtimes(out / "crops")
    again = prepare(
        sources["affwild2"],
        out,
        expw=sources["expw"],
        afew_va=sources["afew_va"],
        affectnet=sources["affectnet"],
        workers=1,
    )
    assert mtimes(out / "crops") == before and len(before) == 8
    assert again["crops"]["expw"] == {**fresh, "made": 0, "reused": 2, "failed": 1}
    assert again["rows"] == manifest["rows"]
    assert again["data_id"] == manifest["data_id"]
    pd.testing.assert_frame_equal(pd.read_parquet(out / "parts" / "expr.parquet"), expr)


def test_prepare_affwild2_only_via_cli(tmp_path, capsys):
    root = write_affwild2(tmp_path / "affwild2")
    out = tmp_path / "prepared"

    assert main(["prepare", "--affwild2", str(root), "--out", str(out), "--workers", "1"]) == 0

    printed = capsys.readouterr().out
    for flag in ("--expw", "--afew-va", "--affectnet"):
        assert f"no {flag} given" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"] == {
        "expr_va_source": "affectnet",
        "expr_va_source_used": "affwild2",
        "workers": 1,
        "crop_format": 2,
        "crop_min": 134,
        "crop_max": 268,
        "jpeg_quality": 95,
    }
    assert manifest["sources"]["expw"] is None
    # train frames with both labels: a1, a2, a4, a6..a13 (11 rows); every 3rd from row 0.
    expr_va = pd.read_parquet(out / "parts" / "expr_va.parquet")
    assert rows_of(expr_va, "video", "frame", "expr") == [("a", f, 0) for f in (1, 6, 9, 12)]
    np.testing.assert_allclose(expr_va["valence"], [0.05, 0.3, 0.45, 0.6], rtol=1e-6)
    # one class (1/4 each) and four VA bins (1 each): (1/4 + 1) / max = 1
    np.testing.assert_allclose(expr_va["weight"], [1.0, 1.0, 1.0, 1.0])
    assert manifest["decimation"]["expr_va"] == {"affwild2_before": 11, "affwild2_after": 4}
    assert manifest["rows"]["parts/expr"] == {"affwild2": 6, "total": 6}
    assert not (out / "crops").exists()


def test_empty_part_is_warned(tmp_path, capsys):
    root = tmp_path / "affwild2"
    ff.affwild2_annotation(root, "expr", "Train_Set", "a", ["1", "2"])
    ff.affwild2_annotation(root, "va", "Train_Set", "z", ["0.1,0.1"])
    ff.affwild2_annotation(root, "expr", "Validation_Set", "y", ["3"])
    ff.affwild2_annotation(root, "va", "Validation_Set", "y", ["0.2,0.2"])
    for stem in ("a", "z", "y"):
        ff.affwild2_frames(root, stem, [1, 2])

    manifest = prepare(root, tmp_path / "prepared", workers=1)

    assert "part expr_va has no rows" in capsys.readouterr().out.replace("\n", " ")
    assert manifest["rows"]["parts/expr_va"] == {"total": 0}
    assert manifest["rows"]["parts/expr"] == {"affwild2": 2, "total": 2}
    assert manifest["affwild2_videos"]["with_both_annotations"] == 1


def test_expr_va_source_affwild2_ignores_affectnet(tmp_path, sources, capsys):
    out = tmp_path / "prepared"
    manifest = prepare(
        sources["affwild2"],
        out,
        affectnet=sources["affectnet"],
        expr_va_source="affwild2",
        workers=1,
    )
    assert "AffectNet is not used" in capsys.readouterr().out
    assert manifest["rows"]["parts/expr_va"] == {"affwild2": 4, "total": 4}
    assert "affectnet" not in manifest["crops"]
    assert manifest["skipped"]["affectnet"] == {"counts": {}, "examples": {}}


def test_cli_user_errors(tmp_path, capsys):
    out = tmp_path / "prepared"
    assert main(["prepare", "--affwild2", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err

    root = write_affwild2(tmp_path / "affwild2")
    bad = ff.affwild2_annotation(root, "va", "Train_Set", "z", ["1"], header="Neutral,Anger")
    assert main(["prepare", "--affwild2", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert f"{bad}:1" in err and "valence,arousal" in err

    bad.unlink()
    missing = tmp_path / "no_expw"
    assert (
        main(["prepare", "--affwild2", str(root), "--expw", str(missing), "--out", str(out)]) == 2
    )
    assert str(missing) in capsys.readouterr().err.replace("\n", "")

    with pytest.raises(UserError, match="expr-va-source"):
        prepare(root, out, expr_va_source="both")


def test_out_that_is_not_a_prepared_folder_is_refused(tmp_path, capsys):
    """A non-empty folder without manifest.json (a config folder, say) is never written into; a
    new folder, an empty one, or one holding only a killed manifest write is."""
    root = write_affwild2(tmp_path / "affwild2")
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "train.yaml").write_text("seed: 0\n")
    args = ["prepare", "--affwild2", str(root), "--workers", "1", "--out"]

    assert main([*args, str(conf)]) == 2
    err = capsys.readouterr().err
    assert f"--out {conf} is not empty and holds no manifest.json" in err
    assert "choose an empty or new folder, or the folder of an earlier `abaw prepare`" in err
    assert len(err.strip().splitlines()) == 1
    assert [p.name for p in conf.iterdir()] == ["train.yaml"]

    assert main([*args, str(conf / "train.yaml")]) == 2
    assert f"--out {conf / 'train.yaml'} is a file" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / ".manifest.json.4242.partial").write_text('{"form')
    for out in (empty, tmp_path / "killed", tmp_path / "new" / "prepared"):
        assert main([*args, str(out)]) == 0
        assert json.loads((out / "manifest.json").read_text())["complete"] is True
        assert not (out / ".manifest.json.4242.partial").exists()


def test_a_prepared_folder_is_not_replaced_by_fewer_datasets(tmp_path, sources, capsys):
    """Re-running with fewer datasets than the folder holds would change its data identity: it is
    refused, naming them and the flags that keep them, and nothing is written; --replace does it."""
    out = tmp_path / "prepared"
    full = prepare_all(sources, out)
    stored = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    affwild2_only = ["prepare", "--affwild2", str(sources["affwild2"]), "--out", str(out)]

    assert main([*affwild2_only, "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert (
        f"--out {out} is a prepared folder of affwild2, expw, afew_va, affectnet; this run would "
        "replace it without expw, afew_va, affectnet, which changes its data (data_id)"
    ) in err
    again = (
        f"pass --expw {sources['expw']} --afew-va {sources['afew_va']} "
        f"--affectnet {sources['affectnet']} again"
    )
    assert again in err and f"add --replace to rebuild {out} without them" in err
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == stored

    # AffectNet given but left out by the option: the advice is to drop the option
    with pytest.raises(UserError, match=r"without affectnet.*leave out --expr-va-source affwild2"):
        prepare(
            sources["affwild2"],
            out,
            expw=sources["expw"],
            afew_va=sources["afew_va"],
            affectnet=sources["affectnet"],
            expr_va_source="affwild2",
            workers=1,
        )
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == stored

    capsys.readouterr()
    assert main([*affwild2_only, "--workers", "1", "--replace"]) == 0
    replaced = json.loads((out / "manifest.json").read_text())
    assert replaced["complete"] is True and replaced["data_id"] != full["data_id"]
    said = " ".join(capsys.readouterr().out.split())
    assert f"now holds other data than before (data_id {full['data_id']} -> " in said
    assert "every stage trains again on this data" in said
    assert [name for name, path in replaced["sources"].items() if path] == ["affwild2"]
    assert replaced["rows"]["parts/expr"] == {"affwild2": 6, "total": 6}
    # the same datasets again, or more, need no flag; the same data says nothing of it
    assert main([*affwild2_only, "--workers", "1"]) == 0
    assert "other data than before" not in capsys.readouterr().out
    more = prepare(sources["affwild2"], out, expw=sources["expw"], workers=1)
    assert more["rows"]["parts/expr"] == {"affwild2": 6, "expw": 2, "total": 8}
