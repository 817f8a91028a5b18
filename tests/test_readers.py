"""Readers of the four real formats: exact rows kept, rows skipped by reason, user errors."""

from __future__ import annotations

import math
import re

import fixtures_formats as ff
import numpy as np
import pytest

from abaw_lightning.data.ingest.readers.afew_va import read_afew_va
from abaw_lightning.data.ingest.readers.affectnet import read_affectnet
from abaw_lightning.data.ingest.readers.affwild2 import read_affwild2
from abaw_lightning.data.ingest.readers.expw import read_expw
from abaw_lightning.errors import UserError


def rows_of(table, *columns):
    return [tuple(row) for row in table[list(columns)].itertuples(index=False)]


# --- Aff-Wild2 -------------------------------------------------------------------------------


def test_affwild2_expr_quirks(tmp_path):
    # Training_Set (2020 name), BOM, no final newline; -1, out of range, non-numeric, jpg missing,
    # jpgs past the last line.
    ff.affwild2_annotation(
        tmp_path,
        "expr",
        "Training_Set",
        "v1",
        ["0", "-1", "4", "7", "x", "6", "3.0"],
        newline_at_end=False,
        bom=True,
    )
    ff.affwild2_frames(tmp_path, "v1", [1, 2, 3, 4, 5, 7, 8, 9])
    # two-person video: _left / _right stems beside the plain one, trailing empty lines
    ff.affwild2_annotation(tmp_path, "expr", "Training_Set", "v1_left", ["1", "2", "", ""])
    ff.affwild2_annotation(tmp_path, "expr", "Training_Set", "v1_right", ["5"])
    ff.affwild2_frames(tmp_path, "v1_left", [1, 2])
    ff.affwild2_frames(tmp_path, "v1_right", [1])

    read = read_affwild2(tmp_path, "expr", "train")

    assert rows_of(read.rows, "image", "video", "frame", "expr") == [
        ("affwild2_images/v1/00001.jpg", "v1", 1, 0),
        ("affwild2_images/v1/00003.jpg", "v1", 3, 4),
        ("affwild2_images/v1/00007.jpg", "v1", 7, 3),
        ("affwild2_images/v1_left/00001.jpg", "v1_left", 1, 1),
        ("affwild2_images/v1_left/00002.jpg", "v1_left", 2, 2),
        ("affwild2_images/v1_right/00001.jpg", "v1_right", 1, 5),
    ]
    assert set(read.rows["source"]) == {"affwild2"}
    assert read.rows["valence"].isna().all() and read.rows["arousal"].isna().all()
    assert str(read.rows["expr"].dtype) == "int8"
    assert dict(read.skipped.counts) == {
        "not annotated (-1)": 1,
        "expression outside 0-6": 1,
        "unparsable line": 1,
        "annotated frame has no jpg": 1,
    }
    v1 = tmp_path / "annotations" / "EXPR_Set" / "Training_Set" / "v1.txt"
    assert read.skipped.examples["unparsable line"] == [f"{v1}:6"]
    assert read.skipped.examples["annotated frame has no jpg"] == [
        str(tmp_path / "cropped_aligned" / "v1" / "00006.jpg")
    ]


def test_affwild2_va_missing_values_parsed_numerically(tmp_path):
    lines = ["0.5,-0.25", "-5,0.3", "0.1,-5.0", "-5.000,-5.000", "0.2, 0.4", "1.5,0", "0.3"]
    ff.affwild2_annotation(tmp_path, "va", "Train_Set", "v1", lines)
    ff.affwild2_frames(tmp_path, "v1", range(1, 8))

    read = read_affwild2(tmp_path, "va", "train")

    assert rows_of(read.rows, "video", "frame", "expr") == [("v1", 1, -1), ("v1", 5, -1)]
    np.testing.assert_allclose(read.rows["valence"], [0.5, 0.2])
    np.testing.assert_allclose(read.rows["arousal"], [-0.25, 0.4])
    assert str(read.rows["valence"].dtype) == "float32"
    assert dict(read.skipped.counts) == {
        "not annotated (-5)": 3,
        "valence/arousal outside [-1, 1]": 1,
        "unparsable line": 1,
    }


