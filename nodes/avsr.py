"""``avsr``: audio-visual speech recognition of VAD-delimited utterances, reading the lips of one face.

Inputs: ``audio`` (16 kHz AudioChunk; other rates are rejected and counted), ``faces`` (Faces from the
vision node, one message per video frame; ``header.sample_index`` is the frame's instant on the audio
clock; frames without one, from a camera, are placed there through the capture times of the audio chunks
with a :class:`~kikimimi.engine.timemap.ClockMap`), ``vad`` (VadEvent) and, optionally, ``active``
(ActiveSpeaker). Output: ``transcripts`` (LabeledTranscript revisions, ``face_id`` = the followed face, -1 when
none).

The model (``model``: a directory) is our chunked AV model when it holds ``avsr.json``
(:func:`kikimimi.models.avsr.chunked.load_chunked`), or a transformers checkpoint with ``config.json`` and
an ``auto_map`` (:func:`kikimimi.models.avsr.external.load_external_av`). Each stream gets its own
:class:`~kikimimi.models.avsr.base.AvStream` of the shared model.

Timing: a :class:`~kikimimi.nodes._vad_sync.VadGate` per stream keeps the VAD events in step with the
data: audio is given to the recognizer up to the gate's limit (never past a pending SPEECH_START's start
or SPEECH_END's end, nor more than ``vad_lookahead_ms`` past the VAD's PROGRESS watermark) and an event is
applied once the recognizer has the audio up to it (or nothing before it is held). While the ``faces``
input is live, audio is also held until the video has reached it, at most ``video_wait_ms`` behind the
newest audio (so partials and the final see the mouths of their span, and a vision node that stalls delays
results by at most that much). Held audio that comes free at once is given in pieces of :data:`PIECE_S`,
each followed by its frames and a decode, so a big batch is decoded as it would have been live. A video
frame is given to the recognizer, in time order, once the audio up to its instant has been given - while
no utterance is open, only once it is :data:`MAX_LATE_S` behind that audio, so an utterance whose
SPEECH_START comes late (the VAD decides with a delay) still gets its first frames with its own face.
Frames wait in a bounded buffer (:data:`MAX_FRAMES`; overflow drops the oldest), and frames not after the
last one, or more than :data:`MAX_LATE_S` behind the audio given, or before any audio placed them on the
clock, are dropped; audio overlapping what the stream already sent is cut off (``overlap_samples`` counts
the samples). All drops are counted (``stats.rejected_by_kind``: ``video_order``, ``video_late``,
``video_clock``, ``video_overflow``, ``audio_overlap`` for a chunk entirely old) and logged (throttled),
as are VAD events forced out by :data:`MAX_PENDING_EVENTS` (``forced_events``) and audio given before the
VAD or the video caught up after :data:`MAX_HELD_S` (``forced_audio``).

The followed face: with ActiveSpeaker input (the ``active`` port connected, or any ActiveSpeaker seen) the
face with the highest latest speaking probability (0.5 for a face without one), else the largest face (box
area). Once SPEECH_START is applied, the first frame at or after the utterance's start sample that shows a
face picks it (with the probabilities known then), and every later frame of the utterance, to the final,
reads that face; frames where it is missing give the recognizer None (a zero crop). Frames before the start
(outside any utterance) pick anew each. Each utterance publishes revisions numbered from 0 (as the asr node
does): partials whose ``committed`` only grows, then the final. FLUSH / END_OF_STREAM and ``on_stop`` finish
open utterances at the last sample given, after the held VAD events; END_OF_STREAM also forgets the stream
once it is finished, so a new session of the same id may start again from sample 0.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kikimimi.engine.clock import Clock
from kikimimi.engine.messages import ALL_STREAMS, NO_SAMPLE, Control, ControlKind, Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.fused import LabeledTranscript
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.engine.msgs.vision import NO_FACE, ActiveSpeaker, Face, Faces
from kikimimi.engine.node import PortSpec
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.streams import StreamNode
from kikimimi.engine.timemap import ClockMap
from kikimimi.models.avsr.base import AvStream, Revision
from kikimimi.models.avsr.load import load_av_model
from kikimimi.models.pcm import mono_float32
from kikimimi.nodes._vad_sync import VadGate

SAMPLE_RATE = 16000
MAX_PENDING_EVENTS = 256
MAX_HELD_S = 60
"""Seconds of audio held per stream for the VAD or the video to catch up; beyond this the oldest is given."""
MAX_FRAMES = 750
"""Video frames held per stream until their audio is given (30 s at 25 fps); beyond this the oldest is dropped."""
MAX_LATE_S = 2.0
"""Seconds a video frame may come behind the audio given (later: dropped), and that frames wait while no
utterance is open (for a SPEECH_START that comes late)."""
PIECE_S = 1
"""Seconds of audio given at most between two decodes."""
MAX_ROUNDS = 64


@dataclass(eq=False)
class _Stream:
    sid: str
    rs: AvStream
    gate: VadGate
    held: deque[tuple[int, np.ndarray]] = field(default_factory=deque)      # audio not yet given
    frames: deque[tuple[int, tuple[Face, ...]]] = field(default_factory=deque)  # video not yet given
    audio_end: int | None = None       # one past the newest sample received
    fed: int | None = None             # one past the newest sample given to the recognizer
    video_end: int | None = None       # end (instant + one frame) of the newest video frame received
    last_frame: int = -1               # instant of the newest frame given (or waiting)
    followed: int = NO_FACE            # the open utterance's face (NO_FACE until a frame picks it)
    start: int = 0                     # the last SPEECH_START's start sample
    probs: dict[int, float] = field(default_factory=dict)
    utterance_id: int = -1
    revision: int = 0
    closing: bool = False              # the open utterance's endpoint was given
    audio_done: bool = False
    faces_done: bool = False
    vad_done: bool = False
    clock: ClockMap = field(default_factory=lambda: ClockMap(SAMPLE_RATE))   # camera frames -> audio clock


class AvsrNode(StreamNode[_Stream]):
    """Audio-visual recognition of VAD utterances following one face; see the module docstring."""

    kind = "avsr"
    help = "Audio-visual speech recognition (audio + the followed face's mouth): Transcript revisions per utterance."
    inputs = (
        PortSpec("audio", (AudioChunk,), queue=QueueConfig.make("block", 512), help="16 kHz audio",
                 rates=(SAMPLE_RATE,)),
        PortSpec("faces", (Faces,), queue=QueueConfig.make("block", 256), help="faces of each video frame"),
        PortSpec("vad", (VadEvent,), queue=QueueConfig.make("block", 256), help="speech start / end events"),
        PortSpec("active", (ActiveSpeaker,), queue=QueueConfig.make("block", 256),
                 help="optional: speaking probabilities; the node follows the most likely speaker"),
    )
    outputs = (PortSpec("transcripts", (LabeledTranscript,), help="transcript revisions labelled with the face "
                        "whose lips were read (face_id); the last is final"),)
    params = (
        Param("model", str, help="a directory: avsr.json (our chunked AV model) or config.json with an auto_map "
              "(a transformers AV checkpoint such as AVista)"),
        Param("device", str, "auto", "where the model runs", choices=("auto", "cpu", "cuda")),
        Param("threads", int, 1, "CPU threads for the model: sets torch's thread count, for the whole process "
              "(0 = leave torch's setting alone)", min=0, max=256),
        Param("language", str, "auto", "ISO code of the transcripts ('auto': what the model says, if anything)"),
        Param("vad_lookahead_ms", int, 500, "audio is given at most this far past the VAD's PROGRESS watermark",
              min=0),
        Param("video_wait_ms", int, 500, "audio waits at most this long (audio time) for the video to reach it",
              min=0, max=10000),
        Param("warmup", bool, True, "decode silence once at start so the first utterance is not slow"),
    )

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        p = self.p
        self.recognizer = load_av_model(p.model, p.device, p.threads, p.language)
        self._lookahead = p.vad_lookahead_ms * SAMPLE_RATE // 1000
        self._video_wait = p.video_wait_ms * SAMPLE_RATE // 1000
        self._ended: set[str] = set()
        self.forced_events = 0      # VAD events applied before their audio (MAX_PENDING_EVENTS)
        self.forced_audio = 0       # audio given before the VAD / video caught up (MAX_HELD_S)
        self.overlap_samples = 0    # audio samples cut off as overlapping what their stream already sent

    # ------------------------------------------------------------------ hooks
    def on_start(self) -> None:
        """Warm the model up."""
        if self.p.warmup:
            self.recognizer.warmup()

    def open_stream(self, sid: str, msg: Message) -> _Stream:
        """A recognizer stream of the shared model and a VAD gate."""
        return _Stream(sid, self.recognizer.new_stream(), VadGate(self._lookahead, MAX_PENDING_EVENTS))

    def on_stream_message(self, port: str, msg: Message, st: _Stream) -> None:
        """Audio and frames wait until they can be given in step; VAD events wait for their audio."""
        if isinstance(msg, AudioChunk):
            self._on_audio(msg, st)
        elif isinstance(msg, Faces):
            self._on_faces(msg, st)
        elif isinstance(msg, VadEvent):
            forced = st.gate.on_event(msg)
            if forced is not None:
                self.forced_events += 1
                self.throttled(logging.WARNING, f"pending:{st.sid}", "avsr %s: stream %r has %d VAD events ahead "
                               "of its audio (given up to sample %s); applying the oldest now", self.name, st.sid,
                               len(st.gate.pending) + 1, st.fed)
                self._apply(st, forced)
        elif isinstance(msg, ActiveSpeaker):
            if msg.face_id == NO_FACE:          # "no face in view": nothing to rank
                return
            st.probs.pop(msg.face_id, None)
            st.probs[msg.face_id] = msg.probability
            while len(st.probs) > 64:
                st.probs.pop(next(iter(st.probs)))
            return
        else:
            return
        self._advance(st)

    def on_control(self, port: str, ctrl: Control) -> None:
        """FLUSH on ``audio`` gives everything held and finishes the open utterance. END_OF_STREAM on ``audio``,
        ``vad`` or ``faces`` marks that input done for the stream (``vad``: no more watermarks; ``faces``: no
        more holding audio for the video); once the audio is done and every other connected input too, all
        that is held is given and the open utterance finished, and the stream is forgotten (a new session of
        the same id starts clean). So the end of a file never overtakes a vision node still working through
        its last frames."""
        if ctrl.kind not in (ControlKind.FLUSH, ControlKind.END_OF_STREAM):
            return
        eos = ctrl.kind is ControlKind.END_OF_STREAM
        if eos and ctrl.header.stream_id == ALL_STREAMS:
            self._ended.add(port)
        for sid in self.targets(ctrl):
            st = self.streams[sid]
            if not eos:
                if port == "audio":
                    self._advance(st, force=True)
                    self._finish(st)
                continue
            if port == "audio":
                st.audio_done = True
            elif port == "vad":
                st.vad_done = True
                st.gate.mark = None
            elif port == "faces":
                st.faces_done = True
            else:
                continue
            if st.audio_done and (st.vad_done or not self._live("vad")) and (
                    st.faces_done or not self._live("faces")):
                self._advance(st, force=True)
                self._finish(st)
                if not st.rs.utterance_open:
                    del self.streams[sid]
            else:
                self._advance(st)

    def close_stream(self, sid: str, st: _Stream) -> None:
        """Stop: give everything held, apply every held VAD event, finish the open utterance."""
        self._advance(st, force=True)
        self._finish(st)

    # ------------------------------------------------------------------ inputs
    def _live(self, port: str) -> bool:
        return self.connected_inputs is not None and port in self.connected_inputs and port not in self._ended

    def _on_audio(self, msg: AudioChunk, st: _Stream) -> None:
        sid = st.sid
        x = mono_float32(msg.samples)
        idx = msg.header.sample_index
        st.clock.observe(idx + len(x), msg.header.t_ns)
        if st.audio_end is not None and idx < st.audio_end:         # overlap: keep only the new samples
            cut = min(st.audio_end - idx, len(x))
            self.overlap_samples += cut
            if cut == len(x):
                self.stats.count_rejected("audio_overlap")
            self.throttled(logging.WARNING, f"overlap:{sid}", "avsr %s: stream %r: samples %d..%d overlap the "
                           "audio it sent before (up to %d); dropping the %d old samples", self.name, sid, idx,
                           idx + len(x), st.audio_end, cut)
            x, idx = x[cut:], idx + cut
        if len(x):
            st.held.append((idx, x))
            st.audio_end = idx + len(x)
        over = (st.audio_end or 0) - MAX_HELD_S * SAMPLE_RATE
        if st.held and st.held[0][0] < over:
            self.forced_audio += 1
            self.throttled(logging.WARNING, f"held:{sid}", "avsr %s: stream %r holds over %d s of audio for the VAD "
                           "or the video; giving the oldest now", self.name, sid, MAX_HELD_S)
            self._give(st, over, False)

    def _on_faces(self, msg: Faces, st: _Stream) -> None:
        idx = msg.header.sample_index
        if idx == NO_SAMPLE:                     # a camera frame: its capture time on the microphone's clock
            mapped = st.clock.sample_at(msg.header.t_ns)
            idx = -1 if mapped is None else mapped
        st.video_end = max(st.video_end or 0, idx + round(SAMPLE_RATE / msg.fps))
        kind = ("video_clock" if idx < 0 else "video_order" if idx <= st.last_frame else
                "video_late" if st.fed is not None and idx < st.fed - MAX_LATE_S * SAMPLE_RATE else None)
        if kind is not None:
            self.stats.count_rejected(kind)
            self.throttled(logging.WARNING, f"{kind}:{st.sid}", "avsr %s: dropping video frame %d of stream %r at "
                           "sample %d (%s)", self.name, msg.frame_index, st.sid, idx, kind.replace("_", " "))
            return
        st.frames.append((idx, msg.faces))
        st.last_frame = idx
        if len(st.frames) > MAX_FRAMES:
            st.frames.popleft()
            self.stats.count_rejected("video_overflow")

    # ------------------------------------------------------------------ in step
    def _advance(self, st: _Stream, force: bool = False) -> None:
        """Give audio up to the gate's limit and the frames it covers, apply the events that are due, decode."""
        while True:
            data_end = st.audio_end or 0
            video_live = not st.faces_done and "faces" not in self._ended and (
                self.connected_inputs is None or "faces" in self.connected_inputs)
            if video_live and not force:
                data_end = min(data_end, max(st.video_end or 0, data_end - self._video_wait))
            limit = st.gate.data_limit(data_end, force)
            head = st.gate.pending[0] if st.gate.pending else None
            if head is not None and head.kind is SpeechEventKind.SPEECH_START:
                limit = min(limit, head.start_sample)       # its frames are given after it (one face)
            self._give(st, limit, force)
            reached = max(st.fed or 0, st.held[0][0] if st.held else 0)     # nothing before it is held
            ev = st.gate.pop_due(reached, force)
            if ev is None:
                break
            self._apply(st, ev)
        self._steps(st)

    def _give(self, st: _Stream, limit: int, force: bool) -> None:
        """Give the held audio before ``limit`` and the frames it covers, decoding after every PIECE_S of it."""
        since, piece = 0, PIECE_S * SAMPLE_RATE
        while st.held and st.held[0][0] < limit:
            s, x = st.held.popleft()
            n = min(len(x), limit - s, piece - since)
            st.rs.accept_audio(x[:n], s)
            st.fed = s + n
            if n < len(x):
                st.held.appendleft((s + n, x[n:]))
            since += n
            if since >= piece and st.held and st.held[0][0] < limit:
                self._give_frames(st, force)
                self._steps(st)
                since = 0
        self._give_frames(st, force)

    def _give_frames(self, st: _Stream, force: bool) -> None:
        """Give the frames before the audio given (while no utterance is open: MAX_LATE_S behind it)."""
        idle_until = (st.fed or 0) - int(MAX_LATE_S * SAMPLE_RATE)
        while st.frames and st.fed is not None and st.frames[0][0] < st.fed:
            idx, faces = st.frames[0]
            if not (force or st.rs.utterance_open or idx < idle_until):
                break
            st.frames.popleft()
            face = self._pick(st, faces, idx)
            st.rs.accept_video(None if face is None else face.mouth, idx)

    def _pick(self, st: _Stream, faces: tuple[Face, ...], idx: int) -> Face | None:
        """The followed face in the frame at sample ``idx`` (see the module docstring), or None."""
        fixed = st.rs.utterance_open and idx >= st.start
        if fixed and st.followed != NO_FACE:
            return next((f for f in faces if f.face_id == st.followed), None)
        if not faces:
            return None
        active = self._live("active") or bool(st.probs)

        def score(f: Face) -> tuple[float, int]:
            area = int(f.box[2]) * int(f.box[3])
            return (st.probs.get(f.face_id, 0.5) if active else 0.0, area)
        best = max(faces, key=score)
        if fixed:
            st.followed = best.face_id
        return best

    def _apply(self, st: _Stream, ev: VadEvent) -> None:
        if ev.kind is SpeechEventKind.SPEECH_START:
            if st.rs.utterance_open:
                st.rs.endpoint(ev.start_sample)
                self._steps(st)
            st.utterance_id += 1
            st.revision = 0
            st.closing = False
            st.followed = NO_FACE                   # the first frame from the start picks it
            st.start = ev.start_sample
            st.rs.begin(ev.start_sample)
        elif ev.kind is SpeechEventKind.SPEECH_END and st.rs.utterance_open:
            st.rs.endpoint(ev.end_sample)
            st.closing = True
            self._steps(st)

    def _steps(self, st: _Stream) -> None:
        for _ in range(MAX_ROUNDS):
            rev = st.rs.step()
            if rev is None:
                return
            self._send(st, rev)

    def _finish(self, st: _Stream) -> None:
        """End the open utterance at the last sample given (unless the VAD already ended it; never before its
        start: a SPEECH_START past the audio gives an empty utterance) and decode."""
        if st.rs.utterance_open:
            if not st.closing:
                st.rs.endpoint(max(st.fed or 0, st.start))
                st.closing = True
            self._steps(st)

    def _send(self, st: _Stream, rev: Revision) -> None:
        header = self.header("transcripts", st.sid, rev.end_sample)
        self.emit("transcripts", LabeledTranscript(
            header, max(st.utterance_id, 0), st.revision, rev.committed, rev.unstable, rev.final, rev.start_sample,
            rev.end_sample, SAMPLE_RATE, rev.language, rev.words, face_id=st.followed))
        st.revision += 1
        if rev.final and st.rs.utterance_open:     # the backend split a long utterance: the rest is a new one
            st.utterance_id += 1
            st.revision = 0
