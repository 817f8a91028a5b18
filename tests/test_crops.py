"""Face crops as released (METHOD.md section 1): ExpW boxes keep their aspect ratio, AFEW-VA squares
follow the eye corners and mouth, stored sides within [134, 268], crops on disk checked before
reuse. The ExpW and AFEW-VA cases go through the real readers and file layouts."""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import fixtures_formats as ff
import numpy as np
import pytest

from abaw_lightning.data.ingest.crops import (
    CROP_MAX,
    CROP_MIN,
    CropJob,
    box_square,
    crop,
    eye_aligned_square,
    landmark_square,
    make_crops,
)
from abaw_lightning.data.ingest.prepare import read_and_crop
from abaw_lightning.data.ingest.readers import Skipped
from abaw_lightning.data.loading.transforms import RESIZE


def spot_centres(image: np.ndarray) -> list[tuple[float, float]]:
    """Intensity-weighted centres (x, y) of the three bright blobs of a BGR image: the upper two
    left to right, then the lowest."""
    grey = image[:, :, 0].astype(np.float64)
    count, labels = cv2.connectedComponents((grey > 40).astype(np.uint8))
    ys, xs = np.mgrid[0 : grey.shape[0], 0 : grey.shape[1]]
    centres = []
    for label in range(1, count):
        w = grey * (labels == label)
        centres.append(((xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()))
    assert len(centres) == 3
    by_height = sorted(centres, key=lambda p: p[1])
    return [*sorted(by_height[:2]), by_height[2]]


def draw_disc(image: np.ndarray, x: float, y: float, radius: float) -> None:
    """A white anti-aliased disc at a sub-pixel centre (pixel-centre coordinates)."""
    cv2.circle(
        image, (round(x * 16), round(y * 16)), round(radius * 16), (255,) * 3, -1, cv2.LINE_AA, 4
    )


def extent(image: np.ndarray) -> tuple[int, int]:
    """Width and height of the bright region of a BGR image."""
    ys, xs = np.nonzero(image[:, :, 0] > 127)
    return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


# --- ExpW: the box's aspect ratio is kept -------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "stored"),
    [(60, 120, 134), (120, 60, 134), (400, 300, 268)],
)
def test_expw_box_is_cropped_without_distortion(tmp_path, width, height, stored):
    # a circle of diameter 0.8 x the box's shorter side, centred in the box, in an ExpW image
    shorter = min(width, height)
    image = np.zeros((height + 80, width + 100, 3), np.uint8)
    top, left = 40, 50
    radius = 0.4 * shorter
    draw_disc(image, left + (width - 1) / 2, top + (height - 1) / 2, radius)
    line = f"face.jpg 0 {top} {left} {left + width} {top + height} 12.5 3"
    root = ff.expw_dataset(tmp_path / "expw", [line], {"face.jpg": image})
    out = tmp_path / "prepared"

    rows, stats = read_and_crop("expw", root, out, workers=1, skipped=Skipped())

    assert stats["made"] == 1 and rows["image"].tolist() == ["crops/expw/face_0.jpg"]
    stored_crop = cv2.imread(str(out / "crops" / "expw" / "face_0.jpg"))
    assert stored_crop.shape == (stored, stored, 3)
    # the box's centred square (side = shorter side) resized to `stored`: the circle's diameter
    # is scaled by stored / shorter in x and in y alike (stretching the box would halve one)
    # (to the pixel quantisation of both images)
    drawn_x, drawn_y = extent(image)
    diameter_x, diameter_y = extent(stored_crop)
    assert abs(diameter_x - diameter_y) <= 1
    step = stored / shorter
    assert diameter_x == pytest.approx(drawn_x * step, abs=step + 1)
    assert diameter_y == pytest.approx(drawn_y * step, abs=step + 1)


def test_stored_sides_start_at_the_training_resize():
    assert (CROP_MIN, CROP_MAX) == (RESIZE, 2 * RESIZE)


def test_box_square_is_the_centred_square_of_the_shorter_side():
    # rows 10..129 (120 tall), columns 20..79 (60 wide): the square is rows 40..99
    assert box_square(10, 20, 80, 130) == (49.5, 69.5, 60.0, 0.0)
    assert box_square(10, 20, 81, 20 + 10 + 61) == (50.0, 50.0, 61.0, 0.0)


