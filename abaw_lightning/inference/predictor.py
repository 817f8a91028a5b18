"""`Predictor`: per-frame expressions and valence-arousal of every face from a trained CNN
checkpoint, faces tracked across frames, with the GRU of a temporal-stage checkpoint over each
face track when one is given."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from abaw_lightning import EXPR_CLASSES
from abaw_lightning.data.loading.transforms import val_transform
from abaw_lightning.data.loading.windows import LENGTH, eval_windows
from abaw_lightning.errors import UserError
from abaw_lightning.inference.detection import (
    MARGIN,
    Detection,
    Detector,
    HaarDetector,
    as_detections,
    crop_face,
)
from abaw_lightning.inference.media import read_rgb, read_video, video_info
from abaw_lightning.inference.progress import progress_bar
from abaw_lightning.inference.tracking import MAX_GAP, FaceTracker, nearest
from abaw_lightning.losses import va_expectation
from abaw_lightning.models import MultitaskCNN, TemporalModel
from abaw_lightning.models.checkpoints import load_cnn_and_settings, load_temporal_and_settings
from abaw_lightning.models.features import HEADS
from abaw_lightning.models.heads import HEAD_FEATURES
from abaw_lightning.models.multitask import NUM_EXPR, NUM_VA_LOGITS

PREDICTION_COLUMNS = [*EXPR_CLASSES, "expression", "valence", "arousal"]
"""The 7 expression probabilities, the most probable class, valence and arousal in [-1, 1]."""
BOX_COLUMNS = ["face", "x", "y", "w", "h"]
"""Whether a face was detected in this row's frame, and its box (x, y, width, height) in pixels."""
FACE_COLUMNS = ["face_id", *BOX_COLUMNS, "score", "filled"]
"""The face track, its detection, the detector's score, and whether the row's predictions were
filled from the track's nearest detected frame (the face was not detected in this frame)."""
PHOTO_COLUMNS = ["image", "face_id", *BOX_COLUMNS, "score"]
"""A row of an independent photo: its file name, the face's number in it (left to right), its
detection and score."""


def _empty_outputs() -> dict[str, np.ndarray]:
    return {
        "expr": np.zeros((0, NUM_EXPR), np.float32),
        "va": np.zeros((0, NUM_VA_LOGITS), np.float32),
        "features": np.zeros((0, len(HEADS), HEAD_FEATURES), np.float32),
    }


def _check_crop(crop: np.ndarray, index: int) -> np.ndarray:
    if not isinstance(crop, np.ndarray) or crop.dtype != np.uint8 or crop.ndim != 3:
        raise UserError(
            f"face crop {index} is not an RGB uint8 [H, W, 3] array "
            f"(got {getattr(crop, 'dtype', type(crop).__name__)}, "
            f"shape {getattr(crop, 'shape', None)})"
        )
    if crop.shape[2] != 3:
        raise UserError(f"face crop {index} has {crop.shape[2]} channels; give RGB [H, W, 3]")
    return crop


def prediction_table(present: np.ndarray, probs: np.ndarray, va: np.ndarray) -> pd.DataFrame:
    """One row per item: PREDICTION_COLUMNS where `present`, empty (NaN / <NA>) elsewhere."""
    present = np.asarray(present, dtype=bool)
    n = len(present)
    table = pd.DataFrame(np.full((n, NUM_EXPR), np.nan), columns=list(EXPR_CLASSES))
    table.loc[present, list(EXPR_CLASSES)] = probs
    expression = np.full(n, None, dtype=object)
    expression[present] = np.asarray(EXPR_CLASSES)[probs.argmax(axis=1)]
    table["expression"] = pd.array(expression, dtype="string")
    for index, name in enumerate(("valence", "arousal")):
        values = np.full(n, np.nan)
        values[present] = va[:, index]
        table[name] = values
    return table


def box_table(boxes: Sequence[tuple[int, int, int, int] | None]) -> pd.DataFrame:
    """BOX_COLUMNS for a list of boxes (None: no face), integer columns with <NA> gaps."""
    table = pd.DataFrame({"face": [box is not None for box in boxes]})
    for index, name in enumerate(BOX_COLUMNS[1:]):
        values = [None if box is None else int(box[index]) for box in boxes]
        table[name] = pd.array(values, dtype="Int64")
    return table