def test_affwild2_nested_annotations_and_validation_split(tmp_path):
    ff.affwild2_annotation(tmp_path, "va", "Validation_Set", "w", ["0,0", "0.1,0.1"], nested=True)
    ff.affwild2_frames(tmp_path, "w", [1, 2])
    read = read_affwild2(tmp_path, "va", "val")
    assert rows_of(read.rows, "video", "frame") == [("w", 1), ("w", 2)]


def test_affwild2_truncated_file_ignores_later_jpgs(tmp_path):
    ff.affwild2_annotation(tmp_path, "expr", "Train_Set", "t", ["2", "3"], newline_at_end=False)
    ff.affwild2_frames(tmp_path, "t", range(1, 11))
    read = read_affwild2(tmp_path, "expr", "train")
    assert rows_of(read.rows, "frame", "expr") == [(1, 2), (2, 3)]
    assert dict(read.skipped.counts) == {}


def test_affwild2_wrong_header_names_file_and_line(tmp_path):
    path = ff.affwild2_annotation(
        tmp_path, "expr", "Train_Set", "v", ["0.1,0.2"], header="valence,arousal"
    )
    ff.affwild2_frames(tmp_path, "v", [1])
    with pytest.raises(UserError, match=re.escape(f"{path}:1: expected the EXPR_Set header")):
        read_affwild2(tmp_path, "expr", "train")


def test_affwild2_missing_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="annotations"):
        read_affwild2(tmp_path, "expr", "train")
    ff.affwild2_annotation(tmp_path, "expr", "Train_Set", "v", ["0"])
    with pytest.raises(UserError, match="cropped_aligned"):
        read_affwild2(tmp_path, "expr", "train")
    ff.affwild2_frames(tmp_path, "v", [1])
    with pytest.raises(UserError, match="VA_Set"):
        read_affwild2(tmp_path, "va", "train")
    with pytest.raises(UserError, match="Validation_Set"):
        read_affwild2(tmp_path, "expr", "val")


def test_affwild2_unreadable_file_is_user_error(tmp_path):
    path = tmp_path / "annotations" / "EXPR_Set" / "Train_Set" / "v.txt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff\xfe\x00binary")
    (tmp_path / "cropped_aligned").mkdir()
    with pytest.raises(UserError, match=re.escape(f"cannot read {path}")):
        read_affwild2(tmp_path, "expr", "train")


# --- ExpW ------------------------------------------------------------------------------------


EXPW_LINES = [
    "multi.jpg 0 10 5 25 30 22.9362 0",
    "multi.jpg 1 0 0 10 10 1.5 6",
    "multi.jpg 1 0 0 10 10 1.5 6",
    "gone.jpg 0 1 1 5 5 3.0 3",
    "anim.gif 0 1 1 5 5 3.0 3",
    "broken line",
    "flat.jpg 0 5 5 5 10 1.0 2",
    "odd.jpg 0 1 1 5 5 1.0 9",
    "solo.jpg 0 2 3 12 14 -0.5 3",
]


@pytest.mark.parametrize("data_layout", [False, True])
def test_expw_faces_keyed_by_image_and_face(tmp_path, data_layout):
    image = np.zeros((40, 40, 3), np.uint8)
    images = {name: image for name in ("multi.jpg", "anim.gif", "flat.jpg", "odd.jpg", "solo.jpg")}
    images["anim.gif"] = b"GIF89a"
    ff.expw_dataset(tmp_path, EXPW_LINES, images, data_layout=data_layout)

    read = read_expw(tmp_path)

    origin = tmp_path / ("data" if data_layout else "") / "image" / "origin"
    assert rows_of(read.rows, "image", "expr", "top", "left", "right", "bottom", "src_path") == [
        ("crops/expw/multi_0.jpg", 1, 10, 5, 25, 30, str(origin / "multi.jpg")),
        ("crops/expw/multi_1.jpg", 0, 0, 0, 10, 10, str(origin / "multi.jpg")),
        ("crops/expw/solo_0.jpg", 4, 2, 3, 12, 14, str(origin / "solo.jpg")),
    ]
    assert rows_of(read.rows, "source", "video", "frame") == [("expw", "", -1)] * 3
    assert read.rows["valence"].isna().all()
    assert dict(read.skipped.counts) == {
        "duplicate face (same image and face id)": 1,
        "image missing": 1,
        "unsupported image format (.gif)": 1,
        "unparsable line": 1,
        "empty face box": 1,
        "label outside 0-6": 1,
    }
    label = tmp_path / ("data" if data_layout else "") / "label" / "label.lst"
    assert read.skipped.examples["unparsable line"] == [f"{label}:6"]


