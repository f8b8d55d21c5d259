"""68-point facial landmarks with dlib's shape predictor (iBUG 300-W layout), and measures built on them.

Indices (0-based): jaw 0-16, brows 17-26, nose 27-35, eyes 36-41 and 42-47, outer lips 48-59, inner
lips 60-67 (mouth corners 48 and 54).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kikimimi.models.vision import _deps

N_POINTS = 68
MOUTH = slice(48, 68)
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
_INNER_UPPER = (61, 62, 63)
_INNER_LOWER = (67, 66, 65)


class LandmarkPredictor:
    """dlib's 68-point predictor: ``predict(gray, box)`` -> float32 (68, 2) (x, y) pixel positions.

    ``box`` is (x, y, width, height), as the detector or the tracker gives it. The model file defaults
    to the one in ``face_recognition_models`` (see :func:`~kikimimi.models.vision._deps.predictor_path`).
    """

    def __init__(self, model: str | Path | None = None) -> None:
        self._dlib = _deps.dlib()
        path = Path(model) if model else _deps.predictor_path()
        if not path.is_file():
            raise _deps.VisionUnavailable(f"landmark model {path} does not exist; install it with: {_deps.INSTALL}")
        self._predictor = self._dlib.shape_predictor(str(path))
        self._out = np.empty((N_POINTS, 2), np.float32)

    def predict(self, gray: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Landmarks of the face in ``box`` of ``gray`` (uint8 (h, w)); a new float32 (68, 2) array."""
        x, y, w, h = (int(v) for v in box)
        shape = self._predictor(gray, self._dlib.rectangle(x, y, x + w, y + h))
        out = np.empty((N_POINTS, 2), np.float32)
        for i, p in enumerate(shape.parts()):
            out[i, 0] = p.x
            out[i, 1] = p.y
        return out


def mouth_width(lm: np.ndarray) -> float:
    """Distance between the mouth corners (points 48 and 54)."""
    return float(np.hypot(*(lm[54] - lm[48])))


def lip_aperture(lm: np.ndarray) -> float:
    """Inner-lip opening (mean of the three vertical inner-lip gaps) divided by the mouth width; >= 0."""
    width = mouth_width(lm)
    if width <= 1e-6:
        return 0.0
    gaps = lm[list(_INNER_LOWER)] - lm[list(_INNER_UPPER)]
    return float(max(0.0, np.hypot(gaps[:, 0], gaps[:, 1]).mean() / width))


def eye_centres(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the subject's right eye (points 36-41, image left) and left eye (42-47)."""
    return lm[LEFT_EYE].mean(axis=0), lm[RIGHT_EYE].mean(axis=0)


def landmark_box(lm: np.ndarray) -> np.ndarray:
    """Axis-aligned bounding box (x, y, width, height) of the landmarks, float64."""
    lo = lm.min(axis=0)
    hi = lm.max(axis=0)
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], np.float64)


def plausible(lm: np.ndarray, frame_shape: tuple[int, ...], min_eye_dist: float = 8.0) -> bool:
    """Whether landmarks look like a face inside the frame: finite, eyes apart, mouth below the eyes."""
    if not np.all(np.isfinite(lm)):
        return False
    h, w = frame_shape[:2]
    cx, cy = lm[:, 0].mean(), lm[:, 1].mean()
    if not (0 <= cx < w and 0 <= cy < h):
        return False
    r, le = eye_centres(lm)
    eye_dist = float(np.hypot(*(le - r)))
    mouth_y = lm[MOUTH, 1].mean()
    return eye_dist >= min_eye_dist and mouth_y > max(r[1], le[1]) and mouth_width(lm) > 0.3 * eye_dist