class _TrackRows:
    """The rows of a faces table, gathered track by track, then sorted by frame and face_id."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.face_ids: list[np.ndarray] = []
        self.found: list[Detection | None] = []
        self.filled: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []
        self.va: list[np.ndarray] = []

    def add(
        self,
        frames: np.ndarray,
        face_id: int,
        found: list[Detection | None],
        filled: np.ndarray,
        probs: np.ndarray,
        va: np.ndarray,
    ) -> None:
        """One track: its frames, detections (None where filled) and predictions."""
        self.frames.append(np.asarray(frames, dtype=np.int64))
        self.face_ids.append(np.full(len(frames), face_id, dtype=np.int64))
        self.found += found
        self.filled.append(np.asarray(filled, dtype=bool))
        self.probs.append(np.asarray(probs, dtype=np.float64))
        self.va.append(np.asarray(va, dtype=np.float64))

    def add_empty(self, frames: np.ndarray) -> None:
        """Frames without any face: a row each, no face_id, empty predictions."""
        n = len(frames)
        self.add(
            frames,
            -1,
            [None] * n,
            np.zeros(n, bool),
            np.full((n, NUM_EXPR), np.nan),
            np.full((n, 2), np.nan),
        )

    def covered(self) -> np.ndarray:
        """The frames that have a row."""
        return np.concatenate([np.zeros(0, np.int64), *self.frames])

    def table(self) -> pd.DataFrame:
        """``frame``, FACE_COLUMNS, PREDICTION_COLUMNS, sorted by frame then face_id."""
        frames, face_ids = np.concatenate(self.frames), np.concatenate(self.face_ids)
        order = np.lexsort((face_ids, frames))
        found = [self.found[i] for i in order]
        present = face_ids[order] >= 0
        table = pd.DataFrame({"frame": frames[order]})
        table["face_id"] = pd.arrays.IntegerArray(face_ids[order], ~present)
        table = pd.concat([table, box_table([None if f is None else f.box for f in found])], axis=1)
        table["score"] = [np.nan if f is None else f.score for f in found]
        table["filled"] = np.concatenate(self.filled)[order]
        probs, va = np.concatenate(self.probs)[order], np.concatenate(self.va)[order]
        predictions = prediction_table(present, probs[present], va[present])
        return pd.concat([table, predictions], axis=1)


def select_device(device: str | torch.device | None = None) -> torch.device:
    """The given torch device, or cuda when available else cpu; an unusable one is a UserError."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise UserError(f"unknown device {device!r}: use cpu, cuda or cuda:<index>") from error
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but no CUDA GPU is available: use cpu")
    return chosen


