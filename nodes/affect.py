"""``affect``: how each utterance sounds. The voice affect model over the recognizer's own features.

Inputs: ``features`` (the feature node's ``whisper_log10_mel`` frames, the same the asr node takes; other
kinds are rejected and counted) and ``vad`` (VadEvent). Output: ``affect`` (Affect, source ``voice``): a
provisional estimate about every ``interval_ms`` while an utterance goes on (once it has ``min_ms``), and a
final one over the utterance's span as soon as its frames are in.

The model is :mod:`kikimimi.models.affect.voice` (Whisper encoder states pooled over the utterance -> a linear
head; the bundled heads are trained on RAVDESS: CC BY-NC-SA 4.0, non-commercial use only). Its Whisper weights
are shared with an asr node of the same model, device and threads in the same process. As in the speaker node,
VAD events wait until the features reach them and provisional estimates read no further than
``vad_lookahead_ms`` past the VAD's watermark (a :class:`~kikimimi.nodes._vad_sync.VadGate` per stream), so files
at full speed give the estimates of live input; in the lossless profile (files at full speed) only finals are
made. Utterances are numbered per stream from 0; the fusion node matches them to transcripts by span.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from kikimimi.engine.clock import Clock
from kikimimi.engine.errors import KikimimiError, ParamError
from kikimimi.engine.messages import Control, ControlKind, Message
from kikimimi.engine.msgs.affect import Affect
from kikimimi.engine.msgs.audio import Features
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.engine.node import PortSpec
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.streams import StreamNode
from kikimimi.models.affect.voice import (
    AffectEstimate,
    VoiceAffectConfig,
    VoiceAffectModel,
    VoiceAffectStream,
    bundled_head,
)
from kikimimi.nodes._vad_sync import VadGate

MAX_PENDING_EVENTS = 256
FEATURE_KIND = "whisper_log10_mel"
SAMPLE_RATE = 16000


@dataclass(eq=False)
class _Stream:
    sid: str
    gate: VadGate
    voice: VoiceAffectStream
    ended: bool = False             # the features input ended
    vad_ended: bool = False         # the VAD input ended


class AffectNode(StreamNode[_Stream]):
    """Voice affect per utterance; see the module docstring."""

    kind = "affect"
    help = ("How each utterance sounds: emotion class probabilities, arousal and valence from the Whisper encoder "
            "states of the utterance (provisional while it goes on, final at its end).")
    inputs = (
        PortSpec("features", (Features,), queue=QueueConfig.make("block", 512),
                 help="whisper_log10_mel frames from a features node"),
        PortSpec("vad", (VadEvent,), queue=QueueConfig.make("block", 256), help="speech start / end events"),
    )
    outputs = (PortSpec("affect", (Affect,), help="voice affect of each utterance (provisional, then final)"),)
    lossless_params = {"vad_lookahead_ms": 0, "interval_ms": 0}
    follows_recognizer_model = True
    """``kikimimi transcribe --model NAME`` sets this node's ``model`` too when :meth:`can_follow` says a head
    exists for NAME (then one Whisper model serves both)."""

    @classmethod
    def can_follow(cls, model: str) -> bool:
        """True if a bundled head exists for Whisper ``model``."""
        try:
            bundled_head(model)
        except ParamError:
            return False
        return True
    params = (
        Param("model", str, "base", "Whisper model whose encoder states are used (base, tiny.en; a head must "
              "exist for it)"),
        Param("head", str, "", "a head's path (NAME of NAME.json + NAME.safetensors); '' = the bundled one"),
        Param("device", str, "auto", "where the encoder runs", choices=("auto", "cpu", "cuda")),
        Param("threads", int, 0, "CPU threads for the encoder (0 = the library's default)", min=0, max=256),
        Param("min_ms", int, 1000, "no estimate before an utterance is this long", min=0),
        Param("interval_ms", int, 1000, "provisional estimates this often (0 = finals only)", min=0),
        Param("vad_lookahead_ms", int, 500, "provisional estimates read at most this far past the VAD's watermark",
              min=0),
    )

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        p = self.p
        self.model = VoiceAffectModel(VoiceAffectConfig(p.model, p.head, p.device, p.threads, p.min_ms,
                                                        p.interval_ms))
        self._lookahead = p.vad_lookahead_ms * SAMPLE_RATE // 1000
        self.estimates = 0
        self.forced_events = 0

    def on_start(self) -> None:
        """Run the encoder once on silence (loads its caches)."""
        self.model.estimate([np.full((100, self.model.whisper.n_bins), -10.0, np.float32)])

    def open_stream(self, sid: str, msg: Message) -> _Stream:
        return _Stream(sid, VadGate(self._lookahead, MAX_PENDING_EVENTS), self.model.new_stream())

    def on_message(self, port: str, msg: Message) -> None:
        """Features go into the stream; VAD events wait for their features; due estimates are made."""
        if isinstance(msg, Features):
            if msg.kind != FEATURE_KIND or msg.frames.shape[1] != self.model.whisper.n_bins or msg.hop != 160:
                self.stats.count_rejected("features")
                self.throttled(logging.WARNING, f"kind:{msg.header.stream_id}", "affect %s: dropping %s features "
                               "(%d bins, hop %d) of stream %r; allowed: %s with %d bins, hop 160", self.name, msg.kind,
                               msg.frames.shape[1], msg.hop, msg.header.stream_id, FEATURE_KIND,
                               self.model.whisper.n_bins)
                return
            st = self.stream(msg)
            st.voice.accept(msg.frames, msg.start_frame, msg.header.sample_index)
        elif isinstance(msg, VadEvent):
            st = self.stream(msg)
            forced = st.gate.on_event(msg)
            if forced is not None:
                self.forced_events += 1
                self._apply(st, forced)
        else:
            return
        self._advance(st)

    def on_control(self, port: str, ctrl: Control) -> None:
        """END_OF_STREAM: once a stream's features and VAD ended, its held events are applied and an utterance
        still open ends at the last frame (its final is made)."""
        if ctrl.kind is not ControlKind.END_OF_STREAM:
            return
        for sid in self.targets(ctrl):
            st = self.streams[sid]
            if port == "features":
                st.ended = True
            elif port == "vad":
                st.vad_ended = True
                st.gate.mark = None
            if self._inputs_done(st):
                self._finish(st)

    def on_stop(self) -> None:
        """Make the finals of every open utterance."""
        for st in self.streams.values():
            self._finish(st)

    # ------------------------------------------------------------------ inside
    def _inputs_done(self, st: _Stream) -> bool:
        connected = self.connected_inputs
        return st.ended and (st.vad_ended or (connected is not None and "vad" not in connected))

    def _finish(self, st: _Stream) -> None:
        self._advance(st, force=True)
        if st.voice.open:
            st.voice.end(st.voice.sample_of(st.voice.frames_end))
            self._advance(st, force=True)

    def _advance(self, st: _Stream, force: bool = False) -> None:
        force = force or self._inputs_done(st)
        data_end = st.voice.sample_of(st.voice.frames_end)
        while True:
            self._estimate(st, st.gate.data_limit(data_end, force))
            ev = st.gate.pop_due(data_end, force)
            if ev is None:
                return
            self._apply(st, ev)

    def _apply(self, st: _Stream, ev: VadEvent) -> None:
        if ev.kind is SpeechEventKind.SPEECH_START:
            st.voice.begin(ev.start_sample)
        elif ev.kind is SpeechEventKind.SPEECH_END:
            st.voice.end(ev.end_sample)
            self._estimate(st, None)

    def _estimate(self, st: _Stream, limit: int | None) -> None:
        try:
            self.model.step([st.voice], [limit])
        except KikimimiError as exc:     # a bad head or input: this estimate is lost, the stream goes on
            self.stats.count_rejected("estimate")
            self.throttled(logging.WARNING, f"estimate:{st.sid}", "affect %s: estimate failed on stream %r: %s",
                           self.name, st.sid, exc)
        for e in st.voice.results():
            self._send(st.sid, e)

    def _send(self, sid: str, e: AffectEstimate) -> None:
        self.estimates += 1
        self.emit("affect", Affect(self.header("affect", sid, e.end_sample), e.utterance_id, "voice", e.start_sample,
                                   e.end_sample, SAMPLE_RATE, e.label, e.classes, e.probabilities, e.arousal,
                                   e.valence, e.confidence, self.model.id, e.final))
