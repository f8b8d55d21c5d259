"""``vision``: faces, landmarks, mouth crops and lip aperture for every video frame, per stream.

Each stream (``header.stream_id``) gets its own :class:`~kikimimi.models.vision.faces.FaceStream` (Haar
detection every ``detect_every`` frames, dlib 68-point landmarks in between, stable face ids) of one
:class:`~kikimimi.models.vision.faces.FaceAnalyzer`, whose models (cascade, landmark model) are loaded once
at start and shared by the streams (config: this node's parameters).
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
from typing import Any

from kikimimi.engine.clock import Clock
from kikimimi.engine.messages import Message
from kikimimi.engine.msgs.vision import Faces, VideoFrame
from kikimimi.engine.node import PortSpec
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.streams import StreamNode
from kikimimi.models.vision.faces import FaceAnalyzer, FaceStream, FrameOrderError, VisionConfig

log = logging.getLogger(__name__)


class VisionNode(StreamNode[FaceStream]):
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
        p = self.p
        self.config = VisionConfig(p.detect_every, p.max_faces, p.min_face, p.detector_max_side, p.scale_factor,
                                   p.mouth_scale, p.predictor, p.fps)
        self.analyzer: FaceAnalyzer | None = None         # shared by the streams, made at start

    def on_start(self) -> None:
        """Load the detector and the landmark model once (a missing install fails here), and run them on a
        blank frame and a frame with a face-like pattern, so the first real frames are not slow."""
        self._load()

    def _load(self) -> FaceAnalyzer:
        analyzer = FaceAnalyzer(self.config)
        analyzer.warmup()
        self.analyzer = analyzer
        return analyzer

    def open_stream(self, sid: str, msg: Message) -> FaceStream:
        """A new stream of the shared analyzer (loaded here if the node was not started)."""
        return (self.analyzer or self._load()).new_stream()

    def on_stream_message(self, port: str, msg: Message, st: FaceStream) -> None:
        """Track the faces of one frame and emit them; a frame out of order is rejected and counted."""
        if not isinstance(msg, VideoFrame):
            return
        sid = msg.header.stream_id
        try:
            out = st.accept(msg.image, msg.pixel_format, msg.frame_index, msg.header.t_ns)
        except FrameOrderError as e:
            self.stats.count_rejected("frame_order")
            self.throttled(logging.WARNING, f"order:{sid}", "vision %s: frame %d of stream %r comes after frame %d; "
                           "frames must come in increasing frame_index order, dropping it", self.name,
                           e.frame_index, sid, e.last_index)
            return
        header = self.header("faces", sid, msg.header.sample_index, msg.header.t_ns)
        self.emit("faces", Faces(header, out.frame_index, out.width, out.height, out.fps, out.faces))

    def flush_stream(self, sid: str, st: FaceStream) -> None:
        """FLUSH forgets the stream's tracks (ids go on counting)."""
        st.reset()

    def close_stream(self, sid: str, st: FaceStream) -> None:
        """END_OF_STREAM (or stop): log the stream's timings; it is forgotten."""
        tm = st.timings
        if tm.frames:
            log.info("vision %s stream %r: %d frames, %d detections, %.2f ms/frame (track %.2f, crop %.2f)", self.name,
                     sid, tm.frames, tm.detections, 1e3 * (tm.convert_s + tm.track_s + tm.crop_s) / tm.frames,
                     1e3 * tm.track_s / tm.frames, 1e3 * tm.crop_s / tm.frames)

    def timings(self, stream_id: str) -> Any:
        """The front end's per-stage timings of a stream (for benchmarks), or None."""
        st = self.streams.get(stream_id)
        return None if st is None else st.timings