class Predictor:
    """A trained multitask CNN (and optionally its GRU) ready for new faces.

    Face crops are resized and centre-cropped exactly as in validation (the checkpoint's
    ``image_size`` and ``resize``); full images and video frames first go through the detector,
    whose `max_faces` most confident boxes (None: all) are cut as squares with `margin` added on
    each side and followed across frames by a `FaceTracker` (`max_faces=1`: no tracking, the most
    confident face of each frame is face 0). With a GRU, each sequence (a face track, a list of
    crops) is cut into non-overlapping windows of the checkpoint's ``window_length``, the last one
    end-aligned, so every frame is predicted once.
    """

    def __init__(
        self,
        cnn: MultitaskCNN,
        gru: TemporalModel | None = None,
        *,
        image_size: int = 112,
        resize: int | None = None,
        va_anchors: str = "linspace",
        gru_va_anchors: str = "linspace",
        window_length: int = LENGTH,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        detector: Detector | None = None,
        margin: float = MARGIN,
        max_faces: int | None = None,
        max_gap: int = MAX_GAP,
        progress: bool = True,
    ) -> None:
        if max_faces is not None and max_faces < 1:
            raise UserError(
                f"max_faces (--max-faces) must be 1 or more (None: all), not {max_faces}"
            )
        if max_gap < 0:
            raise UserError(f"max_gap (--max-gap) must be 0 or more frames, not {max_gap}")
        self.device = select_device(device)
        self.cnn = cnn.eval().to(self.device)
        self.gru = None if gru is None else gru.eval().to(self.device)
        self.transform = val_transform(image_size, resize)
        self.image_size = image_size
        self.va_anchors = va_anchors
        self.gru_va_anchors = gru_va_anchors
        self.window_length = window_length
        self.batch_size = max(1, batch_size)
        self._detector = detector
        self.margin = margin
        self.max_faces = max_faces
        self.max_gap = max_gap
        self.progress = progress

    @classmethod
    def from_checkpoints(
        cls,
        ckpt: str | Path,
        gru_ckpt: str | Path | None = None,
        device: str | torch.device | None = None,
        **options,
    ) -> Predictor:
        """Load a CNN-stage checkpoint (and a GRU-stage one); `options` go to the constructor."""
        cnn, settings = load_cnn_and_settings(ckpt)
        gru, gru_settings = None, {}
        if gru_ckpt is not None:
            gru, gru_settings = load_temporal_and_settings(gru_ckpt)
        return cls(
            cnn,
            gru,
            image_size=settings.get("image_size", 112),
            resize=settings.get("resize"),
            va_anchors=settings.get("va_anchors", "linspace"),
            gru_va_anchors=gru_settings.get("va_anchors", "linspace"),
            window_length=gru_settings.get("window_length", LENGTH),
            device=device,
            **options,
        )

    @property
    def detector(self) -> Detector:
        """The face detector: the one given, else OpenCV's Haar cascade (made on first use)."""
        if self._detector is None:
            self._detector = HaarDetector()
        return self._detector

    @torch.inference_mode()
    def _cnn_batch(self, crops: list[np.ndarray]) -> dict[str, np.ndarray]:
        images = np.stack([self.transform(np.ascontiguousarray(crop)) for crop in crops])
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(self.device)
        outputs = self.cnn(tensor)
        features = torch.stack([outputs[head] for head in HEADS], dim=1)
        return {
            "expr": outputs["expr"].float().cpu().numpy(),
            "va": outputs["va"].float().cpu().numpy(),
            "features": features.float().cpu().numpy(),
        }

    def _cnn_stream(
        self, groups: Iterable[Sequence[np.ndarray]], total: int | None, description: str
    ) -> dict[str, np.ndarray]:
        """CNN outputs of every crop of a stream of groups (the faces of one frame), in order, in
        batches; the progress bar counts groups."""
        chunks, pending = [], []
        with progress_bar(description, total, self.progress) as advance:
            for group in groups:
                for crop in group:
                    pending.append(crop)
                    if len(pending) == self.batch_size:
                        chunks.append(self._cnn_batch(pending))
                        pending = []
                advance(1)
            if pending:
                chunks.append(self._cnn_batch(pending))
        if not chunks:
            return _empty_outputs()
        return {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}

    def cnn_outputs(
        self,
        crops: Iterable[np.ndarray | None],
        total: int | None = None,
        description: str = "faces",
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Run the CNN over a stream of face crops (None: no face) in batches.

        Returns which items had a crop, and for those, in order: ``expr`` [M, 7] and ``va``
        [M, 40] logits and ``features`` [M, 2, 128] (EXPR then VA head feature).
        """
        present: list[bool] = []

        def groups() -> Iterator[list[np.ndarray]]:
            for crop in crops:
                present.append(crop is not None)
                yield [] if crop is None else [crop]

        outputs = self._cnn_stream(groups(), total, description)
        return np.asarray(present, dtype=bool), outputs

    @torch.inference_mode()
    def temporal_outputs(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """GRU logits ``expr`` [N, 7] and ``va`` [N, 40] for a sequence of features [N, 2, 128]:
        non-overlapping windows, the last one end-aligned (a short sequence padded), every frame
        taken from exactly one window."""
        if self.gru is None:
            raise UserError("this Predictor has no GRU: give a GRU-stage checkpoint (gru_ckpt)")
        n = len(features)
        logits = {
            "expr": np.zeros((n, NUM_EXPR), np.float32),
            "va": np.zeros((n, NUM_VA_LOGITS), np.float32),
        }
        if n == 0:
            return logits
        frames = pd.DataFrame({"video": np.zeros(n, np.int64), "frame": np.arange(n)})
        windows, score = eval_windows(frames, self.window_length)
        features = np.asarray(features, dtype=np.float32)
        for start in range(0, len(windows), self.batch_size):
            rows, keep = (
                windows[start : start + self.batch_size],
                score[start : start + self.batch_size],
            )
            outputs = self.gru(torch.from_numpy(features[rows]).to(self.device))
            for task, values in outputs.items():
                logits[task][rows[keep]] = values.float().cpu().numpy()[keep]
        return logits

    def decode(
        self, outputs: dict[str, np.ndarray], temporal: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Expression probabilities [N, 7] and valence-arousal [N, 2] from CNN outputs, through
        the GRU when `temporal` (default: whenever the Predictor has one)."""
        temporal = self.gru is not None if temporal is None else temporal
        logits, anchors = outputs, self.va_anchors
        if temporal:
            logits, anchors = self.temporal_outputs(outputs["features"]), self.gru_va_anchors
        probs = torch.from_numpy(logits["expr"]).float().softmax(dim=-1).numpy()
        va = va_expectation(torch.from_numpy(logits["va"]).float(), anchors).clamp(-1, 1).numpy()
        return probs, va

    def predict_frames(
        self, crops: np.ndarray | Sequence[np.ndarray], temporal: bool | None = None
    ) -> pd.DataFrame:
        """Face crops (RGB uint8, a list of [H, W, 3] or one [N, H, W, 3] array) -> one row per
        crop: ``frame`` then PREDICTION_COLUMNS. With a GRU the crops are one sequence."""
        if isinstance(crops, np.ndarray) and crops.ndim != 4:
            raise UserError(f"face crops must be [N, H, W, 3]; got an array of shape {crops.shape}")
        checked = [_check_crop(crop, index) for index, crop in enumerate(crops)]
        present, outputs = self.cnn_outputs(checked, len(checked))
        table = prediction_table(present, *self.decode(outputs, temporal))
        table.insert(0, "frame", np.arange(len(table)))
        return table

    def _detect(
        self, images: Iterable[np.ndarray], frames: list[list[tuple[int, Detection]]]
    ) -> Iterator[list[np.ndarray]]:
        """The face crops of each image, at most `max_faces`, most confident first; each frame's
        (face_id, detection) pairs go to `frames`."""
        tracker = None if self.max_faces == 1 else FaceTracker(max_gap=self.max_gap)
        for frame, image in enumerate(images):
            faces = as_detections(self.detector(image))[: self.max_faces]
            if tracker is None:
                ids = [0] * len(faces)
            else:
                ids = tracker.update(frame, [face.box for face in faces])
            frames.append(list(zip(ids, faces, strict=True)))
            yield [crop_face(image, face.box, self.margin) for face in faces]

    def _faces_table(
        self, images: Iterable[np.ndarray], total: int | None, label: str, temporal: bool | None
    ) -> pd.DataFrame:
        """``frame``, FACE_COLUMNS and PREDICTION_COLUMNS: a row per face track and frame from
        its first to its last detection (gaps filled from the nearest detected frame, except with
        `max_faces=1`), and an empty row for each frame without any."""
        frames: list[list[tuple[int, Detection]]] = []
        outputs = self._cnn_stream(self._detect(images, frames), total, label)
        faces = [(frame, *found) for frame, per_frame in enumerate(frames) for found in per_frame]
        face_frames = np.array([frame for frame, _, _ in faces], dtype=np.int64)
        face_ids = np.array([face_id for _, face_id, _ in faces], dtype=np.int64)
        rows = _TrackRows()
        for face_id in np.unique(face_ids):
            indices = np.flatnonzero(face_ids == face_id)
            detected = face_frames[indices]
            if self.max_faces == 1:
                span, pick = detected, indices
            else:
                span = np.arange(detected[0], detected[-1] + 1)
                pick = indices[nearest(detected - detected[0] + 1, len(span))]
            probs, va = self.decode({key: value[pick] for key, value in outputs.items()}, temporal)
            filled = ~np.isin(span, detected)
            found = [
                None if gap else faces[index][2] for gap, index in zip(filled, pick, strict=True)
            ]
            rows.add(span, face_id, found, filled, probs, va)
        rows.add_empty(np.setdiff1d(np.arange(len(frames)), rows.covered()))
        return rows.table()

    def predict_video(self, path: str | Path, temporal: bool | None = None) -> pd.DataFrame:
        """Rows by frame and face: ``frame`` (0-based), ``time`` (s), FACE_COLUMNS, then
        PREDICTION_COLUMNS (empty in a frame without a face). With a GRU, it runs over each face
        track (with `max_faces=1`: over the frames with a face), in order. The frame count the
        container lists (0: none) is ``table.attrs["listed_frames"]``: a damaged video decodes
        fewer."""
        path = Path(path)
        info = video_info(path)
        table = self._faces_table(read_video(path), info.frames or None, path.name, temporal)
        table.insert(1, "time", table["frame"] / info.fps if info.fps else np.nan)
        table.attrs["listed_frames"] = info.frames
        return table

    def predict_images(
        self, paths: Sequence[str | Path], temporal: bool | None = None
    ) -> pd.DataFrame:
        """Rows by readable image and face: ``frame`` (the image's position), ``image`` (file
        name), FACE_COLUMNS, PREDICTION_COLUMNS. The images are one sequence: faces are tracked
        across them and, with a GRU, each track is one sequence. Unreadable files are left out
        and listed in ``table.attrs["unreadable"]``."""
        paths = [Path(p) for p in paths]
        if not paths:
            raise UserError("no images given")
        readable: list[Path] = []
        unreadable: list[str] = []

        def images() -> Iterable[np.ndarray]:
            for path in paths:
                image = read_rgb(path)
                if image is None:
                    unreadable.append(str(path))
                    continue
                readable.append(path)
                yield image

        label = paths[0].parent.name or "images"
        table = self._faces_table(images(), len(paths), label, temporal)
        if not readable:
            raise UserError(f"none of the {len(paths)} images could be read (first: {paths[0]})")
        table.insert(1, "image", [readable[frame].name for frame in table["frame"]])
        table.attrs["unreadable"] = unreadable
        return table

    def predict_photos(self, paths: Sequence[str | Path]) -> pd.DataFrame:
        """Independent photos, each on its own: PHOTO_COLUMNS then PREDICTION_COLUMNS, a row per
        face (at most `max_faces`, numbered left to right as in a video's first frame) or one
        empty row for a photo without any; the CNN alone (no tracking, filling or GRU). Unreadable
        files are left out and listed in ``table.attrs["unreadable"]``."""
        paths = [Path(p) for p in paths]
        if not paths:
            raise UserError("no images given")
        photos: list[tuple[str, list[Detection]]] = []
        unreadable: list[str] = []

        def crops() -> Iterator[list[np.ndarray]]:
            for path in paths:
                image = read_rgb(path)
                if image is None:
                    unreadable.append(str(path))
                    yield []
                    continue
                faces = as_detections(self.detector(image))[: self.max_faces]
                faces.sort(key=lambda face: (face.x, face.y))
                photos.append((path.name, faces))
                yield [crop_face(image, face.box, self.margin) for face in faces]

        outputs = self._cnn_stream(crops(), len(paths), paths[0].parent.name or "images")
        if not photos:
            raise UserError(f"none of the {len(paths)} images could be read (first: {paths[0]})")
        rows = [(name, i, face) for name, faces in photos for i, face in enumerate(faces or [None])]
        present = np.array([face is not None for _, _, face in rows], dtype=bool)
        table = pd.DataFrame({"image": [name for name, _, _ in rows]})
        face_ids = np.array([i for _, i, _ in rows], dtype=np.int64)
        table["face_id"] = pd.arrays.IntegerArray(face_ids, ~present)
        boxes = [None if face is None else face.box for _, _, face in rows]
        table = pd.concat([table, box_table(boxes)], axis=1)
        table["score"] = [np.nan if face is None else face.score for _, _, face in rows]
        table = pd.concat([table, prediction_table(present, *self.decode(outputs, False))], axis=1)
        table.attrs["unreadable"] = unreadable
        return table