def test_expw_class_mapping(tmp_path):
    lines = [f"i.jpg {c} 0 0 4 4 1.0 {c}" for c in range(7)]
    ff.expw_dataset(tmp_path, lines, {"i.jpg": np.zeros((8, 8, 3), np.uint8)})
    assert read_expw(tmp_path).rows["expr"].tolist() == [1, 2, 3, 4, 5, 6, 0]


def test_expw_missing_label_file(tmp_path):
    (tmp_path / "image" / "origin").mkdir(parents=True)
    with pytest.raises(UserError, match=re.escape("label/label.lst")):
        read_expw(tmp_path)


# --- AFEW-VA ---------------------------------------------------------------------------------


def test_afew_va_nested_and_flat_layouts(tmp_path):
    frames = {
        "00000": ff.afew_va_frame(5, -3),
        "00001": ff.afew_va_frame(10, 10),  # png missing
        "00002": {"valence": 1, "arousal": 1, "landmarks": [[0, 0]] * 67},  # corrupt
        "00003": ff.afew_va_frame(11, 0),
        "00005": ff.afew_va_frame(-10, 2),
        "xx": ff.afew_va_frame(0, 0),
    }
    ff.afew_va_clip(tmp_path, "002", frames, ["00000", "00002", "00003", "00004", "00005"])
    ff.afew_va_clip(tmp_path, "001", {"00000": ff.afew_va_frame(0, 7)}, ["00000"], group=None)

    read = read_afew_va(tmp_path)

    assert rows_of(read.rows, "image", "video", "frame", "expr") == [
        ("crops/afew_va/001/00000.jpg", "001", 0, -1),
        ("crops/afew_va/002/00000.jpg", "002", 0, -1),
        ("crops/afew_va/002/00005.jpg", "002", 5, -1),
    ]
    np.testing.assert_allclose(read.rows["valence"], [0.0, 0.5, -1.0])
    np.testing.assert_allclose(read.rows["arousal"], [0.7, -0.3, 0.2])
    assert read.rows["src_path"].tolist()[1] == str(tmp_path / "01" / "002" / "00000.png")
    np.testing.assert_allclose(read.rows["landmarks"][0], ff.face_landmarks(), atol=1e-3)
    assert dict(read.skipped.counts) == {
        "frame image missing": 1,
        "corrupt frame annotation": 2,
        "valence/arousal outside [-10, 10]": 1,
    }


