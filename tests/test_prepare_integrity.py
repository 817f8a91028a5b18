"""`abaw prepare` trusts nothing it reads or finds: bad Aff-Wild2 frames are skipped and listed,
crops on disk are checked before reuse, an old-format folder is refused then redone, and an
interrupted run leaves the previous complete state or one that training refuses and the next run
repairs. The manifest's content identity does not depend on paths."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import fixtures_formats as ff
import numpy as np
import pandas as pd
import pytest
from test_prepare import prepare_all, write_affwild2, write_sources

from abaw_lightning.data.ingest import prepare as prepare_module
from abaw_lightning.data.ingest.prepare import prepare
from abaw_lightning.data.loading.datasets import load_table
from abaw_lightning.data.manifest import check_prepared
from abaw_lightning.errors import UserError
from abaw_lightning.files import sha256_file

TABLES = [
    "parts/expr",
    "parts/va",
    "parts/expr_va",
    "affwild2/train_expr",
    "affwild2/train_va",
    "affwild2/val_expr",
    "affwild2/val_va",
]


def jpeg_bytes(size: int = 16) -> bytes:
    rng = np.random.default_rng(0)
    ok, encoded = cv2.imencode(".jpg", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    assert ok
    return encoded.tobytes()


def leftovers(out: Path) -> list[str]:
    """Temporary files of a prepare run still in `out`."""
    return sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.name.endswith((".partial", ".part"))
    )


# --- Aff-Wild2 frames ---------------------------------------------------------------------------


def test_bad_affwild2_frames_are_skipped_with_file_and_reason(tmp_path):
    root = write_affwild2(tmp_path / "affwild2")
    frames = root / "cropped_aligned"
    good = jpeg_bytes()
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    planted = {
        "a/00002.jpg": (b"", "empty file (0 bytes)"),  # EXPR train and VA train
        "b/00003.jpg": (good[: len(good) // 2], "truncated JPEG (no end-of-image marker)"),
        "c/00001.jpg": (png, "not a JPEG (PNG data)"),  # EXPR val and VA val
        "a/00007.jpg": (b"GARBAGE" * 20, "not a JPEG (unknown data)"),
        "a/00009.jpg": (good[:3] + b"\x00" * 200 + b"\xff\xd9", "JPEG does not decode"),
    }
    for name, (content, _) in planted.items():
        (frames / name).write_bytes(content)
    # a jpg past the last annotation line is not kept, so it is not checked either
    (frames / "a" / "00015.jpg").write_bytes(b"")

    manifest = prepare(root, tmp_path / "prepared", workers=2)

    assert manifest["affwild2_frames"] == {
        "checked": 22,
        "bad": 5,
        "bad_files": {str(frames / name): reason for name, (_, reason) in sorted(planted.items())},
    }
    counts = manifest["skipped"]["affwild2"]["counts"]
    bad_rows = {reason: n for reason, n in counts.items() if "bad jpg" in reason}
    assert bad_rows == {
        "EXPR train: bad jpg: empty file (0 bytes)": 1,
        "VA train: bad jpg: empty file (0 bytes)": 1,
        "EXPR train: bad jpg: truncated JPEG (no end-of-image marker)": 1,  # b is VA val: no row
        "EXPR train: bad jpg: not a JPEG (unknown data)": 1,
        "VA train: bad jpg: not a JPEG (unknown data)": 1,
        "EXPR train: bad jpg: JPEG does not decode": 1,
        "VA train: bad jpg: JPEG does not decode": 1,
        "EXPR val: bad jpg: not a JPEG (PNG data)": 1,
        "VA val: bad jpg: not a JPEG (PNG data)": 1,
    }
    examples = manifest["skipped"]["affwild2"]["examples"]
    assert examples["VA val: bad jpg: not a JPEG (PNG data)"] == [str(frames / "c/00001.jpg")]
    # same tables as without those frames: 18 - 4 EXPR train rows, 12 - 3 VA train rows
    assert manifest["rows"]["affwild2/train_expr"]["total"] == 14
    assert manifest["rows"]["affwild2/train_va"]["total"] == 9
    assert manifest["rows"]["affwild2/val_expr"]["total"] == 1
    assert manifest["rows"]["affwild2/val_va"]["total"] == 4
    kept = set()
    for name in TABLES:
        kept |= set(pd.read_parquet(tmp_path / "prepared" / f"{name}.parquet")["image"])
    assert not kept & {f"affwild2_images/{name}" for name in planted}
    assert len(kept) == 22 - 5


# --- crops on disk ------------------------------------------------------------------------------


def test_corrupt_reused_crops_are_redone(tmp_path):
    sources = write_sources(tmp_path)
    out = tmp_path / "prepared"
    first = prepare_all(sources, out)
    crops = out / "crops"
    made = {p: p.read_bytes() for p in sorted(crops.rglob("*.jpg"))}
    (crops / "expw" / "p_0.jpg").write_bytes(b"\xff\xd8\xff garbage \xff\xd9")
    truncated = crops / "afew_va" / "001" / "00000.jpg"
    truncated.write_bytes(truncated.read_bytes()[:-300])
    (crops / "affectnet" / "1" / "a.jpg").write_bytes(b"")

    again = prepare_all(sources, out)

    assert again["crops"]["expw"] == {
        "made": 0, "reused": 1, "redone": 1, "failed": 1, "stale_deleted": 0
    }  # fmt: skip
    assert again["crops"]["afew_va"]["redone"] == 1 and again["crops"]["afew_va"]["reused"] == 1
    assert again["crops"]["affectnet"]["redone"] == 1
    assert {p: p.read_bytes() for p in sorted(crops.rglob("*.jpg"))} == made
    assert again["data_id"] == first["data_id"]


def make_old_format(out: Path) -> int:
    """Turn a prepared folder into what the format-1 `abaw prepare` wrote: 112x112 stretched
    crops without a format marker and a manifest without format, completeness or identity."""
    count = 0
    for path in (out / "crops").rglob("*.jpg"):
        cv2.imwrite(str(path), cv2.resize(cv2.imread(str(path)), (112, 112)))
        count += 1
    for marker in (out / "crops").glob("*/.crop_format"):
        marker.unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("format", "complete", "data_id", "tables", "affwild2_frames"):
        del manifest[key]
    manifest["options"] = {
        "expr_va_source": "affectnet",
        "expr_va_source_used": "affectnet",
        "workers": 1,
        "crop_size": 112,
        "jpeg_quality": 95,
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return count


def test_old_format_folder_is_refused_then_redone(tmp_path):
    sources = write_sources(tmp_path)
    out = tmp_path / "prepared"
    first = prepare_all(sources, out)
    crops = make_old_format(out)

    with pytest.raises(UserError) as refused:
        load_table(out, "parts/expr")
    command = (
        f"abaw prepare --affwild2 {sources['affwild2']} --expw {sources['expw']} "
        f"--afew-va {sources['afew_va']} --affectnet {sources['affectnet']} --out {out}"
    )
    message = str(refused.value)
    assert f"prepared folder {out} was made by an older `abaw prepare` (format 1" in message
    assert f"rerun `{command}`" in message

    again = prepare_all(sources, out)

    assert sum(stats["stale_deleted"] for stats in again["crops"].values()) == crops == 8
    assert sum(stats["made"] for stats in again["crops"].values()) == 8
    assert sum(stats["reused"] for stats in again["crops"].values()) == 0
    for path in (out / "crops").rglob("*.jpg"):
        assert cv2.imread(str(path)).shape == (134, 134, 3)
    assert len(load_table(out, "parts/expr")) == 8
    assert again["data_id"] == first["data_id"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"format": 3, "complete": true}', r"made by a newer `abaw prepare` \(format 3"),
        ('{"format": 2, "complete": false}', "incomplete: `abaw prepare` was interrupted"),
        ('{"format": 2, "comp', r"cannot read .*manifest\.json"),
        ("[2]", "is not a JSON object"),
    ],
)
def test_check_prepared_refuses_what_training_must_not_read(tmp_path, content, match):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(UserError, match=match) as refused:
        check_prepared(tmp_path)
    assert f"--out {tmp_path}" in str(refused.value)


def test_check_prepared_accepts_a_folder_without_manifest(tmp_path):
    assert check_prepared(tmp_path) is None


# --- interruptions ------------------------------------------------------------------------------


class Interrupted(Exception):
    """Stands for a kill at a chosen moment (nothing of prepare's runs after it)."""


def fail_nth_publish(monkeypatch, n: int) -> None:
    """Make the n-th rename onto a table or the manifest raise (1: the incomplete manifest,
    2..8: the seven tables, 9: the final manifest)."""
    real, calls = os.replace, []

    def replace(src, dst):
        if str(dst).endswith((".parquet", "manifest.json")):
            calls.append(dst)
            if len(calls) == n:
                raise Interrupted(dst)
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def fail_after_tables_written(monkeypatch, n: int) -> None:
    """Make prepare stop after writing n partial tables (a kill while writing tables)."""
    real, calls = prepare_module.sha256_file, []

    def hash_then_fail(path):
        calls.append(path)
        if len(calls) == n:
            raise Interrupted(path)
        return real(path)

    monkeypatch.setattr(prepare_module, "sha256_file", hash_then_fail)


def fail_while_cropping(monkeypatch) -> None:
    def make_crops(*args, **kwargs):
        raise Interrupted("cropping")

    monkeypatch.setattr(prepare_module, "make_crops", make_crops)


MOMENTS = {
    "cropping": (fail_while_cropping, (), "previous"),
    "writing tables": (fail_after_tables_written, (3,), "previous"),
    "marking incomplete": (fail_nth_publish, (1,), "previous"),
    "first table": (fail_nth_publish, (2,), "incomplete"),
    "between tables": (fail_nth_publish, (5,), "incomplete"),
    "final manifest": (fail_nth_publish, (9,), "incomplete"),
}


@pytest.mark.parametrize("moment", MOMENTS)
def test_interrupted_prepare_is_recovered_by_the_next_run(tmp_path, moment):
    sources = write_sources(tmp_path)
    reference = prepare(
        sources["affwild2"], tmp_path / "reference", expw=sources["expw"], workers=1
    )
    out = tmp_path / "prepared"
    previous = prepare(sources["affwild2"], out, workers=1)  # Aff-Wild2 only: expr has 6 rows
    before = {name: sha256_file(out / f"{name}.parquet") for name in TABLES}
    inject, arguments, expected_state = MOMENTS[moment]

    with pytest.MonkeyPatch.context() as patch:
        inject(patch, *arguments)
        with pytest.raises(Interrupted):
            prepare(sources["affwild2"], out, expw=sources["expw"], workers=1)

    if expected_state == "previous":
        assert check_prepared(out) == previous
        assert {name: sha256_file(out / f"{name}.parquet") for name in TABLES} == before
        assert len(load_table(out, "parts/expr")) == previous["rows"]["parts/expr"]["total"] == 6
    else:
        with pytest.raises(UserError, match=f"prepared folder {out} is incomplete"):
            load_table(out, "parts/expr")

    recovered = prepare(sources["affwild2"], out, expw=sources["expw"], workers=1)

    assert leftovers(out) == []
    assert recovered["rows"] == reference["rows"]
    assert recovered["rows"]["parts/expr"] == {"affwild2": 6, "expw": 2, "total": 8}
    assert recovered["data_id"] == reference["data_id"] != previous["data_id"]
    assert check_prepared(out) == recovered
    for name in TABLES:
        assert len(load_table(out, name)) == recovered["tables"][name]["rows"]


def test_an_interrupted_first_run_into_a_new_folder_is_continued(tmp_path, monkeypatch):
    """A new folder is marked as prepare's (an incomplete manifest) before anything else is
    written in it: a first run killed while cropping leaves a folder that training refuses and the
    next run, not being refused as a foreign non-empty folder, completes."""
    sources = write_sources(tmp_path)
    out = tmp_path / "prepared"
    with pytest.MonkeyPatch.context() as patch:
        fail_while_cropping(patch)
        with pytest.raises(Interrupted):
            prepare_all(sources, out)
    assert (out / "affwild2_images").is_symlink()
    marker = json.loads((out / "manifest.json").read_text())
    assert marker["complete"] is False and marker["sources"]["expw"] == str(sources["expw"])
    with pytest.raises(UserError, match=f"prepared folder {out} is incomplete"):
        load_table(out, "parts/expr")

    done = prepare_all(sources, out)

    assert check_prepared(out) == done and done["rows"]["parts/expr"]["total"] == 8


# --- content identity ---------------------------------------------------------------------------


def test_data_id_depends_on_content_not_on_paths(tmp_path):
    sources = write_sources(tmp_path / "here")
    first = prepare_all(sources, tmp_path / "one")
    moved = tmp_path / "there"
    shutil.copytree(tmp_path / "here", moved, symlinks=True)
    second = prepare_all({k: moved / v.name for k, v in sources.items()}, tmp_path / "two")

    assert second["sources"] != first["sources"]
    assert second["tables"] == first["tables"] and second["data_id"] == first["data_id"]
    assert len(first["data_id"]) == 16
    for name in TABLES:
        path = tmp_path / "one" / f"{name}.parquet"
        assert first["tables"][name] == {
            "rows": len(pd.read_parquet(path)),
            "sha256": sha256_file(path),
        }
    # other content (a changed label) or another option gives another id
    ff.affwild2_annotation(sources["affwild2"], "expr", "Validation_Set", "c", ["2", "4"])
    changed = prepare_all(sources, tmp_path / "three")
    assert changed["data_id"] != first["data_id"]
    other = prepare_all(sources, tmp_path / "four", expr_va_source="affwild2")
    assert len({changed["data_id"], other["data_id"]}) == 2
