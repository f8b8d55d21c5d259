"""The vision front end: Haar faces, dlib landmarks, tracking with stable ids, mouth crops, lip aperture.

Real-data checks run on the GRID talking-face clips in ../shared/data/av/grid.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from kikimimi.engine.errors import ParamError
from kikimimi.engine.msgs.vision import MOUTH_SIZE
from kikimimi.models.vision import _deps
from kikimimi.models.vision.clip import AvClip, read_av_clip
from kikimimi.models.vision.landmarks import lip_aperture, plausible
from kikimimi.models.vision.mouth import MouthCropper
from kikimimi.models.vision.tracker import FaceTracker, iou


@pytest.fixture(scope="module")
def grid_clips(data_dir: Path) -> dict[str, AvClip]:
    paths = sorted((data_dir / "av" / "grid").glob("*.mpg"))
    if len(paths) != 7:
        pytest.fail(f"expected the 7 GRID clips in {data_dir / 'av' / 'grid'}, found {len(paths)}")
    return {p.name: read_av_clip(p) for p in paths}


def envelope(clip: AvClip) -> np.ndarray:
    """Log RMS of the 40 ms of audio starting at each frame's instant."""
    hop = round(clip.sample_rate / clip.fps)
    return np.array([math.log(math.sqrt(float(np.mean(clip.audio[s:s + hop] ** 2))) + 1e-4)
                     for s in clip.frame_samples])


# ------------------------------------------------------------------------------------------ real data
@pytest.mark.slow
@pytest.mark.data
def test_face_and_mouth_found_in_at_least_95_percent_of_grid_frames(grid_clips: dict[str, AvClip]) -> None:
    for name, c in grid_clips.items():
        n = len(c.has_face)
        assert n >= 70, f"{name}: only {n} frames decoded"
        found = c.has_face & (c.boxes[:, 2] > 40) & (c.mouth_boxes[:, 2] > 10)
        assert found.mean() >= 0.95, f"{name}: face and mouth in {found.mean():.0%} of frames"
        # The mouth region lies inside the lower half of the face box.
        ok = c.has_face
        mcy = c.mouth_boxes[ok, 1] + c.mouth_boxes[ok, 3] / 2
        assert np.all(mcy > c.boxes[ok, 1] + 0.5 * c.boxes[ok, 3]), name
        assert np.all(mcy < c.boxes[ok, 1] + 1.2 * c.boxes[ok, 3]), name


@pytest.mark.data
def test_lip_aperture_correlates_positively_with_the_audio_envelope_on_every_clip(
        grid_clips: dict[str, AvClip]) -> None:
    for name, c in grid_clips.items():
        ok = c.has_face
        r = float(np.corrcoef(c.aperture[ok], envelope(c)[ok])[0, 1])
        assert r > 0.15, f"{name}: aperture/envelope correlation {r:.3f}"


@pytest.mark.data
def test_lips_move_more_during_words_than_in_the_silences(data_dir: Path, grid_clips: dict[str, AvClip]) -> None:
    """swwp2s.align gives the word times of id2_vcd_swwp2s.mpg (units of 1/25000 s). The talker starts with
    the lips parted in the leading silence, so the test compares motion (frame-to-frame change), not opening."""
    c = grid_clips["id2_vcd_swwp2s.mpg"]
    rows = [line.split() for line in (data_dir / "av" / "grid" / "swwp2s.align").read_text().splitlines()]
    t = c.frame_samples / c.sample_rate
    speech = np.zeros(len(t), bool)
    for a, b, word in rows:
        if word != "sil":
            speech |= (t >= int(a) / 25000) & (t < int(b) / 25000)
    motion = np.abs(np.diff(c.aperture, prepend=c.aperture[0]))
    assert motion[speech].mean() > 2 * motion[~speech].mean()


@pytest.mark.slow
@pytest.mark.data
def test_one_talker_keeps_one_face_id_through_every_clip(data_dir: Path) -> None:
    """Each GRID clip shows one talker: one face per frame, one id per clip (pwij3p and swwp2s made the Haar
    cascade fire a second time on the lower face before overlapping detections were suppressed)."""
    from kikimimi.models.vision.clip import read_audio_video
    from kikimimi.models.vision.frontend import VisionFrontEnd

    fe = VisionFrontEnd(detect_every=5)
    for path in sorted((data_dir / "av" / "grid").glob("*.mpg")):
        _, frames, _, _ = read_audio_video(path)
        fe.reset()
        ids = set()
        before = fe.timings.detections
        for img in frames:
            faces = fe.process(img)
            assert len(faces) == 1, f"{path.name}: {len(faces)} faces"
            ids.add(faces[0].face_id)
            assert faces[0].mouth.shape == (MOUTH_SIZE, MOUTH_SIZE)
        assert len(ids) == 1, f"{path.name}: face ids {sorted(ids)}"
        assert fe.timings.detections - before == math.ceil(len(frames) / 5)