def test_afew_va_errors(tmp_path):
    with pytest.raises(UserError, match="no AFEW-VA clips"):
        read_afew_va(tmp_path)
    clip = tmp_path / "01" / "003"
    clip.mkdir(parents=True)
    (clip / "003.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match=re.escape("003.json")):
        read_afew_va(tmp_path)
    with pytest.raises(UserError, match="not a folder"):
        read_afew_va(tmp_path / "nowhere")


# --- AffectNet -------------------------------------------------------------------------------


def affectnet_fixture(root):
    image = np.zeros((100, 100, 3), np.uint8)
    training = [
        ff.affectnet_row("1/a.jpg", 1, 0.5, -0.3),
        ff.affectnet_row("1/b.jpg", 6, -0.1, 0.2),
        ff.affectnet_row("1/c.jpg", 7, 0.1, 0.1),
        ff.affectnet_row("1/d.jpg", 10, -2, -2),
        "1/e.jpg,NULL,NULL,NULL,NULL,NULL,3,0.1,0.1",
        ff.affectnet_row("1/a.jpg", 1, 0.5, -0.3),
        ff.affectnet_row("2/f.tif", 0, 0.0, 0.0),
        ff.affectnet_row("2/g.bmp", 2, -0.5, 0.5),
        ff.affectnet_row("2/h.gif", 3, 0.1, 0.1),
        ff.affectnet_row("2/missing.jpg", 3, 0.1, 0.1),
        ff.affectnet_row("2/i.png", 3, -2, -2),
        "2/j.jpg,1,2,3",
        ff.affectnet_row("2/k.jpg", 4, 1.5, 0.0),
    ]
    validation = [ff.affectnet_row("3/v.jpg", 5, 0.25, 0.75)]
    images = {p: image for p in ("1/a.jpg", "1/b.jpg", "1/c.jpg", "1/d.jpg", "1/e.jpg")}
    images |= {p: image for p in ("2/f.tif", "2/g.bmp", "2/i.png", "2/j.jpg", "2/k.jpg", "3/v.jpg")}
    images["2/h.gif"] = b"GIF89a"
    return ff.affectnet_dataset(root, training, validation, images)


def test_affectnet_rows_codes_and_skips(tmp_path):
    affectnet_fixture(tmp_path)

    read = read_affectnet(tmp_path)

    assert rows_of(read.rows, "image", "expr") == [
        ("crops/affectnet/1/a.jpg", 4),
        ("crops/affectnet/1/b.jpg", 1),
        ("crops/affectnet/2/f.jpg", 0),
        ("crops/affectnet/2/g.jpg", 5),
        ("crops/affectnet/2/i.jpg", 6),
        ("crops/affectnet/3/v.jpg", 2),
    ]
    np.testing.assert_allclose(read.rows["valence"], [0.5, -0.1, 0.0, -0.5, np.nan, 0.25])
    np.testing.assert_allclose(read.rows["arousal"], [-0.3, 0.2, 0.0, 0.5, np.nan, 0.75])
    images = tmp_path / "Manually_Annotated" / "Manually_Annotated_Images"
    assert read.rows["src_path"].tolist()[2] == str(images / "2" / "f.tif")
    assert read.rows["landmarks"][0].shape == (68, 2)
    assert dict(read.skipped.counts) == {
        "expression 7 (contempt)": 1,
        "expression 10 (no-face)": 1,
        "NULL field": 1,
        "duplicate row": 1,
        "unsupported image format (.gif)": 1,
        "image missing": 1,
        "wrong number of fields": 1,
        "valence/arousal outside [-1, 1]": 1,
    }
    training = tmp_path / "Manually_Annotated_file_lists" / "training.csv"
    assert read.skipped.examples["NULL field"] == [f"{training}:6"]


def test_affectnet_class_mapping_and_validation_header(tmp_path):
    rows = [ff.affectnet_row(f"0/{c}.jpg", c, 0.0, 0.0) for c in range(7)]
    images = {f"0/{c}.jpg": np.zeros((4, 4, 3), np.uint8) for c in range(7)}
    ff.affectnet_dataset(tmp_path, rows[:3], rows[3:], images, wrapper="x", validation_header=True)
    assert read_affectnet(tmp_path).rows["expr"].tolist() == [0, 4, 5, 6, 3, 2, 1]


def test_affectnet_wrong_header(tmp_path):
    affectnet_fixture(tmp_path)
    training = tmp_path / "Manually_Annotated_file_lists" / "training.csv"
    lines = training.read_text().splitlines()
    lines[0] = lines[0].replace("valence,arousal", "arousal,valence")
    training.write_text("\n".join(lines))
    with pytest.raises(UserError, match=re.escape(f"{training}:1: unexpected header")):
        read_affectnet(tmp_path)


def test_affectnet_missing_images_folder(tmp_path):
    ff.write_text(
        tmp_path / "Manually_Annotated_file_lists" / "training.csv", [ff.AFFECTNET_HEADER]
    )
    with pytest.raises(UserError, match="Manually_Annotated_Images"):
        read_affectnet(tmp_path)


def test_affectnet_missing_va_is_nan(tmp_path):
    ff.affectnet_dataset(
        tmp_path,
        [ff.affectnet_row("0/a.jpg", 0, -2, 0.5)],
        [],
        {"0/a.jpg": np.zeros((4, 4, 3), np.uint8)},
    )
    row = read_affectnet(tmp_path).rows.iloc[0]
    assert math.isnan(row["valence"]) and row["arousal"] == pytest.approx(0.5)
