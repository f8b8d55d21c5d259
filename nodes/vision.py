"""``vision``: faces, landmarks, mouth crops and lip aperture for every video frame, per stream.

Each stream (``header.stream_id``) gets its own :class:`~kikimimi.models.vision.frontend.VisionFrontEnd`
(Haar detection every ``detect_every`` frames, dlib 68-point landmarks in between, stable face ids); the
models themselves (cascade, landmark model) are loaded once at start and shared by the streams.
For every frame it processes the node emits one :class:`~kikimimi.engine.msgs.vision.Faces` message
(``faces == ()`` when nobody is in view), with the frame's header time: ``sample_index`` (the audio
sample at the frame's instant, or NO_SAMPLE for a camera without an audio clock) and ``t_ns`` (its
capture time), so downstream latency is measured from capture.

Freshness: the ``video`` input is a drop-oldest queue with a max age (``queue`` in the graph file can
change it); frames that wait too long are dropped and counted there, never processed late. Frames
whose ``frame_index`` goes backwards are rejected and counted. ``fps`` in the output is measured from
the frames' capture times (the ``fps`` parameter until two frames were seen).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kikimimi.engine.clock import Clock
from kikimimi.engine.messages import Control, ControlKind, Message
from kikimimi.engine.msgs.vision import Faces, VideoFrame
from kikimimi.engine.node import Node, PortSpec, control_targets
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Stream:
    front_end: Any
    last_index: int = -1
    last_t_ns: int | None = None
    period_ns: float | None = None


class VisionNode(Node):
    """Faces with stable ids, 96x96 mouth crops and lip aperture per video frame; see the module docstring."""

    kind = "vision"
    help = "Faces (Haar + dlib 68 landmarks, tracked with stable ids), aligned mouth crops and lip aperture."
    inputs = (
        PortSpec("video", (VideoFrame,), queue=QueueConfig.make("drop_oldest", 8, max_age_ms=500),
                 help="video frames (bgr24, rgb24 or gray)"),
    )
    outputs = (PortSpec("faces", (Faces,), help="the faces of each processed frame (possibly none)"),)
    params = (
        Param("detect_every", int, 5, "run the face detector every N frames; track landmarks in between", min=1,
              max=1000),
        Param("max_faces", int, 4, "most faces tracked per stream", min=1, max=32),
        Param("min_face", float, 0.15, "smallest face side searched for, as a fraction of the frame's shorter side",
              min=0.02, max=0.9),
        Param("detector_max_side", int, 360, "the detector sees the frame shrunk to this longer side (pixels)",
              min=64, max=4096),
        Param("scale_factor", float, 1.1, "the detector's step between search scales (OpenCV detectMultiScale; 1.2 "
              "halves detection time but starts the landmark fit less well)",
              min=1.01, max=2.0),
        Param("mouth_scale", float, 1.3, "side of the mouth crop, in eye distances", min=0.2, max=5.0),
        Param("predictor", str, "", "dlib 68-point model file ('' = the one in face_recognition_models)"),
        Param("fps", float, 25.0, "frame rate reported until it can be measured from the frames' times", min=0.1),
    )

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        self._streams: dict[str, _Stream] = {}
        self._models: Any = None                  # VisionModels, shared by the streams

    def on_start(self) -> None:
        """Load the detector and the landmark model once (a missing install fails here), and run them on a
        blank frame and a frame with a face-like pattern, so the first real frames are not slow."""
        import numpy as np

        from kikimimi.models.vision.frontend import VisionModels

        p = self.p
        self._models = VisionModels.load(p.detector_max_side, p.min_face, p.predictor or None, p.mouth_scale,
                                         p.scale_factor)
        self._new_front_end().process(np.zeros((240, 320, 3), np.uint8))
        self._models.predictor.predict(np.zeros((240, 320), np.uint8), np.array([100, 60, 120, 120]))

    def _new_front_end(self) -> Any:
        from kikimimi.models.vision.frontend import VisionFrontEnd

        if self._models is None:
            self.on_start()
        return VisionFrontEnd(detect_every=self.p.detect_every, max_faces=self.p.max_faces, models=self._models)

    def on_message(self, port: str, msg: Message) -> None:
        """Track the faces of one frame and emit them."""
        if not isinstance(msg, VideoFrame):
            return
        sid = msg.header.stream_id
        st = self._streams.get(sid)
        if st is None:
            st = self._streams[sid] = _Stream(self._new_front_end())
        if msg.frame_index <= st.last_index:
            self.stats.count_rejected("frame_order")
            self.throttled(logging.WARNING, f"order:{sid}", "vision %s: frame %d of stream %r comes after frame %d; "
                           "frames must come in increasing frame_index order, dropping it", self.name,
                           msg.frame_index, sid, st.last_index)
            return
        st.last_index = msg.frame_index
        t = msg.header.t_ns
        if st.last_t_ns is not None and t > st.last_t_ns:
            d = float(t - st.last_t_ns)
            st.period_ns = d if st.period_ns is None else 0.9 * st.period_ns + 0.1 * d
        st.last_t_ns = t
        fps = 1e9 / st.period_ns if st.period_ns else self.p.fps
        faces = st.front_end.process(msg.image, msg.pixel_format)
        h, w = msg.image.shape[:2]
        header = self.header("faces", sid, msg.header.sample_index, t)
        self.emit("faces", Faces(header, msg.frame_index, w, h, fps, faces))

    def on_control(self, port: str, ctrl: Control) -> None:
        """FLUSH forgets the stream's tracks (ids go on counting); END_OF_STREAM forgets the stream."""
        if ctrl.kind not in (ControlKind.FLUSH, ControlKind.END_OF_STREAM):
            return
        for sid in control_targets(ctrl, self._streams):
            if ctrl.kind is ControlKind.END_OF_STREAM:
                self._log_timings(sid)
                del self._streams[sid]
            else:
                self._streams[sid].front_end.reset()

    def on_stop(self) -> None:
        for sid in list(self._streams):
            self._log_timings(sid)

    def _log_timings(self, sid: str) -> None:
        tm = self._streams[sid].front_end.timings
        if tm.frames:
            log.info("vision %s stream %r: %d frames, %d detections, %.2f ms/frame (track %.2f, crop %.2f)", self.name,
                     sid, tm.frames, tm.detections, 1e3 * (tm.convert_s + tm.track_s + tm.crop_s) / tm.frames,
                     1e3 * tm.track_s / tm.frames, 1e3 * tm.crop_s / tm.frames)

    def timings(self, stream_id: str) -> Any:
        """The front end's per-stage timings of a stream (for benchmarks), or None."""
        st = self._streams.get(stream_id)
        return None if st is None else st.front_end.timings