# ------------------------------------------------------------------------------------------ synthetic
def face_landmarks(cx: float, cy: float, eye_dist: float, angle: float = 0.0, aperture: float = 0.2) -> np.ndarray:
    """A plausible 68-point face: eyes level (then rotated by ``angle``), mouth below, inner lips apart."""
    lm = np.zeros((68, 2), np.float64)
    d = eye_dist
    lm[0:17] = [(cx - d + 2 * d * i / 16, cy + 0.2 * d + 0.8 * d * math.sin(math.pi * i / 16)) for i in range(17)]
    lm[17:27] = [(cx - d + 2 * d * i / 9, cy - 0.7 * d) for i in range(10)]
    lm[27:36] = [(cx, cy - 0.4 * d + 0.1 * d * i) for i in range(9)]
    lm[36:42] = [(cx - d / 2 + 0.1 * d * math.cos(2 * math.pi * i / 6), cy - 0.5 * d) for i in range(6)]
    lm[42:48] = [(cx + d / 2 + 0.1 * d * math.cos(2 * math.pi * i / 6), cy - 0.5 * d) for i in range(6)]
    mw = 0.8 * d
    my = cy + 0.5 * d
    lm[48:60] = [(cx + mw / 2 * math.cos(math.pi * i / 6), my + 0.15 * d * math.sin(math.pi * i / 6))
                 for i in range(12)]
    lm[48], lm[54] = (cx - mw / 2, my), (cx + mw / 2, my)
    gap = aperture * mw / 2
    lm[60], lm[64] = (cx - mw / 2.5, my), (cx + mw / 2.5, my)
    for k, (up, lo) in enumerate(((61, 67), (62, 66), (63, 65))):
        x = cx + (k - 1) * mw / 5
        lm[up] = (x, my - gap)
        lm[lo] = (x, my + gap)
    c, s = math.cos(angle), math.sin(angle)
    rot = (lm - (cx, cy)) @ np.array([[c, s], [-s, c]]) + (cx, cy)
    return rot.astype(np.float32)


def test_lip_aperture_measures_the_inner_lip_gap_over_mouth_width() -> None:
    assert lip_aperture(face_landmarks(100, 100, 50, aperture=0.0)) == pytest.approx(0.0, abs=1e-6)
    assert lip_aperture(face_landmarks(100, 100, 50, aperture=0.3)) == pytest.approx(0.3, rel=1e-4)
    # Rotation and scale do not change it.
    assert lip_aperture(face_landmarks(300, 200, 90, angle=0.4, aperture=0.3)) == pytest.approx(0.3, rel=1e-4)


def test_mouth_crop_is_level_and_scaled_whatever_the_head_roll() -> None:
    crop = MouthCropper()
    gray = np.full((400, 400), 200, np.uint8)
    for angle in (0.0, 0.5, -0.3):
        lm = face_landmarks(200, 180, 80, angle=angle)
        img = gray.copy()
        # Draw a dark horizontal (in face coordinates) bar through the mouth corners.
        p0, p1 = lm[48], lm[54]
        for t in np.linspace(0, 1, 400):
            x, y = (int(v) for v in np.round(p0 + t * (p1 - p0)))
            img[y - 1:y + 2, x - 1:x + 2] = 0
        out, box = crop.crop(img, lm)
        assert out.shape == (MOUTH_SIZE, MOUTH_SIZE) and out.dtype == np.uint8
        rows = np.where(out.min(axis=1) < 60)[0]
        assert rows.size and rows.max() - rows.min() <= 6, f"angle {angle}: the bar spans rows {rows}"
        assert abs(rows.mean() - (MOUTH_SIZE - 1) / 2) <= 6
        # The mouth (0.8 eye distances wide) fills 0.8/1.3 of the crop's width.
        cols = np.where(out.min(axis=0) < 60)[0]
        assert (cols.max() - cols.min()) / MOUTH_SIZE == pytest.approx(0.8 / 1.3, abs=0.06)
        assert box[2] >= 0.8 * 80 * 1.3 - 2


def test_mouth_cropper_rejects_bad_settings() -> None:
    with pytest.raises(ParamError, match="scale=9"):
        MouthCropper(scale=9)


