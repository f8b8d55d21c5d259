"""The mouth region of a face: a 96x96 grayscale crop rotated so the eyes are level, at a fixed scale.

The crop is centred on the mean of the 20 mouth landmarks (48-67), rotated by the angle of the line
between the eye centres (more stable than the mouth corners, which move when speaking) and scaled so
that its side is ``scale`` x the distance between the eyes (1.3: the mouth with some cheek and chin,
as in lip-reading crops of AV-HuBERT-style models). One ``cv2.warpAffine`` call does rotation, scale
and crop together.
"""

from __future__ import annotations

import math

import numpy as np

from kikimimi.engine.errors import ParamError
from kikimimi.engine.msgs.vision import MOUTH_SIZE
from kikimimi.models.vision import _deps
from kikimimi.models.vision.landmarks import MOUTH, eye_centres


class MouthCropper:
    """``crop(gray, landmarks)`` -> (uint8 (size, size) crop, int32 (x, y, w, h) region in the frame)."""

    def __init__(self, size: int = MOUTH_SIZE, scale: float = 1.3) -> None:
        if size < 8 or not 0.2 <= scale <= 5.0:
            raise ParamError(f"mouth crop size={size}, scale={scale}; allowed: size >= 8, 0.2 <= scale <= 5")
        self._cv2 = _deps.cv2()
        self.size = size
        self.scale = scale

    def crop(self, gray: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The aligned mouth crop of the face with landmarks ``lm`` and the crop's bounding box."""
        cv2 = self._cv2
        centre = lm[MOUTH].mean(axis=0).astype(np.float64)
        r, le = eye_centres(lm)
        dx, dy = float(le[0] - r[0]), float(le[1] - r[1])
        eye_dist = max(math.hypot(dx, dy), 1.0)
        angle = math.atan2(dy, dx)
        side = self.scale * eye_dist                     # source pixels covered by the crop's side
        k = self.size / side
        cos, sin = math.cos(angle) * k, math.sin(angle) * k
        # Output pixel u = R(-angle) * k * (p - centre) + size / 2.
        half = (self.size - 1) / 2.0
        m = np.array([[cos, sin, half - cos * centre[0] - sin * centre[1]],
                      [-sin, cos, half + sin * centre[0] - cos * centre[1]]], np.float64)
        out = cv2.warpAffine(gray, m, (self.size, self.size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
        reach = side * (abs(math.cos(angle)) + abs(math.sin(angle))) / 2.0
        box = np.array([round(centre[0] - reach), round(centre[1] - reach), round(2 * reach), round(2 * reach)],
                       np.int32)
        return out, box
