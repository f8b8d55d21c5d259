"""The vision front end: one call per video frame -> every tracked face with its mouth crop and aperture.

:class:`VisionFrontEnd` owns a :class:`~kikimimi.models.vision.tracker.FaceTracker` (Haar detection
every ``detect_every`` frames, dlib landmarks, stable ids) and a
:class:`~kikimimi.models.vision.mouth.MouthCropper`. It is per stream: one instance per camera.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kikimimi.engine.errors import MessageError
from kikimimi.engine.msgs.vision import Face
from kikimimi.models.vision import _deps
from kikimimi.models.vision.detect import HaarFaceDetector
from kikimimi.models.vision.landmarks import LandmarkPredictor, lip_aperture
from kikimimi.models.vision.mouth import MouthCropper
from kikimimi.models.vision.tracker import FaceTracker


@dataclass
class Timings:
    """Seconds spent per stage, summed over frames (``frames`` counts calls; ``detections`` detect runs)."""

    frames: int = 0
    detections: int = 0
    convert_s: float = 0.0
    track_s: float = 0.0
    crop_s: float = 0.0
    faces: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def to_gray(image: np.ndarray, pixel_format: str) -> np.ndarray:
    """A uint8 (h, w) grayscale view or copy of a bgr24 / rgb24 / gray frame."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise MessageError(f"a video frame must be uint8 (h, w[, c]), got {getattr(image, 'dtype', type(image))} "
                           f"{getattr(image, 'shape', '')}")
    if image.ndim == 2:
        return image
    if pixel_format == "gray" or image.shape[2] == 1:
        return np.ascontiguousarray(image[:, :, 0])
    cv2 = _deps.cv2()
    if pixel_format == "bgr24":
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if pixel_format == "rgb24":
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise MessageError(f"pixel format {pixel_format!r} is not allowed; allowed: bgr24, rgb24, gray")


@dataclass(eq=False)
class VisionModels:
    """The shared, stateless parts (detector cascade, landmark model, cropper): load once, use for every stream."""

    detector: HaarFaceDetector
    predictor: LandmarkPredictor
    cropper: MouthCropper

    @classmethod
    def load(cls, detector_max_side: int = 360, min_face: float = 0.15, predictor: str | Path | None = None,
             mouth_scale: float = 1.3, scale_factor: float = 1.1) -> VisionModels:
        """Load the Haar cascade and dlib's landmark model (about 0.4 s); :class:`VisionUnavailable` if missing."""
        return cls(HaarFaceDetector(scale_factor=scale_factor, max_side=detector_max_side, min_face=min_face),
                   LandmarkPredictor(predictor), MouthCropper(scale=mouth_scale))


class VisionFrontEnd:
    """Faces of each frame of one stream: ``process(image, pixel_format)`` -> tuple of :class:`Face` (largest
    first). ``models`` (shared across streams) are loaded here when not given."""

    def __init__(self, detect_every: int = 5, max_faces: int = 4, detector_max_side: int = 360,
                 min_face: float = 0.15, predictor: str | Path | None = None, mouth_scale: float = 1.3,
                 models: VisionModels | None = None) -> None:
        m = models or VisionModels.load(detector_max_side, min_face, predictor, mouth_scale)
        self.models = m
        self.tracker = FaceTracker(m.detector, m.predictor, detect_every=detect_every, max_faces=max_faces)
        self.cropper = m.cropper
        self.timings = Timings()

    def process(self, image: np.ndarray, pixel_format: str = "bgr24") -> tuple[Face, ...]:
        """Track the faces of the next frame of this stream and describe each."""
        tm = self.timings
        t0 = time.perf_counter()
        gray = to_gray(image, pixel_format)
        t1 = time.perf_counter()
        before = self.tracker.detections
        tracks = self.tracker.update(gray)
        t2 = time.perf_counter()
        faces = []
        for t in tracks:
            mouth, mbox = self.cropper.crop(gray, t.landmarks)
            box = np.round(t.box).astype(np.int32)
            box[2:] = np.maximum(box[2:], 0)
            faces.append(Face(t.face_id, box, t.landmarks, mbox, mouth, lip_aperture(t.landmarks), t.detected))
        t3 = time.perf_counter()
        tm.frames += 1
        tm.detections += self.tracker.detections - before
        tm.convert_s += t1 - t0
        tm.track_s += t2 - t1
        tm.crop_s += t3 - t2
        tm.faces += len(faces)
        return tuple(faces)

    def reset(self) -> None:
        """Forget the tracked faces (a new scene, or the camera restarted)."""
        self.tracker.reset()