def test_box_crop_pads_black_outside_the_image():
    image = np.full((20, 20, 3), 200, np.uint8)
    out = crop(image, box_square(-10, -10, 30, 30))
    assert out.shape == (134, 134, 3)
    assert out[0, 0].tolist() == [0, 0, 0] and out[133, 133].tolist() == [0, 0, 0]
    assert out[67, 67].tolist() == [200, 200, 200]
    assert out[:, 40].tolist() == out[40, :].tolist()
    # crop pixel j samples source x = (j + 0.5) * 40 / 134 - 0.5 - 10; bilinear: all 200 where
    # both neighbours are inside [0, 19] (j = 35..98), non-zero where one is (j = 32..101)
    assert np.flatnonzero(out[67, :, 0] == 200).tolist() == list(range(35, 99))
    assert np.flatnonzero(out[67, :, 0]).tolist() == list(range(32, 102))


# --- AffectNet and AFEW-VA squares --------------------------------------------------------------


def test_landmark_square_has_five_percent_margin():
    # x spans -40..40, y spans -25..28 around (100, 100): side 80 * 1.1, centred on the box
    assert landmark_square(ff.face_landmarks()) == pytest.approx((100.0, 101.5, 88.0, 0.0))


def rolled_face(roll_deg: float, scale: float, centre: tuple[float, float]) -> np.ndarray:
    """68 landmarks: the fixture face with its mouth moved off the eye axis (+18, +12 face units),
    rolled by `roll_deg`, scaled and moved to `centre` (image coordinates, y down)."""
    face = ff.face_landmarks(centre=(0, 0))
    face[48:68] += (18, 12)
    return to_image(face, roll_deg, scale, centre)


def to_image(points, roll_deg: float, scale: float, centre: tuple[float, float]) -> np.ndarray:
    theta = math.radians(roll_deg)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x, y = points[:, 0], points[:, 1]
    rolled = np.stack(
        [x * math.cos(theta) - y * math.sin(theta), x * math.sin(theta) + y * math.cos(theta)], 1
    )
    return rolled * scale + np.asarray(centre)


@pytest.mark.parametrize(("scale", "stored"), [(2.0, 188), (3.2, 268)])
def test_afew_va_crop_box_is_the_released_one(tmp_path, scale, stored):
    roll, centre = 12.0, (330.0, 340.0)
    landmarks = rolled_face(roll, scale, centre)
    # In face units (before the roll): eye corners (-26, -10), (-14, -10) and (14, -10), (26, -10)
    # (the upper lid points 37, 38 at y = -12: the mean of 36-39 would be (-20, -11)); eye centres
    # (-20, -10), (20, -10): level once the roll is undone, horizontal distance 40. Mouth corners
    # (-15 + 18, 25 + 12), (15 + 18, 37): mouth centre (18, 37), vertical distance from the eye
    # centre (0, -10): 47. Side 2 x max(40, 47) = 94 (Euclidean distances from the means of 36-39
    # and 42-45 would give 2 x 51.3 = 102.5: 17 px more at scale 2); centre midway: (9, 13.5).
    half = 47.0
    corners_face = [(9 - half, 13.5 - half), (9 + half, 13.5 - half), (9 - half, 13.5 + half)]
    expected_corners = to_image(corners_face, roll, scale, centre)
    assert (
        landmarks[[36, 39, 42, 45]].round(6).tolist()
        == to_image([(-26, -10), (-14, -10), (14, -10), (26, -10)], roll, scale, centre)
        .round(6)
        .tolist()
    )

    # three markers at known face points, drawn into the AFEW-VA frame
    markers_face = [(-25, -20), (40, -20), (-25, 50)]
    markers = to_image(markers_face, roll, scale, centre)
    frame = np.zeros((680, 680, 3), np.uint8)
    for x, y in markers:
        draw_disc(frame, x, y, 2.5 * scale)
    afew = tmp_path / "afew_va"
    ff.afew_va_clip(
        afew, "007", {"00000": ff.afew_va_frame(3, -4, landmarks)}, ["00000"], image=frame
    )

    rows, stats = read_and_crop("afew_va", afew, tmp_path / "prepared", 1, Skipped())

    assert stats["made"] == 1
    stored_crop = cv2.imread(str(tmp_path / "prepared" / rows["image"][0]))
    assert stored_crop.shape == (stored, stored, 3)
    found = np.array(spot_centres(stored_crop))
    # fit crop = k R(image) + t to the markers, then map the crop's corners back to the image
    a = []
    for x, y in markers:
        a += [[x, -y, 1, 0], [y, x, 0, 1]]
    (p, q, tx, ty), *_ = np.linalg.lstsq(np.array(a), found.reshape(-1), rcond=None)
    forward = np.array([[p, -q], [q, p]])
    crop_corners = np.array([[-0.5, -0.5], [stored - 0.5, -0.5], [-0.5, stored - 0.5]])
    measured_corners = (crop_corners - (tx, ty)) @ np.linalg.inv(forward).T
    np.testing.assert_allclose(measured_corners, expected_corners, atol=1.0)
    # the markers' residual after the fit: the crop is a similarity of the frame (no stretch)
    assert np.abs(np.array(a) @ (p, q, tx, ty) - found.reshape(-1)).max() < 0.3
    # upright: the roll is undone
    assert math.degrees(math.atan2(q, p)) == pytest.approx(-roll, abs=0.2)


