"""`abaw synth`: exact on-disk formats, planted quirks, determinism and a learnable signal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from abaw_lightning import cli
from abaw_lightning.data.synth import generate
from abaw_lightning.data.synth.faces import Affect, draw_face, face_matrix, random_identity
from abaw_lightning.data.synth.scenes import MILD, STRONG, background, render_crop

EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"
AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
    "expression,valence,arousal"
)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "s"
    record = generate(out, seed=3, scale="tiny", workers=1)
    assert json.loads((out / "synth.json").read_text()) == record
    return out, record


def _data_lines(path: Path) -> list[str]:
    """Data lines of an annotation file (header dropped, empty trailing lines ignored)."""
    text = path.read_bytes().decode("utf-8")
    assert "\r" not in text
    lines = text.split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    return lines[1:]


def _annotation(root: Path, task: str, split: str, stem: str) -> Path:
    folder = {"expr": "EXPR_Set", "va": "VA_Set"}[task]
    return (
        root
        / "annotations"
        / folder
        / {"train": "Train_Set", "validation": "Validation_Set"}[split]
        / f"{stem}.txt"
    )


def _jpg_numbers(folder: Path) -> set[int]:
    names = sorted(p.name for p in folder.iterdir())
    assert all(re.fullmatch(r"\d{5}\.jpg", n) for n in names), names
    return {int(n[:5]) for n in names}


def _is_va(text: str) -> bool:
    return re.fullmatch(r"-?\d+(\.\d+)?,-?\d+(\.\d+)?", text) is not None


def test_affwild2_files_follow_the_format(synth):
    out, record = synth
    root = out / "affwild2"
    quirks = record["affwild2"]["quirks"]
    missing = {q["stem"]: set(q["frames"]) for q in quirks["missing_jpgs"]}
    extra = {q["stem"]: set(q["frames"]) for q in quirks["extra_jpgs"]}
    no_newline = set(quirks["no_trailing_newline"])
    blank = set(quirks["blank_trailing_line"])
    for stem, video in record["affwild2"]["videos"].items():
        n = video["frames"]
        jpgs = _jpg_numbers(root / "cropped_aligned" / stem)
        assert jpgs == (set(range(1, n + 1)) - missing.get(stem, set())) | extra.get(stem, set())
        assert cv2.imread(str(root / "cropped_aligned" / stem / "00001.jpg")).shape == (112, 112, 3)
        for task in ("expr", "va"):
            split = video[f"{task}_split"]
            if split is None:
                continue
            path = _annotation(root, task, split, stem)
            relative = str(path.relative_to(root))
            text = path.read_text()
            assert text.split("\n")[0] == (EXPR_HEADER if task == "expr" else "valence,arousal")
            lines = _data_lines(path)
            assert len(lines) == n
            assert text.endswith("\n") == (relative not in no_newline)
            assert text.endswith("\n\n") == (relative in blank)
            if task == "expr":
                assert all(int(line) in range(-1, 7) for line in lines)
            else:
                assert all(_is_va(line) for line in lines)
                values = [float(x) for line in lines for x in line.split(",")]
                assert all(-1 <= v <= 1 or v == -5 for v in values)
    annotated = {p.stem for p in (root / "annotations").rglob("*.txt")}
    assert annotated == set(record["affwild2"]["videos"])


def test_affwild2_quirks_are_where_the_record_says(synth):
    out, record = synth
    root = out / "affwild2"
    videos = record["affwild2"]["videos"]
    quirks = record["affwild2"]["quirks"]
    plain = quirks["left_right"]["plain"]
    assert quirks["left_right"]["suffixed"] == [f"{plain}_left", f"{plain}_right"]
    assert all(stem in videos for stem in [plain, *quirks["left_right"]["suffixed"]])
    for item in quirks["expr_unannotated"]:
        video = videos[item["stem"]]
        text = _annotation(root, "expr", video["expr_split"], item["stem"]).read_text()
        file_lines = text.split("\n")
        assert [file_lines[line - 1] for line in item["lines"]] == ["-1"] * len(item["lines"])
        assert item["lines"] == [f + 1 for f in item["frames"]]
    texts = set()
    for item in quirks["va_unannotated"]:
        video = videos[item["stem"]]
        file_lines = (
            _annotation(root, "va", video["va_split"], item["stem"]).read_text().split("\n")
        )
        assert [file_lines[line - 1] for line in item["lines"]] == item["texts"]
        texts.update(item["texts"])
    assert {"-5,-5", "-5.0,-5.0", "-5.000,-5.000"} <= texts
    assert len(quirks["expr_unannotated"]) == 2 and len(quirks["va_unannotated"]) == 2
    assert quirks["missing_jpgs"] and quirks["extra_jpgs"] and quirks["no_trailing_newline"]
    groups = quirks["groups"]
    for stem in groups["expr_train_va_validation"]:
        assert (videos[stem]["expr_split"], videos[stem]["va_split"]) == ("train", "validation")
    for stem in groups["va_train_expr_validation"]:
        assert (videos[stem]["expr_split"], videos[stem]["va_split"]) == ("validation", "train")
    assert groups["expr_train_va_validation"] and groups["va_train_expr_validation"]
    assert groups["both_train"]


def _recount(root: Path, record: dict) -> dict:
    """Recompute the expected Aff-Wild2 counts from the files alone."""
    labels: dict = {}
    for task in ("expr", "va"):
        for split in ("train", "validation"):
            for path in sorted(_annotation(root, task, split, "x").parent.glob("*.txt")):
                jpgs = _jpg_numbers(root / "cropped_aligned" / path.stem)
                for frame, line in enumerate(_data_lines(path), start=1):
                    if task == "expr":
                        value = int(line) if int(line) != -1 else None
                    else:
                        pair = [float(x) for x in line.split(",")]
                        value = None if -5 in pair else tuple(pair)
                    labels[(task, split, path.stem, frame)] = (value, frame in jpgs)
    counts: dict = {}
    for task in ("expr", "va"):
        for split in ("train", "validation"):
            rows = [v for k, v in labels.items() if k[:2] == (task, split)]
            counts[(task, split)] = (
                len({k[2] for k in labels if k[:2] == (task, split)}),
                len(rows),
                sum(v is not None for v, _ in rows),
                sum(v is not None and jpg for v, jpg in rows),
            )
    shared = 0
    for (task, split, stem, frame), (value, jpg) in labels.items():
        if task == "expr" and split == "train" and value is not None and jpg:
            other = labels.get(("va", "train", stem, frame))
            shared += other is not None and other[0] is not None
    return {"counts": counts, "shared": shared}


def test_affwild2_expected_counts_match_the_files(synth):
    out, record = synth
    expected = record["affwild2"]["expected"]
    recount = _recount(out / "affwild2", record)
    for (task, split), (videos, lines, labelled, kept) in recount["counts"].items():
        assert expected[task][split]["videos"] == videos
        assert expected[task][split]["lines"] == lines
        assert expected[task][split]["labelled"] == labelled
        assert expected[task][split]["kept"] == kept
    assert expected["expr_train_with_shared_va"] == recount["shared"] > 0
    assert expected["expr_train_with_validation_va"] > 0
    assert sum(expected["expr"]["train"]["class_counts"]) == expected["expr"]["train"]["kept"]
    videos = record["affwild2"]["videos"].values()
    assert expected["videos_with_both"] == sum(
        1 for v in videos if v["expr_split"] and v["va_split"]
    )


def test_affwild2_test_set_has_lists_crops_and_videos(synth):
    out, record = synth
    root = out / "affwild2"
    test = record["affwild2"]["test"]
    assert (root / "test_set_Expr_Challenge.txt").read_text() == "".join(
        f"{s}\n" for s in test["expr_list"]
    )
    assert (root / "test_set_VA_Challenge.txt").read_text() == "".join(
        f"{s}\n" for s in test["va_list"]
    )
    annotated = {p.stem for p in (root / "annotations").rglob("*.txt")}
    for stem, video in test["videos"].items():
        assert stem not in annotated
        jpgs = _jpg_numbers(root / "cropped_aligned" / stem)
        assert len(jpgs) == video["jpgs"] and not jpgs & set(video["missing_jpgs"])
        capture = cv2.VideoCapture(str(root / "videos" / "batch1" / f"{stem}.mp4"))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == video["video_frames"]
        ok, frame = capture.read()
        capture.release()
        assert ok and frame.shape == (192, 256, 3)
        assert video["frame_count"] == max(max(jpgs), video["video_frames"])
    assert any(v["missing_jpgs"] for v in test["videos"].values())
    assert any(v["video_frames"] > v["jpgs"] for v in test["videos"].values())


def test_expw_label_list_format_and_quirks(synth):
    out, record = synth
    root = out / "expw"
    text = (root / "label" / "label.lst").read_text()
    assert text.endswith("\n") and "\r" not in text
    rows = [line.split(" ") for line in text.split("\n")[:-1]]
    assert len(rows) == record["expw"]["expected"]["lines"]
    faces: dict[str, list[int]] = {}
    for fields in rows:
        assert len(fields) == 8
        name, face_id, top, left, right, bottom, confidence, label = fields
        assert re.fullmatch(r"[a-z]+_[a-z]+_\d+\.jpg", name)
        assert int(top) < int(bottom) and int(left) < int(right)
        float(confidence)
        assert int(label) in range(7)
        faces.setdefault(name, []).append(int(face_id))
        image = root / "image" / "origin" / name
        if name in record["expw"]["quirks"]["missing_images"]:
            assert not image.exists()
        else:
            height, width = cv2.imread(str(image)).shape[:2]
            assert int(bottom) <= height and int(right) <= width
    assert all(ids == list(range(len(ids))) for ids in faces.values())
    assert sorted(n for n, ids in faces.items() if len(ids) > 1) == sorted(
        record["expw"]["quirks"]["multi_face_images"]
    )
    assert len(record["expw"]["quirks"]["missing_images"]) == 1
    assert sum(float(r[6]) > 1 for r in rows) == record["expw"]["quirks"]["confidence_above_1"] > 0
    kept = sum(1 for r in rows if r[0] not in record["expw"]["quirks"]["missing_images"])
    assert record["expw"]["expected"]["kept_faces"] == kept


def test_afew_va_layout_json_and_quirks(synth):
    out, record = synth
    root = out / "afew_va"
    info = record["afew_va"]
    missing = {q["clip"]: set(q["frames"]) for q in info["quirks"]["missing_in_json"]}
    corrupt = set(info["quirks"]["corrupt_png"])
    assert missing and len(corrupt) == 1
    json_frames = 0
    for clip, meta in info["clips"].items():
        assert meta["folder"] == f"{(int(clip) - 1) // 50 + 1:02d}"
        folder = root / meta["folder"] / clip
        pngs = sorted(p.name for p in folder.glob("*.png"))
        assert pngs == [f"{i:05d}.png" for i in range(meta["frames"])]
        content = json.loads((folder / f"{clip}.json").read_text())
        assert list(content) == ["actor", "video_id", "frames"] and content["video_id"] == clip
        keys = set(content["frames"])
        assert keys == {p[:5] for p in pngs} - missing.get(clip, set())
        json_frames += len(keys)
        for key, frame in content["frames"].items():
            assert isinstance(frame["valence"], int) and -10 <= frame["valence"] <= 10
            assert isinstance(frame["arousal"], int) and -10 <= frame["arousal"] <= 10
            assert len(frame["landmarks"]) == 68 and all(len(p) == 2 for p in frame["landmarks"])
            image = cv2.imread(str(folder / f"{key}.png"))
            assert (image is None) == (f"{meta['folder']}/{clip}/{key}.png" in corrupt)
    assert json_frames == info["expected"]["json_frames"]
    assert info["expected"]["kept_frames"] == json_frames - 1


def test_affectnet_csvs_and_quirks(synth):
    out, record = synth
    root = out / "affectnet"
    info = record["affectnet"]
    training = (root / "Manually_Annotated_file_lists" / "training.csv").read_text().split("\n")
    validation = (root / "Manually_Annotated_file_lists" / "validation.csv").read_text().split("\n")
    assert training[0] == AFFECTNET_HEADER and training[-1] == "" and validation[-1] == ""
    assert validation[0].split(",")[0] != "subDirectory_filePath"
    assert len(training) - 2 == info["expected"]["rows"]["training.csv"]
    assert len(validation) - 1 == info["expected"]["rows"]["validation.csv"]
    for line in training[1:-1] + validation[:-1]:
        fields = line.split(",")
        assert len(fields) == 9
        assert re.fullmatch(r"\d+/[0-9a-f]{56}\.(jpg|tif|bmp)", fields[0])
        assert fields[5] == "NULL" or len([float(v) for v in fields[5].split(";")]) == 136
        assert int(fields[6]) in range(11)
        assert all(v == "-2" or -1 <= float(v) <= 1 for v in fields[7:])
    quirks = info["quirks"]

    def row(name: str) -> list[str]:
        return training[quirks[name]["line"] - 1].split(",")

    def image(name: str) -> Path:
        return root / "Manually_Annotated_Images" / quirks[name]["image"]

    assert row("null_landmarks")[5] == "NULL"
    assert row("unannotated_va")[7:] == ["-2", "-2"] and int(row("unannotated_va")[6]) <= 6
    assert [int(row(f"code_{c}")[6]) for c in (7, 8, 9, 10)] == [7, 8, 9, 10]
    assert not image("missing_image").exists()
    assert image("corrupt_image").exists() and cv2.imread(str(image("corrupt_image"))) is None
    for name, suffix in (("tif_image", ".tif"), ("bmp_image", ".bmp")):
        assert image(name).suffix == suffix and cv2.imread(str(image(name))) is not None
    duplicate = quirks["duplicate"]
    assert training[duplicate["line"] - 1] == training[duplicate["duplicate_of_line"] - 1]
    codes = [int(line.split(",")[6]) for line in validation[:-1]]
    assert info["expected"]["codes"]["validation.csv"] == [codes.count(c) for c in range(11)]


def test_affectnet_landmarks_and_box_match_the_image(synth):
    out, _ = synth
    root = out / "affectnet"
    fields = (root / "Manually_Annotated_file_lists" / "training.csv").read_text().split("\n")[1]
    fields = fields.split(",")
    height, width = cv2.imread(str(root / "Manually_Annotated_Images" / fields[0])).shape[:2]
    x, y, w, h = map(int, fields[1:5])
    points = np.array(fields[5].split(";"), dtype=float).reshape(68, 2)
    assert x >= 0 and x + w <= width and y >= 0 and y + h <= height
    assert (points[:, 0] > x - 0.1 * w).all() and (points[:, 0] < x + 1.1 * w).all()
    assert (points[:, 1] > y - 0.1 * h).all() and (points[:, 1] < y + 1.1 * h).all()


def test_same_seed_same_bytes_other_seed_differs(synth, tmp_path):
    out, _ = synth
    again = tmp_path / "again"
    generate(again, seed=3, scale="tiny", workers=2)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in files)
    other = tmp_path / "other"
    generate(other, seed=4, scale="tiny", workers=1)
    assert (other / "expw/label/label.lst").read_bytes() != (
        out / "expw/label/label.lst"
    ).read_bytes()


def test_cli_refuses_a_foreign_folder_and_rewrites_its_own(tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert cli.main(["synth", "--out", str(foreign), "--scale", "tiny", "--workers", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"
    own = tmp_path / "own"
    for seed in ("1", "2"):
        args = ["synth", "--out", str(own), "--scale", "tiny", "--seed", seed, "--workers", "1"]
        assert cli.main(args) == 0
    assert json.loads((own / "synth.json").read_text())["seed"] == 2
    assert "abaw prepare --affwild2" in capsys.readouterr().out


def test_landmarks_lie_on_the_drawn_face():
    rng = np.random.default_rng(0)
    image = np.full((200, 200, 3), 255.0)
    matrix = face_matrix(40, 30, 130, 12.0)
    identity = random_identity(rng)
    landmarks = draw_face(image, matrix, identity, Affect(0, 0.0, 0.0))
    centre = landmarks[27:36].mean(0)
    for point in landmarks[4:13]:
        inside = point + 0.08 * (centre - point)
        outside = point - 0.08 * (centre - point)
        assert image[int(inside[1]), int(inside[0])].tolist() != [255, 255, 255]
        assert image[int(outside[1]), int(outside[0])].tolist() == [255, 255, 255]
    mouth = landmarks[[62, 66]].mean(0)
    assert image[int(mouth[1]), int(mouth[0])].sum() < 200


def _features(image: np.ndarray, box=(0, 112, 0, 112), size: int = 16) -> np.ndarray:
    region = cv2.resize(image[box[0] : box[1], box[2] : box[3]], (size, size), cv2.INTER_AREA)
    x = region.astype(np.float32).reshape(-1)
    return (x - x.mean()) / (x.std() + 1e-6)


def _nearest_centroid_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    train = np.arange(len(y)) % 3 != 0
    classes = np.unique(y)
    centroids = np.stack([x[train & (y == c)].mean(0) for c in classes])
    pred = classes[((x[~train, None] - centroids[None]) ** 2).sum(-1).argmin(1)]
    return float((pred == y[~train]).mean())


@pytest.mark.parametrize("nuisance,minimum", [(MILD, 0.6), (STRONG, 0.3)])
def test_expression_is_learnable_from_small_images(nuisance, minimum):
    rng = np.random.default_rng(1)
    x, y = [], []
    for _ in range(24):
        for expr in range(7):
            affect = Affect(expr, rng.uniform(-1, 1), rng.uniform(-1, 1))
            backdrop = background(rng, 112, 112)
            x.append(_features(render_crop(rng, random_identity(rng), affect, backdrop, nuisance)))
            y.append(expr)
    assert _nearest_centroid_accuracy(np.array(x), np.array(y)) > minimum  # chance: 1/7


@pytest.mark.parametrize("axis", [0, 1])
def test_valence_and_arousal_show_in_the_mouth_region(axis):
    rng = np.random.default_rng(2)
    x, y = [], []
    for _ in range(40):
        for sign in (-1, 1):
            va = rng.uniform(-1, 1, 2)
            va[axis] = sign * rng.uniform(0.7, 1)
            affect = Affect(int(rng.integers(7)), *va)
            image = render_crop(rng, random_identity(rng), affect, background(rng, 112, 112), MILD)
            gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            x.append(_features(gray, (56, 112, 16, 96)))
            y.append(sign)
    assert _nearest_centroid_accuracy(np.array(x), np.array(y)) > 0.9


def test_help_lists_every_scale_with_the_sizes_it_writes(synth, capsys):
    """`abaw synth --help` names tiny, small and medium with their sizes (tiny's checked against
    the files it wrote), and `abaw demo --scale` offers the same scales."""
    with pytest.raises(SystemExit):
        cli.main(["synth", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--scale {tiny,small,medium}" in text
    out, _ = synth
    tests = len(list((out / "affwild2/videos/batch1").glob("*.mp4")))
    videos = len(list((out / "affwild2/cropped_aligned").iterdir())) - tests
    labels = (out / "expw/label/label.lst").read_text().splitlines()
    expw = len({line.split()[0] for line in labels})
    clips = sorted(p for p in (out / "afew_va").glob("*/*") if p.is_dir())
    (frames,) = {len(list(clip.glob("*.png"))) for clip in clips}
    lists = out / "affectnet/Manually_Annotated_file_lists"
    rows = sum(len(f.read_text().splitlines()) for f in lists.glob("*.csv")) - 1  # one header
    assert (
        f"tiny: {videos} Aff-Wild2 videos of 16-28 frames (+{tests} test), {expw} ExpW images, "
        f"{len(clips)} AFEW-VA clips of {frames} frames, {rows} AffectNet rows (seconds; for "
        "tests and `abaw demo --scale tiny`); small: 34 Aff-Wild2 videos of 80-200 frames"
    ) in text
    assert "; medium: 200 Aff-Wild2 videos of 100-300 frames" in text
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    assert "--scale {tiny,small,medium}" in " ".join(capsys.readouterr().out.split())
