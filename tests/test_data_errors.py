"""Bad prepared data at train time: one UserError per problem naming the file and what fixes it
(advice followed and checked against a real `abaw prepare`), DataLoader-worker errors as their
own one-line message, and a non-finite feature cache named, marked and extracted again."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from prepared_data import write_prepared
from test_features import SIZE, VIEWS, extract, save_checkpoint
from torch._utils import ExceptionWrapper
from torch.utils.data import DataLoader

from abaw_lightning import pipeline
from abaw_lightning.cli import main as abaw
from abaw_lightning.data.ingest.prepare import prepare
from abaw_lightning.data.loading.datamodules import CnnDataModule, GruDataModule
from abaw_lightning.data.loading.datasets import FrameDataset, load_table, passthrough_collate
from abaw_lightning.data.loading.feature_cache import FeatureCache
from abaw_lightning.data.loading.feature_windows import FeatureWindowDataset
from abaw_lightning.data.loading.images import read_image
from abaw_lightning.data.loading.windows import eval_windows
from abaw_lightning.data.manifest import prepare_command
from abaw_lightning.data.synth import generate
from abaw_lightning.errors import UserError
from abaw_lightning.stages.base import NonFiniteLossError
from abaw_lightning.train import CONFIG_DIR


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("pristine"), rows=24)


@pytest.fixture
def prepared(pristine, tmp_path) -> Path:
    """A copy of a tiny prepared folder (3 videos of 8 frames per table) that a test may spoil."""
    return Path(shutil.copytree(pristine, tmp_path / "prepared"))


def cnn(root: Path, batch_size: int = 6) -> CnnDataModule:
    return CnnDataModule(root, batch_size=batch_size, image_size=SIZE, num_workers=0)


def gru(root: Path, length: int = 4, batch_size: int = 2) -> GruDataModule:
    return GruDataModule(
        root, length=length, train_stride=2, batch_size=batch_size, image_size=SIZE, num_workers=0
    )


def rewrite(root: Path, name: str, change) -> Path:
    path = root / f"{name}.parquet"
    change(pd.read_parquet(path)).to_parquet(path, index=False)
    return path


def set_value(column: str, row: int, value):
    def change(table: pd.DataFrame) -> pd.DataFrame:
        table.loc[row, column] = value
        return table

    return change


def expr_as_floats(table: pd.DataFrame) -> pd.DataFrame:
    table["expr"] = table["expr"].astype("float64")
    table.loc[0, "expr"] = np.nan
    return table


def no_va_labels(table: pd.DataFrame) -> pd.DataFrame:
    table["valence"] = np.float32("nan")
    return table


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("parts/va", lambda t: t.drop(columns="weight"), r"lacks column\(s\) \['weight'\]"),
        ("affwild2/val_expr", lambda t: t.iloc[:0], r"has no rows: the datasets given"),
        ("affwild2/val_va", no_va_labels, r"has no va labels"),
        ("parts/expr", expr_as_floats, r"column 'expr' holds float64, not integers"),
        ("parts/expr", set_value("expr", 2, 9), r"row 2 has expr = 9 \(1 such rows"),
        ("parts/va", set_value("arousal", 5, np.inf), r"row 5 has arousal = inf"),
        ("parts/expr_va", set_value("weight", 3, -1.0), r"row 3 has weight = -1\.0"),
        ("parts/expr_va", lambda t: t.assign(weight=0.0), r"every sampler weight is 0"),
    ],
)
def test_bad_tables_are_refused_in_setup_naming_the_file(prepared, name, change, message):
    path = rewrite(prepared, name, change)
    with pytest.raises(UserError, match=message) as error:
        cnn(prepared).setup("fit")
    assert str(path) in str(error.value)
    assert f"re-run `abaw prepare ... --out {prepared}`" in str(error.value)


def test_gru_setup_checks_the_same_tables(prepared):
    rewrite(prepared, "affwild2/val_va", lambda t: t.iloc[:0])
    with pytest.raises(UserError, match=r"val_va\.parquet has no rows"):
        gru(prepared).setup("fit")


def test_empty_part_suggests_training_without_it(prepared):
    rewrite(prepared, "parts/va", lambda t: t.iloc[:0])
    with pytest.raises(UserError, match=r"va\.parquet has no rows.*data\.parts=\[expr,expr_va\]"):
        cnn(prepared).setup("fit")


def test_empty_validation_table_stops_before_training_every_time(prepared, tmp_path):
    rewrite(prepared, "affwild2/val_expr", lambda t: t.iloc[:0])
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=demo",
                f"data.root={prepared}",
                f"runs_dir={tmp_path / 'runs'}",
                "stage=cnn_teacher",
                "logger=none",
                f"data.image_size={SIZE}",
                "data.batch_size=6",
                "data.num_workers=0",
                "model.arch=resnet18",
            ],
        )
    for _ in range(2):  # the rerun says the same, instead of crashing after training
        with pytest.raises(UserError, match=r"val_expr\.parquet has no rows"):
            pipeline.run_pipeline(cfg)
    assert not (tmp_path / "runs" / "demo" / "seed_0" / "cnn_teacher" / "checkpoints").exists()


def test_part_smaller_than_a_batch_names_part_rows_and_setting(prepared):
    rewrite(prepared, "parts/va", lambda t: t.iloc[:10])
    with pytest.raises(UserError) as error:
        cnn(prepared, batch_size=16).setup("fit")
    assert str(error.value) == (
        "training part va has 10 rows, fewer than one batch (data.batch_size=16): every step "
        "takes a full batch from each part, so an epoch would have no step. Pass "
        "data.batch_size=10 (or less)."
    )
    cnn(prepared, batch_size=10).setup("fit")


def test_gru_windows_fewer_than_a_batch_or_none_at_all(prepared):
    with pytest.raises(UserError, match=r"part expr_va has 3 windows, .*_size=4\).*_size=3 "):
        gru(prepared, length=4, batch_size=4).setup("fit")  # expr_va: 1 video, windows at 0, 2, 4
    with pytest.raises(UserError) as error:
        gru(prepared, length=9).setup("fit")
    assert "no 9-frame training window without gaps in the 24 Aff-Wild2 expr frames" in str(
        error.value
    )
    assert "the longest run of consecutive frames of one video is 8" in str(error.value)
    assert "data.windows.length=N), or train without the part: gru_tasks=[va,expr_va]" in str(
        error.value
    )


def worker_reraise(error: BaseException) -> BaseException:
    """What the main process gets when `error` was raised in a DataLoader worker."""
    try:
        raise error
    except BaseException:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    try:
        wrapper.reraise()
    except BaseException as reraised:
        return reraised
    raise AssertionError("reraise did not raise")


def test_worker_reraise_keeps_the_workers_message_and_type():
    plain = worker_reraise(UserError("crop x.jpg is missing [row 3]"))
    assert type(plain) is UserError and str(plain) == "crop x.jpg is missing [row 3]"
    try:
        try:
            raise OSError("disk")
        except OSError as cause:
            raise NonFiniteLossError("two\nlines") from cause
    except NonFiniteLossError as error:
        chained = worker_reraise(error)
    assert type(chained) is NonFiniteLossError and str(chained) == "two\nlines"
    other = worker_reraise(ValueError("not ours"))
    assert "Original Traceback" in str(other)  # only UserErrors are shortened
    assert str(UserError("Caught UserError in the act")) == "Caught UserError in the act"


def test_missing_crop_in_a_worker_is_one_line_with_file_row_and_fix(prepared):
    table = load_table(prepared, "parts/expr")
    row = 5
    (prepared / table["image"][row]).unlink()
    dataset = FrameDataset(table, prepared, None, "parts/expr")
    loader = DataLoader(dataset, batch_size=8, num_workers=1, collate_fn=passthrough_collate)
    with pytest.raises(UserError) as error:
        list(loader)
    assert str(error.value) == (
        f"cannot read {prepared / table['image'][row]} (row {row} of "
        f"{prepared}/parts/expr.parquet): this crop is missing: re-run "
        f"`abaw prepare ... --out {prepared}`, which makes missing crops again."
    )


@pytest.fixture
def real_prepared(tmp_path) -> Path:
    """`abaw synth --scale tiny` through `abaw prepare`: the folder the advice is checked on."""
    synth = tmp_path / "synth"
    generate(synth, seed=0, scale="tiny", workers=1)
    out = tmp_path / "prepared"
    prepare(
        synth / "affwild2",
        out,
        expw=synth / "expw",
        afew_va=synth / "afew_va",
        affectnet=synth / "affectnet",
        workers=1,
    )
    return out


def follow(advice: str) -> None:
    """Run the `abaw prepare ...` command quoted in an error message."""
    (command,) = re.findall(r"`(abaw prepare [^`]*)`", advice)
    assert abaw(shlex.split(command)[1:]) == 0


def unreadable(root: Path, name: str, image: str) -> str:
    """The error message of reading `image`, a row of table `name`."""
    table = load_table(root, name)
    (row,) = np.flatnonzero(table["image"] == image)
    with pytest.raises(UserError) as error:
        FrameDataset(table, root, None, name)[int(row)]
    message = str(error.value)
    assert message.startswith(f"cannot read {root / image} (row {row} of {root}/{name}.parquet)")
    return message


def tables_hold(root: Path, image: str) -> bool:
    return any(image in set(pd.read_parquet(p)["image"]) for p in root.glob("*/*.parquet"))


@pytest.mark.slow
def test_the_advice_for_unreadable_crops_and_frames_fixes_them(real_prepared):
    root = real_prepared
    expr = load_table(root, "parts/expr")
    assert prepare_command(root).startswith(f"abaw prepare --affwild2 {root.parent}/synth/")
    crops = expr.loc[expr["source"] == "expw", "image"].tolist()
    frames = expr.loc[expr["source"] == "affwild2", "image"].tolist()

    (root / crops[0]).unlink()
    message = unreadable(root, "parts/expr", crops[0])
    assert "this crop is missing: re-run `abaw prepare --affwild2" in message
    follow(message)
    assert read_image(root / crops[0]).shape[:2] == (134, 134)  # the stored crop size

    (root / crops[1]).write_bytes(b"not a jpeg")
    message = unreadable(root, "parts/expr", crops[1])
    assert "this crop does not decode: delete it and re-run `abaw prepare" in message
    (root / crops[1]).unlink()
    follow(message)
    assert read_image(root / crops[1]).shape[:2] == (134, 134)  # the stored crop size

    (root / frames[0]).unlink()
    message = unreadable(root, "parts/expr", frames[0])
    assert "this Aff-Wild2 frame is missing (the dataset changed after `abaw prepare`)" in message
    follow(message)
    assert not tables_hold(root, frames[0])

    (root / frames[1]).write_bytes(b"not a jpeg")
    message = unreadable(root, "parts/expr", frames[1])
    assert "this Aff-Wild2 frame does not decode: restore it from the Aff-Wild2 archive" in message
    (root / frames[1]).unlink()
    follow(message)
    assert not tables_hold(root, frames[1])


def test_moved_affwild2_says_where_the_link_points(real_prepared, tmp_path):
    root = real_prepared
    image = load_table(root, "affwild2/val_va")["image"][0]
    (tmp_path / "synth" / "affwild2").rename(tmp_path / "moved")
    message = unreadable(root, "affwild2/val_va", image)
    assert f"{root}/affwild2_images points to {tmp_path}/synth/affwild2/cropped_aligned" in message
    assert "re-run `abaw prepare` with --affwild2 at its new place" in message


@pytest.fixture(scope="module")
def features_prepared(tmp_path_factory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("features_prepared"), rows=8)


def test_nonfinite_feature_cache_is_named_marked_and_extracted_again(
    features_prepared, tmp_path, capsys
):
    checkpoint = save_checkpoint(tmp_path / "best.ckpt", seed=1)
    folder = tmp_path / "features"
    cache = extract(folder, checkpoint, features_prepared)
    table = load_table(features_prepared, "affwild2/val_va").sort_values(
        ["video", "frame"], ignore_index=True
    )
    rows, mask = eval_windows(table, 4)
    frame = int(cache.frame_ids(table["image"])[rows[1, 2]])
    planted = np.load(folder / "features.npy", mmap_mode="r+")
    planted[0, frame, 1, 17] = np.nan  # after a complete extraction
    planted.flush()
    del planted
    dataset = FeatureWindowDataset(FeatureCache.open(folder), table, rows, mask)
    with pytest.raises(UserError) as error:
        list(DataLoader(dataset, batch_size=2, num_workers=1))
    where = f"view 0 of frame {cache.images[frame]}"
    assert str(error.value) == (
        f"the feature cache {folder} holds NaN or infinite values ({where}), which its "
        "extraction did not write (was features.npy changed since?): it is marked stale, so "
        "rerunning the same command extracts it again."
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] is False
    assert manifest["stale"] == f"it holds NaN or infinite values ({where})"
    with pytest.raises(UserError, match="no complete feature cache"):
        FeatureCache.open(folder)
    capsys.readouterr()
    again = extract(folder, checkpoint, features_prepared)
    assert f"it holds NaN or infinite values ({where})" in capsys.readouterr().out
    assert np.isfinite(again.features[:].astype(np.float32)).all()
    assert "stale" not in json.loads((folder / "manifest.json").read_text())


@pytest.mark.slow
def test_extraction_from_a_nan_checkpoint_names_it_and_completes_nothing(
    features_prepared, tmp_path
):
    checkpoint = save_checkpoint(tmp_path / "best.ckpt", seed=1)
    saved = torch.load(checkpoint, weights_only=True)
    for value in saved["state_dict"].values():
        if value.is_floating_point():
            value.fill_(float("nan"))
    torch.save(saved, checkpoint)
    folder = tmp_path / "features"
    with pytest.raises(UserError) as error:
        extract(folder, checkpoint, features_prepared, views=VIEWS[:1])
    assert str(error.value).startswith(
        f"extracting the features of {checkpoint} into {folder}: non-finite head features"
    )
    assert not (folder / "manifest.json").exists()


def test_prepare_command_repeats_the_recorded_sources(tmp_path):
    sources = {"affwild2": "/d/Aff Wild2", "expw": None, "afew_va": "/d/afew", "affectnet": None}
    manifest = {"sources": sources, "options": {"expr_va_source": "affwild2"}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert prepare_command(tmp_path) == (
        f"abaw prepare --affwild2 '/d/Aff Wild2' --afew-va /d/afew --expr-va-source affwild2 "
        f"--out {tmp_path}"
    )
    (tmp_path / "manifest.json").write_text("{")
    assert prepare_command(tmp_path) == f"abaw prepare ... --out {tmp_path}"


@pytest.mark.parametrize("sources", [("affwild2", "expw"), ()])
def test_a_data_root_that_is_no_prepared_folder_says_what_to_run(tmp_path, sources):
    root = tmp_path / "synth"
    for name in sources:
        (root / name).mkdir(parents=True)
    root.mkdir(exist_ok=True)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        overrides = ["experiment=demo", f"data.root={root}", f"runs_dir={tmp_path / 'runs'}"]
        cfg = compose("train", overrides=overrides)
    with pytest.raises(UserError) as error:
        pipeline.run_pipeline(cfg)
    message = str(error.value)
    if sources:
        command = f"abaw prepare --affwild2 {root / 'affwild2'} --expw {root / 'expw'} --out"
        assert command in message and f"data.root={root}_prepared" in message
    else:
        assert "holds no prepared tables" in message
    assert not (tmp_path / "runs").exists()  # refused at the plan: nothing written


def test_a_data_root_holding_a_prepared_folder_names_it(tmp_path):
    demo = tmp_path / "demo"  # abaw demo's --out: synth/, prepared/, runs/
    (demo / "prepared").mkdir(parents=True)
    (demo / "prepared" / "manifest.json").write_text("{}")
    overrides = ["experiment=demo", f"data.root={demo}", f"runs_dir={tmp_path / 'runs'}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with pytest.raises(UserError, match=f"set data.root={demo / 'prepared'}$"):
        pipeline.run_pipeline(cfg)
