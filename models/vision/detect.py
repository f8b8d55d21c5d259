"""Face detection with OpenCV's Haar cascade (frontal faces), on a downscaled grayscale frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kikimimi.engine.errors import ParamError
from kikimimi.models.vision import _deps


class HaarFaceDetector:
    """Frontal faces in a grayscale frame as int32 (n, 4) boxes (x, y, width, height), largest first.

    A detection lying mostly inside a larger one is dropped (:func:`suppress_overlaps`).

    The frame is shrunk so its longer side is at most ``max_side`` pixels before detection (speed), and
    the boxes are scaled back. ``min_face``: the smallest face side searched for, as a fraction of the
    frame's shorter side. ``scale_factor`` and ``min_neighbors`` are OpenCV's ``detectMultiScale`` knobs.
    With 1.2 instead of 1.1 the face was still found in all 525 GRID frames in half the time (8.7 against
    16.9 ms per 360x288 frame on one core), but the coarser boxes start dlib's landmark fit less well: the
    lip aperture's correlation with the audio fell (brbk7n 0.26 -> 0.17) and so did the active-speaker
    margins (0.144 -> 0.100). Detection runs every few frames, so 1.1 costs little.
    """

    def __init__(self, cascade: str | Path | None = None, scale_factor: float = 1.1, min_neighbors: int = 5,
                 min_face: float = 0.15, max_side: int = 360) -> None:
        if not 1.0 < scale_factor <= 2.0:
            raise ParamError(f"scale_factor={scale_factor} is not allowed; allowed: 1 < scale_factor <= 2")
        if min_neighbors < 0 or not 0.0 < min_face < 1.0 or max_side < 64:
            raise ParamError(f"min_neighbors={min_neighbors}, min_face={min_face}, max_side={max_side}; allowed: "
                             "min_neighbors >= 0, 0 < min_face < 1, max_side >= 64")
        self._cv2 = _deps.cv2()
        path = Path(cascade) if cascade else _deps.haar_cascade_path()
        self._cascade = self._cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise _deps.VisionUnavailable(f"OpenCV could not load the Haar cascade {path}")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face = min_face
        self.max_side = max_side

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        """Boxes of the faces in ``gray`` (uint8, (height, width)), int32 (n, 4), largest first."""
        if not isinstance(gray, np.ndarray) or gray.dtype != np.uint8 or gray.ndim != 2:
            raise ValueError(f"HaarFaceDetector needs a uint8 (height, width) grayscale frame, got "
                             f"{getattr(gray, 'dtype', type(gray).__name__)} {getattr(gray, 'shape', '')}")
        cv2 = self._cv2
        h, w = gray.shape
        scale = min(1.0, self.max_side / max(h, w))
        small = gray if scale == 1.0 else cv2.resize(gray, (round(w * scale), round(h * scale)),
                                                      interpolation=cv2.INTER_AREA)
        side = max(24, int(self.min_face * min(small.shape)))
        found = self._cascade.detectMultiScale(small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                               minSize=(side, side))
        if len(found) == 0:
            return np.zeros((0, 4), np.int32)
        boxes = np.round(np.asarray(found, np.float64) / scale).astype(np.int32)
        order = np.argsort(-(boxes[:, 2].astype(np.int64) * boxes[:, 3]), kind="stable")
        return suppress_overlaps(boxes[order])


def overlap_of_smaller(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection area of two (x, y, w, h) boxes over the smaller one's area (1.0: one lies inside the other)."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, float(x1 - x0)) * max(0.0, float(y1 - y0))
    small = min(float(a[2]) * float(a[3]), float(b[2]) * float(b[3]))
    return inter / small if small > 0 else 0.0


def suppress_overlaps(boxes: np.ndarray, max_overlap: float = 0.5) -> np.ndarray:
    """Keep boxes (sorted largest first) that overlap no kept box by more than ``max_overlap`` of the smaller.

    The Haar cascade often fires a second time on part of a face (the mouth and chin, one eye and the
    nose); two faces of people in a room do not overlap that much.
    """
    kept: list[np.ndarray] = []
    for b in boxes:
        if all(overlap_of_smaller(b, k) <= max_overlap for k in kept):
            kept.append(b)
    return np.array(kept, np.int32).reshape(-1, 4)
