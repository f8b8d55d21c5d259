"""``asr``: streaming speech recognition of VAD-delimited utterances from feature frames.

Inputs: ``features`` (the feature node's Features, kind and size as the backend needs: Whisper eats
``whisper_log10_mel``), ``vad`` (VadEvent) and, for backends whose ``feature_kind`` is ``"audio"``
(they take raw samples), ``audio`` (16 kHz AudioChunk; ignored by feature backends, as features are by
audio backends). Output: ``transcripts`` (Transcript revisions).

The backend (``backend``: ``whisper``, ``sphinx``, or any other installed in the ``kikimimi.asr_backends``
entry-point group, :mod:`kikimimi.models.asr.backends`) declares its own parameters, given as
``BACKEND.NAME`` (``whisper.beam_size: 5``), nested (``whisper: {beam_size: 5}``) or, for the backend in
use, plain (``beam_size: 5``); only the backend in use is checked, and a parameter of another backend is an
error. The node builds the backend's typed config from them and ``model``.

Each stream (by ``header.stream_id``) gets its own :class:`~kikimimi.models.asr.RecognizerStream` of
one shared :class:`~kikimimi.models.asr.Recognizer`. Every Features message goes into the stream's
frame ring; SPEECH_START opens an utterance at its start sample, SPEECH_END closes it. A VAD event is
applied once the stream's frames have reached its sample (the VAD may run ahead of the feature node,
e.g. over files at full speed), so an utterance is never closed or replaced before its audio is in;
frames more than ``vad_lookahead_ms`` past the VAD's PROGRESS watermark wait for it (a
:class:`~kikimimi.nodes._vad_sync.VadGate` per stream). While an utterance is open, the stream is
re-decoded whenever ``interval`` new audio arrived; the interval adapts to the measured decode time
(``headroom`` times it, within ``min_interval_ms`` .. ``max_interval_ms``). Streams that are due at
about the same time go into ONE ``decode`` call (:class:`~kikimimi.models.asr.batching.BatchDecoder`):
a due partial waits (``batch_wait``) until every open stream has one due, or at most until its own
stream's next message or a 50 ms tick. A stream whose newest audio is more than ``max_lag_ms`` behind
real time (by the wall clock at which its audio arrived) skips partial decodes until it has caught up;
its final is always decoded.

A SPEECH_END ends the utterance only once the silence after it has lasted ``final_silence_ms`` (by the
VAD's watermarks, :class:`~kikimimi.nodes._endpoint_hold.EndpointHold`); speech resuming sooner continues it.
With ``speculative_final`` the final is decoded while that silence is still being confirmed (once the
held SPEECH_END's frames are in; the stream decodes no partial meanwhile) and published as soon as it is,
when nothing changed the request (:mod:`~kikimimi.models.asr.speculation`): the wait and the decode overlap.

Each utterance publishes Transcript revisions: ``revision`` counts from 0, ``committed`` only ever
grows from one partial to the next, ``unstable`` is the tail that may change, and the last revision is
``final`` (committed = the whole text, words on the stream's sample clock). The Whisper backend decodes
the final again over the whole utterance (``whisper.redecode_final``), which may correct committed words;
``corrections`` counts those finals. An utterance in which nothing was recognized
publishes nothing. END_OF_STREAM / FLUSH (a stream or "all") and ``on_stop`` finish open
utterances at their applied SPEECH_END, else at the last sample seen, after the held VAD events (see
:meth:`AsrNode.on_control`).
Streams are kept after they end (a stream that comes back goes on numbering its utterances).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kikimimi.engine.clock import Clock
from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import ALL_STREAMS, Control, ControlKind, Message
from kikimimi.engine.msgs.audio import AudioChunk, Features
from kikimimi.engine.msgs.speech import SpeechEventKind, Transcript, VadEvent
from kikimimi.engine.node import PortSpec
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.streams import StreamNode
from kikimimi.models.asr.backends import backend_names, backend_params, load_backend, make_config
from kikimimi.models.asr.batching import BatchDecoder
from kikimimi.models.asr.language import parse_language
from kikimimi.models.asr.policy import AdaptiveInterval
from kikimimi.models.asr.recognizer import AUTO, DecodeRequest, Recognizer, RecognizerStream, Revision
from kikimimi.models.pcm import mono_float32
from kikimimi.nodes._endpoint_hold import EndpointHold
from kikimimi.nodes._vad_sync import VadGate

AUDIO_KIND = "audio"
"""Recognizer.feature_kind of backends that take raw samples: accept((n, 1) float32, sample, sample)."""
SAMPLE_RATE = 16000
MAX_PENDING_EVENTS = 256
"""VAD events held per stream until its frames catch up; beyond this the oldest is applied at once."""
MAX_HELD = 3000
"""Feature / audio messages held per stream for the VAD to catch up (60 s of 20 ms chunks); beyond this
the oldest is fed at once."""
TICK_NS = 50_000_000


@dataclass(eq=False)
class _Stream:
    """One stream: its recognizer state, utterance numbering and real-time pacing."""

    sid: str
    rs: RecognizerStream
    gate: VadGate                  # VAD events ahead of the stream's frames, and the VAD's PROGRESS watermark
    utterance_id: int = -1
    revision: int = 0
    last_sample: int = 0           # end of the newest frames that arrived
    fed_sample: int = 0            # end of the newest frames given to the recognizer
    hop: int = 160
    offset_ns: int | None = None   # min over arrivals of (arrival wall ns - media ns of the newest sample)
    prev_end: int = 0              # end sample of the last utterance
    ended_at: int | None = None    # the open utterance's SPEECH_END sample, once applied
    waiting: DecodeRequest | None = None   # a due partial held for batching
    wait_msgs: int = 0             # messages of this stream since it was held
    held: deque[Features | AudioChunk] = field(default_factory=deque)   # frames ahead of the VAD
    data_ended: bool = False       # END_OF_STREAM came on the data port: frames are complete
    hold: EndpointHold = field(default_factory=lambda: EndpointHold(0))  # SPEECH_END until the silence lasted
    spec_for: VadEvent | None = None   # the held SPEECH_END whose final was decoded ahead


class AsrNode(StreamNode[_Stream]):
    """Streaming recognition of VAD-delimited utterances; see the module docstring."""

    kind = "asr"
    help = ("Streaming speech recognition (Whisper via CTranslate2 by default): Transcript revisions per utterance. "
            "Backend parameters: BACKEND.NAME (e.g. whisper.beam_size).")
    inputs = (
        PortSpec("features", (Features,), queue=QueueConfig.make("block", 512),
                 help="feature frames (whisper_log10_mel for the whisper backend)"),
        PortSpec("vad", (VadEvent,), queue=QueueConfig.make("block", 256), help="speech start / end events"),
        PortSpec("audio", (AudioChunk,), queue=QueueConfig.make("block", 512), rates=(SAMPLE_RATE,),
                 help="16 kHz audio, only for backends that take raw samples (feature_kind 'audio')"),
    )
    outputs = (PortSpec("transcripts", (Transcript,), help="transcript revisions; the last of an utterance is final"),)
    param_selector = "backend"
    # Files at full speed: partials every 300 ms of audio (not an interval adapted to the measured decode
    # time), none skipped for lag, no frame read past the VAD's watermark (so a partial sees the same VAD
    # decisions on every run). Batch transcription: finals only, decoded with beam search.
    lossless_params = {"min_interval_ms": 300, "max_interval_ms": 300, "max_lag_ms": 0, "vad_lookahead_ms": 0,
                       "speculative_final": False}
    batch_params = {"partials": False, "whisper.beam_size": 5}
    params = (
        Param("backend", str, "whisper", "recognizer backend (the kikimimi.asr_backends entry points); its own "
              "parameters are given as BACKEND.NAME"),
        Param("model", str, "base", "model: 'base', 'tiny.en', a faster-whisper name in the Hugging Face cache, "
              "or a path (sphinx: a grammar name or .jsgf path)"),
        Param("language", str, AUTO, "an ISO code such as 'en', 'ja'; 'auto': detected (on 2 s of speech, kept "
              "for the stream unless another language wins clearly); 'auto:en,ja': detected among those only"),
        Param("min_interval_ms", int, 300, "shortest time between partial decodes of a stream (audio ms)",
              min=50, max=10000),
        Param("max_interval_ms", int, 2000, "longest time between partial decodes of a stream (audio ms)",
              min=50, max=30000),
        Param("headroom", float, 2.0, "partial interval = headroom x measured decode time (clamped)", min=0.5,
              max=20.0),
        Param("max_lag_ms", int, 1500, "skip partial decodes while a stream's newest audio is this far behind "
              "real time; 0 = never skip", min=0),
        Param("partials", bool, True, "publish partial (committed + unstable) revisions"),
        Param("batch_wait", bool, True, "hold a due partial until the other open streams are due too (at most "
              "until its stream's next message or a tick), so they share one decode call"),
        Param("lead_in_ms", int, 200, "utterances start this much before the VAD's speech start (not before "
              "the previous utterance's end), so soft onsets are not clipped", min=0, max=2000),
        Param("final_silence_ms", int, 500, "an utterance ends (its final is decoded) once the silence after "
              "the VAD's SPEECH_END has lasted this long, by the VAD's PROGRESS watermarks; speech that resumes "
              "sooner continues it (finals cut at 300 ms pauses lost 1-3 WER points on LibriSpeech; 0 = end "
              "at every SPEECH_END)", min=0, max=10000),
        Param("speculative_final", bool, True, "decode the final while the silence after a SPEECH_END is "
              "still being confirmed (no partials meanwhile) and publish it once confirmed, unless the request "
              "changed (saves up to one decode of final latency; files at full speed turn it off: no wait "
              "to overlap there)"),
        Param("warmup", bool, True, "decode silence once at start so the first utterance is not slow"),
        Param("vad_lookahead_ms", int, 500, "when the VAD sends PROGRESS watermarks, frames further than this "
              "ahead of it wait for it, so a partial never reads far past a SPEECH_END the VAD has yet to "
              "send (live input is never held: the VAD keeps up; files at full speed give live results)",
              min=0),
    )

    @classmethod
    def plugin_names(cls) -> list[str]:
        return backend_names()

    @classmethod
    def plugin_params(cls, name: str) -> tuple[Param, ...]:
        return backend_params(name)

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        p = self.p
        if p.min_interval_ms > p.max_interval_ms:
            raise ParamError(f"node {name!r} (asr): min_interval_ms={p.min_interval_ms} is above max_interval_ms="
                             f"{p.max_interval_ms}; allowed: min_interval_ms <= max_interval_ms")
        prefix = f"{p.backend}."
        own = {k.removeprefix(prefix): v for k, v in p.as_dict().items() if k.startswith(prefix)}
        try:
            config = make_config(p.backend, p.model, own)
        except ParamError as exc:
            raise ParamError(f"node {name!r} (asr): {exc}") from None
        self.recognizer: Recognizer = load_backend(p.backend)(config)
        if self.recognizer.languages:
            try:
                parse_language(p.language, self.recognizer.languages)
            except ParamError as exc:
                raise ParamError(f"node {name!r} (asr), {self.recognizer.name}: {exc}") from None
        self.batcher = BatchDecoder(self.recognizer, AdaptiveInterval(
            max(1, p.min_interval_ms // 10), max(1, p.max_interval_ms // 10), p.headroom), p.batch_wait)
        self.tick_interval_ns = TICK_NS
        self.forced_events = 0       # VAD events applied before their frames came (MAX_PENDING_EVENTS)
        self.forced_frames = 0       # frame messages fed before the VAD caught up (MAX_HELD)
        self._lookahead = p.vad_lookahead_ms * SAMPLE_RATE // 1000
        self._audio_backend = self.recognizer.feature_kind == AUDIO_KIND
        self._ended_ports: set[str] = set()

    @property
    def decode_seconds(self) -> float:
        return self.batcher.decode_seconds

    @property
    def skipped_partials(self) -> int:
        return self.batcher.skipped_partials

    @property
    def speculative_finals(self) -> tuple[int, int]:
        """(finals published from an output decoded ahead, such outputs no final used)."""
        specs = [sp for st in self.streams.values() if (sp := getattr(st.rs, "speculation", None)) is not None]
        return sum(sp.used for sp in specs), sum(sp.discarded for sp in specs)

    @property
    def corrections(self) -> int:
        """Finals whose text does not extend the committed text of the utterance's partials."""
        return sum(int(getattr(st.rs, "corrections", 0)) for st in self.streams.values())

    # ------------------------------------------------------------------ hooks
    def on_start(self) -> None:
        """Warm the model up (one decode of silence)."""
        if self.p.warmup:
            self.recognizer.warmup()

    def on_message(self, port: str, msg: Message) -> None:
        """Frames go to their stream (features or audio, whichever the backend eats; audio at the port's
        rate); VAD events open and close utterances; due streams decode."""
        if isinstance(msg, Features):
            if not self._audio_backend:
                self._on_features(msg)
        elif isinstance(msg, AudioChunk):
            if not self._audio_backend:
                return
            if self.accepts(port, msg):
                st = self.stream(msg)
                st.hop = 1
                self._paced(st, msg.end_index)
                self._hold(st, msg)
        elif isinstance(msg, VadEvent):
            for ev in self.stream(msg).hold.push(msg):
                self._on_vad(ev)
        st = self.streams.get(msg.header.stream_id)
        if st is not None:
            if st.waiting is not None:
                st.wait_msgs += 1
            self._speculate(st)
        self._pump(partial=self.p.partials)

    def on_tick(self, now_ns: int) -> None:
        """Release held partials (batch_wait) so a quiet stream never keeps another waiting."""
        if any(st.waiting is not None for st in self.streams.values()):
            self._pump(partial=self.p.partials, release=True)

    def on_control(self, port: str, ctrl: Control) -> None:
        """FLUSH / END_OF_STREAM finish the stream's open utterance once its frames and its VAD events are in.

        A FLUSH on the data port feeds every held frame, applies every held VAD event and finishes the
        utterance. END_OF_STREAM on the data port does the same unless a connected ``vad`` input has not
        ended (its remaining events may still split the audio): then frames keep waiting for its
        watermarks, and its END_OF_STREAM (or ``on_stop``) finishes the stream. END_OF_STREAM on ``vad``
        stops holding frames for watermarks.
        """
        if ctrl.kind not in (ControlKind.FLUSH, ControlKind.END_OF_STREAM):
            return
        eos = ctrl.kind is ControlKind.END_OF_STREAM
        if eos and ctrl.header.stream_id == ALL_STREAMS:
            self._ended_ports.add(port)
        if port == ("audio" if self._audio_backend else "features"):
            vad_live = (self.connected_inputs is not None and "vad" in self.connected_inputs
                        and "vad" not in self._ended_ports)
            for s in self.targets(ctrl):
                st = self.streams[s]
                st.data_ended = st.data_ended or eos
                if eos and vad_live:
                    continue
                self._release_held(st)
                self._advance(st, force=True)
                self._finish(st)
        elif port == "vad" and eos:
            for s in self.targets(ctrl):
                st = self.streams[s]
                self._release_held(st)
                st.gate.mark = None        # no watermark will come: frames no longer wait for one
                self._advance(st, force=st.data_ended)
                if st.data_ended:
                    self._finish(st)

    def on_stop(self) -> None:
        """Feed held frames, apply held VAD events, then finish every open utterance with what arrived."""
        for st in self.streams.values():
            self._release_held(st)
            self._advance(st, force=True)
        self._pump(partial=False, release=True)
        for st in self.streams.values():
            self._finish(st)

    def open_stream(self, sid: str, msg: Message) -> _Stream:
        return _Stream(sid, self.recognizer.new_stream(self.p.language), VadGate(self._lookahead, MAX_PENDING_EVENTS),
                       hop=self.recognizer.hop, hold=EndpointHold(self.p.final_silence_ms * SAMPLE_RATE // 1000))

    def _release_held(self, st: _Stream) -> None:
        """The stream's VAD events end: a SPEECH_END still waiting for its silence goes on now."""
        for ev in st.hold.flush():
            self._on_vad(ev)

    # ------------------------------------------------------------------ internals
    def _on_features(self, msg: Features) -> None:
        rec = self.recognizer
        if msg.kind != rec.feature_kind or msg.frames.shape[1] != rec.n_bins or msg.hop != rec.hop:
            self.stats.count_rejected("features")
            self.throttled(logging.WARNING, f"kind:{msg.header.stream_id}",
                           "asr %s: dropping %s features (%d bins, hop %d) of stream %r; %s needs %s with %d bins, "
                           "hop %d", self.name, msg.kind, msg.frames.shape[1], msg.hop, msg.header.stream_id,
                           rec.name, rec.feature_kind, rec.n_bins, rec.hop)
            return
        st = self.stream(msg)
        self._paced(st, msg.header.sample_index + msg.n_frames * msg.hop)
        self._hold(st, msg)

    def _hold(self, st: _Stream, msg: Features | AudioChunk) -> None:
        st.held.append(msg)
        if len(st.held) > MAX_HELD:
            self.forced_frames += 1
            self.throttled(logging.WARNING, f"held:{msg.header.stream_id}",
                           "asr %s: stream %r has %d messages of frames waiting for the VAD (its watermark is at "
                           "sample %s); feeding the oldest now", self.name, msg.header.stream_id, len(st.held),
                           st.gate.mark)
            self._feed(st, st.held.popleft())
        self._advance(st)

    def _advance(self, st: _Stream, force: bool = False) -> None:
        """Feed the held messages that start at or before the VAD's watermark plus the look-ahead (all of
        them with ``force`` or when it sends none), then apply the VAD events the fed frames reached (all
        of them with ``force``, or once the frames ended and none is held).

        Messages of frames are fed whole, up to the watermark even past a SPEECH_END that waits (its
        frames are in before it is applied, and no partial is decoded before the due events are applied): hence
        ``gate.mark_limit``, not ``gate.data_limit``."""
        limit = st.gate.mark_limit(force)
        while st.held and (limit is None or st.held[0].header.sample_index <= limit):
            self._feed(st, st.held.popleft())
        while (ev := st.gate.pop_due(st.fed_sample, force or (st.data_ended and not st.held))) is not None:
            self._apply_vad(st, ev)

    def _feed(self, st: _Stream, msg: Features | AudioChunk) -> None:
        if isinstance(msg, Features):
            st.rs.accept(msg.frames, msg.start_frame, msg.header.sample_index)
            st.fed_sample = msg.header.sample_index + msg.n_frames * msg.hop
            return
        st.rs.accept(mono_float32(msg.samples).reshape(-1, 1), msg.header.sample_index, msg.header.sample_index)
        st.fed_sample = msg.end_index

    def _paced(self, st: _Stream, last_sample: int) -> None:
        st.last_sample = last_sample
        off = self.clock.now_ns() - last_sample * 1_000_000_000 // SAMPLE_RATE
        st.offset_ns = off if st.offset_ns is None else min(st.offset_ns, off)

    def _on_vad(self, ev: VadEvent) -> None:
        """Hold ``ev`` until the stream's frames reach its sample, so an utterance is never closed or
        replaced before its audio is in (the VAD may run ahead of the feature node); a PROGRESS
        watermark releases the frames it covers."""
        st = self.stream(ev)
        forced = st.gate.on_event(ev)
        if forced is not None:
            self.forced_events += 1
            self.throttled(logging.WARNING, f"pending:{ev.header.stream_id}",
                           "asr %s: stream %r has %d VAD events ahead of its frames (at sample %d); applying "
                           "the oldest now", self.name, ev.header.stream_id, len(st.gate.pending) + 1,
                           st.fed_sample)
            self._apply_vad(st, forced)
        self._advance(st)

    def _apply_vad(self, st: _Stream, ev: VadEvent) -> None:
        if ev.kind is SpeechEventKind.SPEECH_START:
            if st.rs.utterance_open:
                st.rs.endpoint(ev.start_sample)
                self._pump(partial=False, only=st)
            st.utterance_id += 1
            st.revision = 0
            lead = self.p.lead_in_ms * ev.sample_rate // 1000
            st.rs.begin(max(ev.start_sample - lead, st.prev_end, 0))
            st.ended_at = None
        elif st.rs.utterance_open:
            st.rs.endpoint(ev.end_sample)
            st.prev_end = st.ended_at = ev.end_sample

    def _speculate(self, st: _Stream) -> None:
        """Decode the final of a held SPEECH_END ahead, once its frames are in (once per held end)."""
        held = st.hold.held
        if (not self.p.speculative_final or held is None or st.spec_for is held or st.ended_at is not None
                or not st.rs.utterance_open or st.fed_sample < held.end_sample):
            return
        if self.batcher.speculate(st.rs, held.end_sample) or st.waiting is None:
            st.spec_for = held        # decoded, or not due for a reason waiting will not change

    def _quiet(self, st: _Stream) -> bool:
        return st.spec_for is not None and st.spec_for is st.hold.held

    def _lagging(self, st: _Stream) -> bool:
        if self.p.max_lag_ms <= 0 or st.offset_ns is None:
            return False
        media_ns = st.last_sample * 1_000_000_000 // SAMPLE_RATE
        lag_ns = self.clock.now_ns() - (st.offset_ns + media_ns)
        return lag_ns > self.p.max_lag_ms * 1_000_000

    def _pump(self, partial: bool, only: _Stream | None = None, release: bool = False) -> None:
        self.batcher.pump(self.streams.values(), partial, self._lagging, self._send, only, release, self._quiet)

    def _finish(self, st: _Stream) -> None:
        """End the open utterance at its SPEECH_END if one was applied (its final may not be decoded yet),
        else at the end of the frames that arrived."""
        if not st.rs.utterance_open:
            return
        st.rs.endpoint(st.fed_sample if st.ended_at is None else min(st.ended_at, st.fed_sample))
        self._pump(partial=False, only=st)
        if st.rs.utterance_open:       # frames up to the endpoint never came: end at what arrived
            sample_of = getattr(st.rs, "sample_of", None)
            frames_end = int(sample_of(st.rs.frames_end)) if callable(sample_of) else st.fed_sample
            st.rs.endpoint(min(st.fed_sample, frames_end))
            self._pump(partial=False, only=st)

    def _send(self, st: _Stream, rev: Revision) -> None:
        header = self.header("transcripts", st.sid, rev.end_sample)
        self.emit("transcripts", Transcript(header, max(st.utterance_id, 0), st.revision, rev.committed, rev.unstable,
                                            rev.final, rev.start_sample, rev.end_sample, SAMPLE_RATE, rev.language,
                                            rev.words))
        st.revision += 1
