"""``speaker``: who is speaking. Streaming speaker embeddings inside VAD speech, identification against
the enrollment database, online clustering of unknown voices, and speaker changes inside an utterance.

Inputs: ``audio`` (16 kHz AudioChunk; other rates are rejected and counted: set the source's
``sample_rate``) and ``vad`` (VadEvent). Outputs: ``turns`` (SpeakerTurn) and ``embeddings``
(SpeakerEmbedding: every window's and every utterance's).

The algorithm is :mod:`kikimimi.models.speaker.streaming`: one model per node (its ``voice_N`` clusters
are common to the node's streams), one model stream per stream. The enrollment database (``db``: a
path, "" for the default path, "none" for none) is read once at start. Like the asr node, VAD events
wait until the audio reaches their sample, and windows are not taken further than
``vad_lookahead_ms`` past the VAD's PROGRESS watermark (nor past a SPEECH_END that waits), so files at
full speed give the same turns as live input (a :class:`~kikimimi.nodes._vad_sync.VadGate` per
stream); a window may still reach past an utterance's end within that lookahead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kikimimi.engine.clock import Clock
from kikimimi.engine.errors import KikimimiError
from kikimimi.engine.messages import Control, ControlKind, Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.speaker import SpeakerEmbedding, SpeakerTurn
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.engine.node import PortSpec
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.streams import StreamNode
from kikimimi.models.pcm import mono_float32
from kikimimi.models.speaker.config import SpeakerConfig, read_enrollment
from kikimimi.models.speaker.encoder import shared_encoder
from kikimimi.models.speaker.results import SpeakerResult, Turn, WindowEmbedding
from kikimimi.models.speaker.streaming import SpeakerModel, SpeakerStream
from kikimimi.nodes._vad_sync import VadGate

MAX_PENDING_EVENTS = 256

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Stream:
    sid: str
    gate: VadGate                   # the VAD events that wait for their audio, and the VAD's watermark
    speaker: SpeakerStream
    ended: bool = False             # the audio input ended
    vad_ended: bool = False         # the VAD input ended (END_OF_STREAM)


class SpeakerNode(StreamNode[_Stream]):
    """Streaming speaker embeddings, identification and clustering; see the module docstring."""

    kind = "speaker"
    help = "Who is speaking: GE2E d-vectors in VAD speech, enrolled names or voice_N clusters, speaker changes."
    inputs = (
        PortSpec("audio", (AudioChunk,), queue=QueueConfig.make("block", 512), help="16 kHz audio"),
        PortSpec("vad", (VadEvent,), queue=QueueConfig.make("block", 256), help="speech start / end events"),
    )
    # Files at full speed: no window reaches past the VAD's watermark, so the turns do not depend on when the
    # VAD's events arrive.
    lossless_params = {"vad_lookahead_ms": 0}
    outputs = (
        PortSpec("turns", (SpeakerTurn,), help="speaker of each utterance part (provisional, then final)"),
        PortSpec("embeddings", (SpeakerEmbedding,), help="window and utterance embeddings"),
    )
    params = (
        Param("encoder", str, "ge2e", "speaker encoder: 'ge2e' (resemblyzer's weights), a .pt checkpoint, or "
              "a local encoder directory"),
        Param("device", str, "auto", "where the encoder runs", choices=("auto", "cpu", "cuda")),
        Param("threads", int, 1, "CPU threads for the encoder (0 = torch's default: one per core, slow when other "
              "nodes share the cores)", min=0, max=256),
        Param("hop_ms", int, 800, "a window starts every this many ms of speech", min=100, max=10000),
        Param("db", str, "", "enrollment database: a path, '' (the default path, if it exists) or 'none'"),
        Param("threshold", float, None, "similarity needed to name an enrolled speaker (default: the "
              "threshold calibrated for the encoder in the database, else the encoder's default)",
              min=-1.0, max=1.0, nullable=True),
        Param("cluster_unknown", bool, True, "give unknown voices stable session ids voice_1, voice_2, ..."),
        Param("cluster_threshold", float, 0.7, "similarity an utterance needs to join a voice cluster (0.7: chosen on "
              "the far-field AMI mixes, where one voice scores lower than on close-talk speech)",
              min=-1.0, max=1.0),
        Param("split", bool, True, "split an utterance where the speaker changes"),
        Param("provisional", bool, True, "send the label of an utterance part while it goes on"),
        Param("min_windows", int, 1, "parts with fewer windows are labelled 'unknown'", min=1),
        Param("ring_s", int, 60, "seconds of audio kept per stream", min=5, max=3600),
        Param("vad_lookahead_ms", int, 500, "windows reach at most this far past the VAD's watermark", min=0),
    )

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        p = self.p
        self.config = SpeakerConfig(
            encoder=p.encoder, device=p.device, threads=p.threads, hop_ms=p.hop_ms, threshold=p.threshold,
            cluster_unknown=p.cluster_unknown, cluster_threshold=p.cluster_threshold, split=p.split,
            provisional=p.provisional, min_windows=p.min_windows, ring_s=p.ring_s)
        self.encoder = shared_encoder(p.encoder, p.device, p.threads)
        self._lookahead = p.vad_lookahead_ms * self.encoder.sample_rate // 1000
        self.model: SpeakerModel | None = None       # made at start, once the enrollment database is read
        self.forced_events = 0

    @property
    def windows_embedded(self) -> int:
        return 0 if self.model is None else self.model.windows_embedded

    @property
    def embed_seconds(self) -> float:
        return 0.0 if self.model is None else self.model.embed_seconds

    # ------------------------------------------------------------------ hooks
    def on_start(self) -> None:
        """Read the enrollment database, build the model (identifier included), warm the encoder up."""
        enrolled = read_enrollment(self.encoder, self.p.db)
        if enrolled.missing is not None:
            log.warning("speaker %s: enrollment database %s does not exist; no speaker is enrolled",
                        self.name, enrolled.missing)
        self.model = SpeakerModel(self.config, enrolled.gallery, enrolled.threshold, self.encoder)
        if len(enrolled.gallery):
            log.info("speaker %s: %d enrolled speakers, threshold %.3f", self.name, len(enrolled.gallery),
                     self.model.threshold)
        self.model.warmup()

    def open_stream(self, sid: str, msg: Message) -> _Stream:
        if self.model is None:
            raise KikimimiError(f"speaker {self.name}: a message came before on_start; allowed: messages after it")
        return _Stream(sid, VadGate(self._lookahead, MAX_PENDING_EVENTS), self.model.new_stream())

    def on_message(self, port: str, msg: Message) -> None:
        """Audio (at the encoder's rate) goes into the stream; VAD events wait for their audio; due
        windows are embedded."""
        if isinstance(msg, AudioChunk):
            if not self.accepts("audio", msg, (self.encoder.sample_rate,)):
                return
            st = self.stream(msg)
            st.speaker.accept(mono_float32(msg.samples), msg.header.sample_index)
        elif isinstance(msg, VadEvent):
            st = self.stream(msg)
            forced = st.gate.on_event(msg)
            if forced is not None:          # more than MAX_PENDING_EVENTS wait: the oldest goes now
                self.forced_events += 1
                self._apply(st, forced)
        else:
            return
        self._advance(st)

    def on_control(self, port: str, ctrl: Control) -> None:
        """END_OF_STREAM: once a stream's audio and its VAD ended (a VAD not connected counts as ended), its held
        events are applied and its open utterance closes at the last sample of audio; until then windows
        still wait for the VAD's watermarks, so the order in which the two ends arrive (over ZeroMQ, any)
        changes nothing. FLUSH on ``vad`` applies the held events and closes the utterance now; on
        ``audio`` it marks the audio complete."""
        if ctrl.kind not in (ControlKind.FLUSH, ControlKind.END_OF_STREAM):
            return
        eos = ctrl.kind is ControlKind.END_OF_STREAM
        for sid in self.targets(ctrl):
            st = self.streams[sid]
            if port == "audio":
                st.ended = True
            elif eos and port == "vad":
                st.vad_ended = True
                st.gate.mark = None          # no watermark will come: audio no longer waits for one
            done = self._inputs_done(st) if eos else port == "vad"
            self._advance(st, force=done)
            if done:
                self._send(st, st.speaker.end(st.speaker.audio_end))

    def on_stop(self) -> None:
        """Apply every held event and close every open utterance."""
        for st in self.streams.values():
            self._advance(st, force=True)
            self._send(st, st.speaker.end(st.speaker.audio_end))

    # ------------------------------------------------------------------ inside
    def _inputs_done(self, st: _Stream) -> bool:
        """Both inputs of ``st`` are complete: its audio ended, and its VAD ended or is not connected."""
        connected = self.connected_inputs
        return st.ended and (st.vad_ended or (connected is not None and "vad" not in connected))

    def _advance(self, st: _Stream, force: bool = False) -> None:
        """Embed the windows that are due and apply the events whose audio is in, in order (all of them,
        and windows up to the audio's end, with ``force`` or once both inputs ended)."""
        force = force or self._inputs_done(st)
        while True:
            self._send(st, st.speaker.step(st.gate.data_limit(st.speaker.audio_end, force)))
            ev = st.gate.pop_due(st.speaker.audio_end, force)
            if ev is None:
                return
            self._apply(st, ev)

    def _apply(self, st: _Stream, ev: VadEvent) -> None:
        if ev.kind is SpeechEventKind.SPEECH_START:
            self._send(st, st.speaker.begin(ev.start_sample))
        else:
            self._send(st, st.speaker.end(ev.end_sample))

    def _send(self, st: _Stream, results: list[SpeakerResult]) -> None:
        rate, sid = self.encoder.sample_rate, st.sid
        for r in results:
            if isinstance(r, Turn):
                self.emit("turns", SpeakerTurn(self.header("turns", sid, r.at), r.utterance, r.part, r.speaker,
                                               r.score, r.enrolled, r.final, r.start, r.end, rate))
            else:
                kind = "window" if isinstance(r, WindowEmbedding) else "utterance"
                self.emit("embeddings", SpeakerEmbedding(self.header("embeddings", sid, r.end), r.utterance, kind,
                                                         r.start, r.end, rate, self.encoder.id, r.vector))
