"""``active_speaker``: which visible face is speaking, from its lip motion against the audio envelope.

Inputs: ``audio`` (AudioChunk at ``sample_rate``; other rates are rejected and counted, channels are
averaged) and ``faces`` (Faces, one per video frame, of the same stream id). Output: ``active``
(ActiveSpeaker: per face of a scored frame, every ``every_frames`` frames; for a frame with no face, one
message with ``face_id`` -1 and probability 0 at the frame's instant).

Per stream, an :class:`~kikimimi.models.vision.active_stream.ActiveSpeakerStream` (config: this node's
parameters but ``every_frames``) scores each frame's faces by the lip/envelope synchrony over the window
that ends at it (:func:`~kikimimi.models.vision.active.lip_signal` of each face's landmarks; method and
constants: see :mod:`kikimimi.models.vision.active`; 0.5 means "cannot tell", e.g. silence), with the
``speaking`` hysteresis (on at ``probability >= on``, off at ``probability <= off``); a face not seen for
``forget_s`` is forgotten.

A frame's instant on the audio clock is its ``header.sample_index`` (for frames without one, e.g. a
live camera: its capture time ``t_ns`` mapped through the newest audio chunk's sample index and capture
time), plus ``av_offset_ms``. Frames may arrive before the audio covering them: each is scored once
the audio up to its instant plus the envelope's lag is in. Meanwhile at most ``max_held`` frames wait per
stream; beyond that the oldest is dropped (counted in ``frames_dropped`` and the stats as overflow).
END_OF_STREAM / FLUSH on ``audio`` (the audio is complete) and ``on_stop`` score the held frames at once
(frames whose audio did not come get 0.5; frames that could never be placed on the audio clock, a
camera's frames without any audio, are dropped and counted as stale); END_OF_STREAM on ``faces`` does too
once they are scored, then forgets the stream.
"""

from __future__ import annotations

import logging
from typing import Any

from kikimimi.engine.clock import Clock
from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import NO_SAMPLE, Control, ControlKind, Message
from kikimimi.engine.metrics import DROP_OVERFLOW
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.vision import NO_FACE, ActiveSpeaker, Faces
from kikimimi.engine.node import PortSpec
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.streams import StreamNode
from kikimimi.models.pcm import mono_float32
from kikimimi.models.vision.active import lip_signal
from kikimimi.models.vision.active_stream import (
    ActiveSpeakerConfig,
    ActiveSpeakerDetector,
    ActiveSpeakerStream,
    FrameScores,
    Result,
)


