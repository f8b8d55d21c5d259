"""Face tracking with stable ids: detect every N frames, follow the landmarks in between.

On a detection frame (every ``detect_every`` frames, and whenever nothing is tracked) the Haar
detections are matched to the tracks by overlap (IoU, greedy, largest first); a matched track takes
the detection's box, an unmatched detection starts a track with a new id, and a track missed by
``max_misses`` detection frames in a row is dropped. On the frames in between, each track's landmarks
are predicted again inside its previous box and the box follows them (through the offset between
landmark extent and detector box learned at the last detection), which is far cheaper than detecting.
A track whose landmarks stop looking like a face (:func:`~kikimimi.models.vision.landmarks.plausible`)
is dropped, and so is the newer of two tracks whose boxes overlap by more than half of the smaller
(two tracks on one face). Ids are never reused within a tracker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kikimimi.engine.errors import ParamError
from kikimimi.models.vision.detect import HaarFaceDetector, overlap_of_smaller
from kikimimi.models.vision.landmarks import LandmarkPredictor, landmark_box, plausible


@dataclass(eq=False)
class Track:
    """One tracked face: id, detector-style box (x, y, w, h, float), landmarks, bookkeeping."""

    face_id: int
    box: np.ndarray
    landmarks: np.ndarray
    detected: bool = True
    misses: int = 0
    frames: int = 1
    rel: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0, 1.0]))

    def learn_box(self) -> None:
        """Remember how the detector's box sits relative to the landmarks' extent."""
        lb = landmark_box(self.landmarks)
        w, h = max(lb[2], 1.0), max(lb[3], 1.0)
        self.rel = np.array([(self.box[0] - lb[0]) / w, (self.box[1] - lb[1]) / h, self.box[2] / w, self.box[3] / h])

    def follow(self) -> None:
        """Move the box with the landmarks (the inverse of :meth:`learn_box`)."""
        lb = landmark_box(self.landmarks)
        w, h = max(lb[2], 1.0), max(lb[3], 1.0)
        self.box = np.array([lb[0] + self.rel[0] * w, lb[1] + self.rel[1] * h, self.rel[2] * w, self.rel[3] * h])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


class FaceTracker:
    """Faces with stable ids across frames; see the module docstring. ``update(gray)`` -> the live tracks."""

    def __init__(self, detector: HaarFaceDetector, predictor: LandmarkPredictor, detect_every: int = 5,
                 max_faces: int = 4, min_iou: float = 0.3, max_misses: int = 2) -> None:
        if detect_every < 1 or max_faces < 1 or not 0.0 < min_iou < 1.0 or max_misses < 0:
            raise ParamError(f"detect_every={detect_every}, max_faces={max_faces}, min_iou={min_iou}, "
                             f"max_misses={max_misses}; allowed: detect_every >= 1, max_faces >= 1, "
                             "0 < min_iou < 1, max_misses >= 0")
        self.detector = detector
        self.predictor = predictor
        self.detect_every = detect_every
        self.max_faces = max_faces
        self.min_iou = min_iou
        self.max_misses = max_misses
        self.max_overlap = 0.5
        self.tracks: list[Track] = []
        self._next_id = 0
        self._since_detect = 0
        self.detections = 0

    def reset(self) -> None:
        """Forget every track (ids go on counting)."""
        self.tracks = []
        self._since_detect = 0

    def update(self, gray: np.ndarray) -> list[Track]:
        """Track the faces of the next frame (uint8 (h, w)); the live tracks, largest box first."""
        detect = not self.tracks or self._since_detect + 1 >= self.detect_every
        self._since_detect = 0 if detect else self._since_detect + 1
        if detect:
            self._detect(gray)
        else:
            for t in self.tracks:
                t.detected = False
                t.frames += 1
                t.landmarks = self.predictor.predict(gray, np.round(t.box).astype(np.int64))
                t.follow()
        self.tracks = [t for t in self.tracks if plausible(t.landmarks, gray.shape)]
        # Two tracks that drifted onto one face: the older one (lower id) keeps it.
        by_age = sorted(self.tracks, key=lambda t: t.face_id)
        kept: list[Track] = []
        for t in by_age:
            if all(overlap_of_smaller(t.box, k.box) <= self.max_overlap for k in kept):
                kept.append(t)
        self.tracks = sorted(kept, key=lambda t: -t.box[2] * t.box[3])
        return self.tracks

    def _detect(self, gray: np.ndarray) -> None:
        self.detections += 1
        boxes = self.detector(gray)[: self.max_faces].astype(np.float64)
        pairs = sorted(((iou(t.box, b), i, j) for i, t in enumerate(self.tracks) for j, b in enumerate(boxes)),
                       reverse=True)
        used_t: set[int] = set()
        used_b: set[int] = set()
        for score, i, j in pairs:
            if score < self.min_iou or i in used_t or j in used_b:
                continue
            used_t.add(i)
            used_b.add(j)
            t = self.tracks[i]
            t.box, t.misses, t.detected = boxes[j], 0, True
            t.frames += 1
            t.landmarks = self.predictor.predict(gray, np.round(t.box).astype(np.int64))
            t.learn_box()
        kept = []
        for i, t in enumerate(self.tracks):
            if i in used_t:
                kept.append(t)
                continue
            t.misses += 1
            if t.misses > self.max_misses:
                continue
            t.detected = False
            t.frames += 1
            t.landmarks = self.predictor.predict(gray, np.round(t.box).astype(np.int64))
            t.follow()
            kept.append(t)
        for j, b in enumerate(boxes):
            if j in used_b or len(kept) >= self.max_faces:
                continue
            t = Track(self._next_id, b, self.predictor.predict(gray, np.round(b).astype(np.int64)))
            self._next_id += 1
            t.learn_box()
            kept.append(t)
        self.tracks = kept
