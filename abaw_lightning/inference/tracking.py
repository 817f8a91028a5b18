"""Face tracks across the frames of a video: a greedy IoU / centre-distance tracker, and the
nearest-frame filling shared by track gaps and the ABAW submission lines."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from abaw_lightning.inference.detection import Box

MIN_IOU = 0.3
"""A detection continues a track when its box overlaps the track's last box by at least this..."""
MAX_CENTRE_DISTANCE = 0.5
"""...or when its centre is within this fraction of the last box's side of the last centre."""
MAX_GAP = 10
"""Frames in a row a track may go undetected and still continue (then they are filled)."""


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(width, 0) * max(height, 0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def centre_distance(last: Box, box: Box) -> float:
    """Distance between the two box centres, in units of `last`'s longer side."""
    dx = (box[0] + box[2] / 2) - (last[0] + last[2] / 2)
    dy = (box[1] + box[3] / 2) - (last[1] + last[3] / 2)
    return math.hypot(dx, dy) / max(last[2], last[3])


@dataclass
class _Track:
    face_id: int
    box: Box
    frame: int


class FaceTracker:
    """Gives each detection of a frame the id of the face track it continues, or a new id.

    Rule: the tracks seen within the last ``max_gap + 1`` frames are candidates; a (track,
    detection) pair can match when IoU(last box, box) >= `min_iou` or the centre distance is at
    most `max_centre_distance` of the last box's side; pairs are taken greedily, highest IoU
    first (then the nearest centre), each track and detection at most once. The detections left
    start new tracks, numbered 0, 1, ... in order of appearance (left to right within a frame).
    """

    def __init__(
        self,
        min_iou: float = MIN_IOU,
        max_centre_distance: float = MAX_CENTRE_DISTANCE,
        max_gap: int = MAX_GAP,
    ) -> None:
        self.min_iou = min_iou
        self.max_centre_distance = max_centre_distance
        self.max_gap = max_gap
        self.tracks: list[_Track] = []
        self.next_id = 0

    def update(self, frame: int, boxes: Sequence[Box]) -> list[int]:
        """The track id of each box of `frame` (frames come in increasing order)."""
        self.tracks = [t for t in self.tracks if frame - t.frame - 1 <= self.max_gap]
        pairs = []
        for t, track in enumerate(self.tracks):
            for b, box in enumerate(boxes):
                overlap, distance = iou(track.box, box), centre_distance(track.box, box)
                if overlap >= self.min_iou or distance <= self.max_centre_distance:
                    pairs.append((-overlap, distance, t, b))
        ids: list[int | None] = [None] * len(boxes)
        taken: set[int] = set()
        for _, _, t, b in sorted(pairs):
            if t not in taken and ids[b] is None:
                taken.add(t)
                ids[b] = self.tracks[t].face_id
                self.tracks[t].box, self.tracks[t].frame = tuple(boxes[b]), frame
        for b in sorted(range(len(boxes)), key=lambda b: (boxes[b][0], boxes[b][1])):
            if ids[b] is None:
                ids[b] = self.next_id
                self.tracks.append(_Track(self.next_id, tuple(boxes[b]), frame))
                self.next_id += 1
        return ids


def nearest(predicted: np.ndarray, total: int) -> np.ndarray:
    """For frames 1..total, the position in sorted `predicted` frame numbers of the nearest one
    (the earlier one on a tie)."""
    if len(predicted) == 1:
        return np.zeros(total, dtype=np.int64)
    frames = np.arange(1, total + 1)
    after = np.searchsorted(predicted, frames).clip(1, len(predicted) - 1)
    before = after - 1
    closer_after = (predicted[after] - frames) < (frames - predicted[before])
    return np.where(closer_after, after, before)