class ActiveSpeakerNode(StreamNode[ActiveSpeakerStream]):
    """Speaking probability of every visible face from lip / audio-envelope synchrony; see the module docstring."""

    kind = "active_speaker"
    help = "Which visible face is speaking: lip opening against the 800-2200 Hz audio envelope over a sliding window."
    inputs = (
        PortSpec("audio", (AudioChunk,), queue=QueueConfig.make("block", 512), help="the stream's audio"),
        PortSpec("faces", (Faces,), queue=QueueConfig.make("block", 256),
                 help="faces of each video frame (a vision node), same stream id as the audio"),
    )
    outputs = (PortSpec("active", (ActiveSpeaker,), help="speaking probability of each face, per scored frame"),)
    params = (
        Param("sample_rate", int, 16000, "audio sample rate accepted (other rates are rejected)", min=8000,
              max=192000),
        Param("window_s", float, 2.0, "sliding window of lip / envelope synchrony (seconds)", min=1.0, max=60.0),
        Param("every_frames", int, 1, "emit every N-th scored frame (the windows still advance every frame)",
              min=1, max=1000),
        Param("on", float, 0.7, "speaking turns on at probability >= on", min=0.0, max=1.0),
        Param("off", float, 0.5, "speaking turns off at probability <= off (below on: hysteresis)", min=0.0,
              max=1.0),
        Param("forget_s", float, 2.0, "forget a face not seen for this long (seconds of the stream)", min=0.1,
              max=3600.0),
        Param("av_offset_ms", int, 0, "added to each frame's instant before it is matched to the audio "
              "(positive: the video's timestamps are early against the audio)", min=-2000, max=2000),
        Param("max_held", int, 250, "frames held per stream while their audio has not arrived; beyond this the "
              "oldest is dropped", min=1, max=100000),
    )

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        p = self.p
        try:
            config = ActiveSpeakerConfig(p.sample_rate, p.window_s, p.on, p.off, p.forget_s, p.av_offset_ms,
                                         p.max_held)
        except ParamError as e:
            raise ParamError(f"node {name!r} (active_speaker): {e}") from None
        self.detector = ActiveSpeakerDetector(config)
        self.frames_scored = 0
        self.frames_dropped = 0

    # ------------------------------------------------------------------ hooks
    def open_stream(self, sid: str, msg: Message) -> ActiveSpeakerStream:
        """A fresh model stream."""
        return self.detector.new_stream()

    def on_message(self, port: str, msg: Message) -> None:
        """Audio (at ``sample_rate``) feeds the stream's envelope; faces wait for their audio; what is due is sent."""
        sid = msg.header.stream_id
        if isinstance(msg, AudioChunk):
            if self.accepts("audio", msg, (self.p.sample_rate,)):
                self._publish(sid, self.stream(msg).accept_audio(mono_float32(msg.samples), msg.header.sample_index,
                                                                 msg.header.t_ns))
        elif isinstance(msg, Faces):
            idx = None if msg.header.sample_index == NO_SAMPLE else msg.header.sample_index
            lips = {f.face_id: lip_signal(f.landmarks) for f in msg.faces}
            self._publish(sid, self.stream(msg).accept_faces(idx, lips, msg.header.t_ns, msg.frame_index))

    def on_control(self, port: str, ctrl: Control) -> None:
        """END_OF_STREAM / FLUSH on ``audio``: the audio is complete, score what is held. END_OF_STREAM on
        ``faces``: score what is held and forget the stream."""
        if ctrl.kind not in (ControlKind.FLUSH, ControlKind.END_OF_STREAM):
            return
        for sid in self.targets(ctrl):
            if port == "audio":
                self._publish(sid, self.streams[sid].end_audio())
            elif ctrl.kind is ControlKind.END_OF_STREAM:
                self.close_stream(sid, self.streams.pop(sid))

    def close_stream(self, sid: str, st: ActiveSpeakerStream) -> None:
        """Score every held frame."""
        self._publish(sid, st.finish())

    # ------------------------------------------------------------------ output
    def _publish(self, sid: str, results: list[Result]) -> None:
        """Emit the scored frames (every ``every_frames``-th), count and log the dropped ones."""
        p = self.p
        for r in results:
            if not isinstance(r, FrameScores):
                self.frames_dropped += 1
                self.stats.count_drop(r.reason)
                if r.reason == DROP_OVERFLOW:
                    self.throttled(logging.WARNING, f"held:{sid}", "active_speaker %s: more than %d frames of stream "
                                   "%r wait for their audio; dropping the oldest", self.name, p.max_held, sid)
                else:
                    self.throttled(logging.WARNING, f"clock:{sid}", "active_speaker %s: frame %d of stream %r has no "
                                   "sample index and no audio came to place it on the audio clock; dropping it",
                                   self.name, r.frame_index, sid)
                continue
            self.frames_scored += 1
            if r.index % p.every_frames:
                continue
            for f in r.faces:
                header = self.header("active", sid, f.end_sample, r.t_ns)
                self.emit("active", ActiveSpeaker(header, f.face_id, f.probability, f.speaking, f.start_sample,
                                                  f.end_sample, p.sample_rate))
            if not r.faces:
                # Nobody in view: say so, so fusion knows the picture up to here holds no speaking face.
                header = self.header("active", sid, r.sample_index, r.t_ns)
                self.emit("active", ActiveSpeaker(header, NO_FACE, 0.0, False, r.sample_index, r.sample_index,
                                                  p.sample_rate))