class FakeDetector:
    def __init__(self, script: list[list[tuple[int, int, int, int]]]) -> None:
        self.script = script
        self.calls = 0

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        boxes = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        return np.array(boxes, np.int32).reshape(-1, 4)


class FakePredictor:
    """Landmarks of a face centred in the given box, eye distance = box width / 2.5."""

    def predict(self, gray: np.ndarray, box: np.ndarray) -> np.ndarray:
        x, y, w, h = (float(v) for v in box)
        return face_landmarks(x + w / 2, y + h / 2, w / 2.5)


def test_tracker_keeps_ids_follows_between_detections_and_drops_lost_faces() -> None:
    gray = np.zeros((480, 640), np.uint8)
    a, b = (100, 100, 120, 120), (400, 120, 100, 100)
    det = FakeDetector([[a, b], [(104, 100, 120, 120), b], [(108, 100, 120, 120)], [(112, 100, 120, 120)],
                        [(116, 100, 120, 120)], [(116, 100, 120, 120), (300, 300, 90, 90)]])
    tr = FaceTracker(det, FakePredictor(), detect_every=3, max_misses=1)  # type: ignore[arg-type]
    seen, detected = [], []
    for _ in range(18):
        tracks = tr.update(gray)
        seen.append(sorted(t.face_id for t in tracks))
        detected.append(any(t.detected for t in tracks))
    assert det.calls == 6                        # frames 0, 3, 6, 9, 12, 15
    assert seen[0] == [0, 1] and seen[3] == [0, 1]
    assert seen[6] == [0, 1]                     # b missed once: still tracked (max_misses=1)
    assert seen[9] == [0]                        # b missed twice: dropped
    assert seen[15] == [0, 2] and seen[17] == [0, 2]   # a new face gets a new id; ids are not reused
    assert detected == [i % 3 == 0 for i in range(18)]


def test_tracker_rejects_bad_settings_and_implausible_faces() -> None:
    with pytest.raises(ParamError, match="detect_every=0"):
        FaceTracker(FakeDetector([[]]), FakePredictor(), detect_every=0)  # type: ignore[arg-type]
    assert not plausible(np.full((68, 2), np.nan, np.float32), (100, 100))
    assert plausible(face_landmarks(50, 50, 30), (100, 100))
    upside_down = face_landmarks(50, 50, 30, angle=math.pi)
    assert not plausible(upside_down, (100, 100))


def test_detections_inside_a_larger_face_are_suppressed() -> None:
    from kikimimi.models.vision.detect import suppress_overlaps

    boxes = np.array([[100, 100, 150, 150], [120, 170, 100, 100], [400, 100, 120, 120], [300, 120, 120, 120]],
                     np.int32)
    kept = suppress_overlaps(boxes)
    # The mouth-and-chin box lies mostly inside the first face; the two others overlap it little or not at all.
    assert kept.tolist() == [[100, 100, 150, 150], [400, 100, 120, 120], [300, 120, 120, 120]]


def test_two_tracks_on_one_face_keep_the_older_id() -> None:
    gray = np.zeros((480, 640), np.uint8)
    det = FakeDetector([[(100, 100, 120, 120)], [(100, 100, 120, 120), (400, 100, 100, 100)],
                        [(100, 100, 120, 120), (405, 100, 100, 100)]])
    tr = FaceTracker(det, FakePredictor(), detect_every=1)  # type: ignore[arg-type]
    assert [t.face_id for t in tr.update(gray)] == [0]
    assert sorted(t.face_id for t in tr.update(gray)) == [0, 1]
    tr.tracks[1].box = np.array([110.0, 105.0, 110.0, 110.0])   # track 1 jumps onto face 0
    det.script[2] = [(100, 100, 120, 120)]
    assert [t.face_id for t in tr.update(gray)] == [0]


def test_iou() -> None:
    assert iou(np.array([0, 0, 10, 10]), np.array([0, 0, 10, 10])) == 1.0
    assert iou(np.array([0, 0, 10, 10]), np.array([5, 0, 10, 10])) == pytest.approx(50 / 150)
    assert iou(np.array([0, 0, 10, 10]), np.array([20, 0, 10, 10])) == 0.0


def test_missing_model_file_names_the_install_command(tmp_path: Path) -> None:
    from kikimimi.models.vision.landmarks import LandmarkPredictor

    with pytest.raises(_deps.VisionUnavailable, match=r"pip install 'kikimimi\[vision\]'"):
        LandmarkPredictor(tmp_path / "nope.dat")
    assert _deps.predictor_path().name == "shape_predictor_68_face_landmarks.dat"