@pytest.mark.parametrize("angle", [-35.0, 0.0, 25.0])
def test_eye_aligned_crop_levels_the_eyes(angle):
    landmarks = ff.face_landmarks(centre=(110, 95), scale=1.5, angle_deg=angle)
    image = np.zeros((220, 220, 3), np.uint8)
    eyes = [(landmarks[36] + landmarks[39]) / 2, (landmarks[42] + landmarks[45]) / 2]
    mouth = (landmarks[48] + landmarks[54]) / 2
    for x, y in [*eyes, mouth]:
        draw_disc(image, x, y, 3)

    out = crop(image, eye_aligned_square(landmarks))

    # side 2 x max(eye distance 40, eye-mouth 35) = 80 face units = 120 px -> stored at 134;
    # centre (0, 7.5): a face point (u, v) lands at ((u / 80 + 0.5), ((v - 7.5) / 80 + 0.5)) x 134
    # in pixel-edge units (- 0.5 for pixel centres)
    assert out.shape == (134, 134, 3)
    (lx, ly), (rx, ry), (mx, my) = spot_centres(out)
    assert abs(ly - ry) < 0.1
    assert (lx, ly, rx, mx, my) == pytest.approx((33.0, 37.19, 100.0, 66.5, 95.81), abs=0.25)


# --- stored crops are checked before they are reused --------------------------------------------


def test_make_crops_reuses_only_valid_crops(tmp_path):
    src = ff.write_image(tmp_path / "src.png", size=(30, 40), value=77)
    (tmp_path / "broken.jpg").write_bytes(b"\x00" * 10)
    out = tmp_path / "out"
    jobs = [
        CropJob(str(src), str(out / name), box_square(0, 0, 40, 30))
        for name in ("x/a.jpg", "b.jpg", "c.jpg", "d.jpg")
    ]
    jobs += [
        CropJob(str(tmp_path / "broken.jpg"), str(out / "e.jpg"), box_square(0, 0, 4, 4)),
        CropJob(str(tmp_path / "gone.jpg"), str(out / "f.jpg"), box_square(0, 0, 4, 4)),
    ]
    first = make_crops(jobs, workers=1)
    assert (first.made, first.reused, first.redone) == (4, 0, 0)
    assert first.failed == {
        jobs[4].dst: "corrupt or unreadable image",
        jobs[5].dst: "corrupt or unreadable image",
    }
    made = cv2.imread(jobs[0].dst)
    assert made.shape == (134, 134, 3) and abs(int(made.mean()) - 77) <= 1
    assert sorted(os.listdir(out)) == ["b.jpg", "c.jpg", "d.jpg", "x"]

    # garbage, a truncated JPEG and a complete JPEG of the old 112x112 size are made again
    good = Path(jobs[0].dst).read_bytes()
    Path(jobs[1].dst).write_bytes(b"garbage")
    Path(jobs[2].dst).write_bytes(good[: len(good) // 2])
    cv2.imwrite(jobs[3].dst, np.full((112, 112, 3), 77, np.uint8))
    stamp = os.stat(jobs[0].dst).st_mtime_ns
    second = make_crops(jobs, workers=2)
    assert (second.made, second.reused, second.redone, len(second.failed)) == (0, 1, 3, 2)
    assert os.stat(jobs[0].dst).st_mtime_ns == stamp
    for job in jobs[1:4]:
        assert Path(job.dst).read_bytes() == good
    assert not [name for name in os.listdir(out) if name.endswith(".part")]
