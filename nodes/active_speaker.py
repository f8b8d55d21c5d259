"""``active_speaker``: which visible face is speaking, from its lip motion against the audio envelope.

Inputs: ``audio`` (AudioChunk at ``sample_rate``; other rates are rejected and counted, channels are
averaged) and ``faces`` (Faces, one per video frame, of the same stream id). Output: ``active``
(ActiveSpeaker: per face of a scored frame, every ``every_frames`` frames; for a frame with no face, one
message with ``face_id`` -1 and probability 0 at the frame's instant).

Per stream, an :class:`~kikimimi.models.vision.active.ActiveSpeakerScorer` keeps the audio's band
envelope and, per face id, the lip signal (:func:`~kikimimi.models.vision.active.lip_signal`, the
outer-lip opening from the landmarks) of the frames of the last ``window_s`` seconds; the probability
of a frame is the lip/envelope synchrony over the window that ends at it (method and constants: see
:mod:`kikimimi.models.vision.active`; 0.5 means "cannot tell", e.g. silence). ``speaking`` turns on
at ``probability >= on`` and off at ``probability <= off``. A face not seen for ``forget_s`` is
forgotten (its ``speaking`` state too).

A frame's instant on the audio clock is its ``header.sample_index`` (for frames without one, e.g. a
live camera: its capture time ``t_ns`` mapped through the newest audio chunk's sample index and capture
time), plus ``av_offset_ms``. Frames may arrive before the audio covering them: each is scored once
the audio up to its instant plus the envelope's lag is in. Meanwhile frames wait in order in a
deque of at most ``max_held`` frames per stream; beyond that the oldest is dropped (counted in
``frames_dropped`` and the stats as overflow). END_OF_STREAM / FLUSH on ``audio`` (the audio is
complete) and ``on_stop`` score the held frames at once (frames whose audio did not come get 0.5; frames
that could never be placed on the audio clock, a camera's frames without any audio, are dropped and
counted as stale); END_OF_STREAM on ``faces`` does too once they are scored, then forgets the stream.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kikimimi.engine.clock import Clock
from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import NO_SAMPLE, Control, ControlKind, Message
from kikimimi.engine.metrics import DROP_OVERFLOW, DROP_STALE
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.vision import NO_FACE, ActiveSpeaker, Faces
from kikimimi.engine.node import Node, PortSpec, control_targets
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.timemap import ClockMap
from kikimimi.models.pcm import mono_float32
from kikimimi.models.vision.active import ActiveSpeakerScorer, lip_signal


@dataclass(eq=False)
class _Stream:
    scorer: ActiveSpeakerScorer
    held: deque[Faces] = field(default_factory=deque)
    speaking: dict[int, bool] = field(default_factory=dict)
    frames: int = 0                           # frames scored
    clock: ClockMap | None = None             # camera frames -> audio clock, from the audio chunks' capture times
    audio_ended: bool = False


class ActiveSpeakerNode(Node):
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
        if p.off >= p.on:
            raise ParamError(f"node {name!r} (active_speaker): off={p.off} is not below on={p.on}; "
                             "allowed: off < on")
        self._offset = p.av_offset_ms * p.sample_rate // 1000
        self._streams: dict[str, _Stream] = {}
        self.frames_scored = 0
        self.frames_dropped = 0

    # ------------------------------------------------------------------ hooks
    def on_message(self, port: str, msg: Message) -> None:
        """Audio feeds the stream's envelope; faces wait for their audio; every frame that is due is scored."""
        if isinstance(msg, AudioChunk):
            st = self._on_audio(msg)
        elif isinstance(msg, Faces):
            st = self._on_faces(msg)
        else:
            return
        if st is not None:
            self._drain(st)

    def on_control(self, port: str, ctrl: Control) -> None:
        """END_OF_STREAM / FLUSH on ``audio``: the audio is complete, score what is held. END_OF_STREAM on
        ``faces``: score what is held and forget the stream."""
        if ctrl.kind not in (ControlKind.FLUSH, ControlKind.END_OF_STREAM):
            return
        for sid in control_targets(ctrl, self._streams):
            st = self._streams[sid]
            if port == "audio":
                st.audio_ended = True
                self._drain(st)
            elif ctrl.kind is ControlKind.END_OF_STREAM:
                self._drain(st, force=True)
                del self._streams[sid]

    def on_stop(self) -> None:
        """Score every held frame."""
        for st in self._streams.values():
            self._drain(st, force=True)

    # ------------------------------------------------------------------ input
    def _stream(self, sid: str) -> _Stream:
        st = self._streams.get(sid)
        if st is None:
            p = self.p
            st = self._streams[sid] = _Stream(ActiveSpeakerScorer(p.sample_rate, p.window_s, p.forget_s))
        return st

    def _on_audio(self, msg: AudioChunk) -> _Stream | None:
        if not self.accepts("audio", msg, (self.p.sample_rate,)):
            return None
        st = self._stream(msg.header.stream_id)
        x = mono_float32(msg.samples)
        st.scorer.push_audio(x, msg.header.sample_index)
        if st.clock is None:
            st.clock = ClockMap(self.p.sample_rate)
        st.clock.observe(msg.header.sample_index + len(x), msg.header.t_ns)
        st.audio_ended = False
        return st

    def _on_faces(self, msg: Faces) -> _Stream:
        st = self._stream(msg.header.stream_id)
        st.held.append(msg)
        while len(st.held) > self.p.max_held:
            st.held.popleft()
            self.frames_dropped += 1
            self.stats.count_drop(DROP_OVERFLOW)
            self.throttled(logging.WARNING, f"held:{msg.header.stream_id}", "active_speaker %s: more than %d frames "
                           "of stream %r wait for their audio; dropping the oldest", self.name, self.p.max_held,
                           msg.header.stream_id)
        return st

    def _instant(self, st: _Stream, msg: Faces) -> int | None:
        """The frame's sample index on the audio clock (with ``av_offset_ms``), None if it cannot be known yet."""
        idx = msg.header.sample_index
        if idx == NO_SAMPLE:
            mapped = None if st.clock is None else st.clock.sample_at(msg.header.t_ns)
            if mapped is None:
                return None
            idx = mapped
        return max(0, idx + self._offset)

    # ------------------------------------------------------------------ scoring
    def _drain(self, st: _Stream, force: bool = False) -> None:
        """Score the held frames, in order, whose audio is in (all of them with ``force`` or ended audio)."""
        while st.held:
            at = self._instant(st, st.held[0])
            if at is None and not force:
                return
            if at is not None and not (force or st.audio_ended or st.scorer.ready(at)):
                return
            msg = st.held.popleft()
            if at is None:                        # no audio clock ever came: nothing to match against
                self.frames_dropped += 1
                self.stats.count_drop(DROP_STALE)
                self.throttled(logging.WARNING, f"clock:{msg.header.stream_id}", "active_speaker %s: frame %d of "
                               "stream %r has no sample index and no audio came to place it on the audio clock; "
                               "dropping it", self.name, msg.frame_index, msg.header.stream_id)
                continue
            self._score(st, msg, at)

    def _score(self, st: _Stream, msg: Faces, at: int) -> None:
        lips = {f.face_id: lip_signal(f.landmarks) for f in msg.faces}
        results = st.scorer.push_frame(at, lips)
        self.frames_scored += 1
        emit = st.frames % self.p.every_frames == 0
        st.frames += 1
        p = self.p
        sid = msg.header.stream_id
        for fid, res in results.items():
            was = st.speaking.get(fid, False)
            now = res.probability > p.off if was else res.probability >= p.on
            st.speaking[fid] = now
            if emit:
                header = self.header("active", sid, res.end_sample, msg.header.t_ns)
                self.emit("active", ActiveSpeaker(header, fid, float(res.probability), now, res.start_sample,
                                                  res.end_sample, p.sample_rate))
        if emit and not results:
            # Nobody in view: say so, so fusion knows the picture up to here holds no speaking face.
            header = self.header("active", sid, at, msg.header.t_ns)
            self.emit("active", ActiveSpeaker(header, NO_FACE, 0.0, False, at, at, p.sample_rate))
        known = set(st.scorer.face_ids)
        for fid in [f for f in st.speaking if f not in known]:
            del st.speaking[fid]
