"""The vision front end as a streaming model: shared detector + landmark model -> one stream per camera.

::

    analyzer = FaceAnalyzer(VisionConfig(detect_every=5))      # loads the cascade and dlib's model once
    analyzer.warmup()                                          # optional: the first real frames are not slow
    st = analyzer.new_stream()
    faces = st.accept(image, "bgr24", frame_index, t_ns)       # FrameFaces: every tracked face of the frame

A stream owns a :class:`~kikimimi.models.vision.frontend.VisionFrontEnd` (Haar detection every
``detect_every`` frames, dlib 68-point landmarks in between, stable face ids, mouth crops and lip
aperture) on the analyzer's shared :class:`~kikimimi.models.vision.frontend.VisionModels`. Frames must come
in increasing ``frame_index`` order: another raises :class:`FrameOrderError` and leaves the stream as it
was. ``fps`` of a result is measured from the frames' capture times (an exponential average of the
periods), ``config.fps`` until two frames were seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kikimimi.engine.errors import KikimimiError, ParamError
from kikimimi.engine.msgs.vision import Face
from kikimimi.models.vision.frontend import Timings, VisionFrontEnd, VisionModels


@dataclass(frozen=True, slots=True)
class VisionConfig:
    """What shapes the faces (the ``vision`` node's parameters of the same names).

    detect_every: run the face detector every N frames, track landmarks in between. max_faces: most faces
    tracked per stream. min_face: smallest face side searched for, as a fraction of the frame's shorter side.
    detector_max_side: the detector sees the frame shrunk to this longer side. scale_factor: the detector's
    step between search scales. mouth_scale: side of the mouth crop, in eye distances. predictor: dlib
    68-point model file ('' = the one in face_recognition_models). fps: reported until measured.
    """

    detect_every: int = 5
    max_faces: int = 4
    min_face: float = 0.15
    detector_max_side: int = 360
    scale_factor: float = 1.1
    mouth_scale: float = 1.3
    predictor: str = ""
    fps: float = 25.0

    def __post_init__(self) -> None:
        for name, lo, hi in (("detect_every", 1, 1000), ("max_faces", 1, 32), ("detector_max_side", 64, 4096)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ParamError(f"{name}={v!r} is not allowed; allowed: an int, {lo} <= {name} <= {hi}")
        for name, lo, hi in (("min_face", 0.02, 0.9), ("scale_factor", 1.01, 2.0), ("mouth_scale", 0.2, 5.0),
                             ("fps", 0.1, float("inf"))):
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise ParamError(f"{name}={v!r} is not allowed; allowed: {lo} <= {name} <= {hi}")
        if not isinstance(self.predictor, str):
            raise ParamError(f"predictor={self.predictor!r} is not allowed; allowed: a file path, or '' for the "
                             "default model")


@dataclass(frozen=True, slots=True, eq=False)
class FrameFaces:
    """The faces of one frame (largest first; empty when nobody is in view), the frame's size and the stream's
    measured frame rate."""

    frame_index: int
    width: int
    height: int
    fps: float
    faces: tuple[Face, ...]


class FrameOrderError(KikimimiError, ValueError):
    """A frame whose ``frame_index`` is not after the stream's previous one."""

    def __init__(self, frame_index: int, last_index: int) -> None:
        super().__init__(f"frame {frame_index} comes after frame {last_index}; frames must come in increasing "
                         "frame_index order")
        self.frame_index = frame_index
        self.last_index = last_index


class FaceStream:
    """Faces of the frames of one camera; see the module docstring."""

    def __init__(self, config: VisionConfig, models: VisionModels) -> None:
        self.config = config
        self.front_end = VisionFrontEnd(detect_every=config.detect_every, max_faces=config.max_faces, models=models)
        self.last_index = -1
        self._last_t_ns: int | None = None
        self._period_ns: float | None = None

    @property
    def timings(self) -> Timings:
        """Seconds per stage, summed over this stream's frames."""
        return self.front_end.timings

    def accept(self, image: np.ndarray, pixel_format: str = "bgr24", frame_index: int | None = None,
               t_ns: int | None = None) -> FrameFaces:
        """Track the faces of the next frame (uint8 bgr24 / rgb24 / gray); ``frame_index`` default: the next one,
        ``t_ns``: its capture time (measures fps; None: not measured)."""
        if frame_index is None:
            frame_index = self.last_index + 1
        if frame_index <= self.last_index:
            raise FrameOrderError(frame_index, self.last_index)
        self.last_index = frame_index
        if t_ns is not None:
            if self._last_t_ns is not None and t_ns > self._last_t_ns:
                d = float(t_ns - self._last_t_ns)
                self._period_ns = d if self._period_ns is None else 0.9 * self._period_ns + 0.1 * d
            self._last_t_ns = t_ns
        fps = 1e9 / self._period_ns if self._period_ns else self.config.fps
        faces = self.front_end.process(image, pixel_format)
        h, w = image.shape[:2]
        return FrameFaces(frame_index, w, h, fps, faces)

    def reset(self) -> None:
        """Forget the tracked faces (a new scene; ids go on counting); frame order and fps go on."""
        self.front_end.reset()


class FaceAnalyzer:
    """The shared part: the detector cascade, dlib's landmark model and the mouth cropper, loaded once
    (:class:`~kikimimi.models.vision._deps.VisionUnavailable` when missing); :meth:`new_stream` per camera."""

    def __init__(self, config: VisionConfig | None = None) -> None:
        self.config = c = config if config is not None else VisionConfig()
        self.models = VisionModels.load(c.detector_max_side, c.min_face, c.predictor or None, c.mouth_scale,
                                        c.scale_factor)

    def new_stream(self) -> FaceStream:
        """A fresh stream: no tracks, no frames."""
        return FaceStream(self.config, self.models)

    def warmup(self) -> None:
        """Run the models on a blank frame and a face-like box, so the first real frames are not slow."""
        self.new_stream().accept(np.zeros((240, 320, 3), np.uint8))
        self.models.predictor.predict(np.zeros((240, 320), np.uint8), np.array([100, 60, 120, 120]))
