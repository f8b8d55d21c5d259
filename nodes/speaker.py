"""``speaker``: who is speaking. Streaming speaker embeddings inside VAD speech, identification against
the enrollment database, online clustering of unknown voices, and speaker changes inside an utterance.

Inputs: ``audio`` (16 kHz AudioChunk; other rates are rejected and counted: set the source's
``sample_rate``) and ``vad`` (VadEvent). Outputs: ``turns`` (SpeakerTurn) and ``embeddings``
(SpeakerEmbedding: every window's and every utterance's).

Per stream, the audio goes into a ring. SPEECH_START opens an utterance; windows of the encoder's
length (GE2E: 1.6 s) every ``hop_ms`` are embedded as soon as their audio is in (all windows that
are due in a stream go into one ``embed`` call of the shared encoder), with the arithmetic of
:mod:`kikimimi.models.speaker.windows`, so a window's embedding equals the offline embedding of the
same span. (The spans themselves can differ from offline ones: a full window may be taken past an
utterance's end before the VAD's end event arrives, up to ``vad_lookahead_ms`` past its watermark.) With
``split`` on, a :class:`~kikimimi.models.speaker.identify.ChangeDetector` watches the windows; a
change ends the current part of the utterance (its final turn goes out at once) and starts the next.
With ``provisional`` on, the current part's label so far goes out (``final`` false) whenever it
changes. At SPEECH_END the closing window is embedded and the last part's final turn and the
utterance embedding go out: the label arrives a few tens of milliseconds after the VAD's end event.

Identification (:class:`~kikimimi.models.speaker.identify.Identifier`): the best enrolled speaker at
or above the threshold (``threshold`` param, else the one calibrated for this encoder in the database,
else the encoder's default), else a ``voice_N`` cluster of this session (``cluster_unknown``), else
``unknown``. The database (``db``: a path, "" for the default path, "none" for none) is read once at
start.

Like the asr node, VAD events wait until the audio reaches their sample, and windows are not taken
further than ``vad_lookahead_ms`` past the VAD's PROGRESS watermark (nor past a SPEECH_END that waits),
so files at full speed give the same turns as live input: a
:class:`~kikimimi.nodes._vad_sync.VadGate` per stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kikimimi.engine.clock import Clock
from kikimimi.engine.messages import Control, ControlKind, Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.speaker import UNKNOWN_SPEAKER, SpeakerEmbedding, SpeakerTurn
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.engine.node import Node, PortSpec, control_targets
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.ring import AudioRing
from kikimimi.models.pcm import mono_float32
from kikimimi.nodes._vad_sync import VadGate

SAMPLE_RATE = 16000
MAX_PENDING_EVENTS = 256
MAX_WINDOWS = 2000        # windows kept per utterance part (an hour of speech at 0.8 s hops is 4500)

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Part:
    start: int
    vecs: list[np.ndarray] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    label: str = ""                 # last provisional label sent


@dataclass(eq=False)
class _Utt:
    uid: int
    start: int
    next_win: int
    parts: list[_Part]
    detector: Any
    all_vecs: list[np.ndarray] = field(default_factory=list)


@dataclass(eq=False)
class _Stream:
    sid: str
    gate: VadGate                   # the VAD events that wait for their audio, and the VAD's watermark
    ring: AudioRing | None = None
    utt: _Utt | None = None
    n_utt: int = -1
    ended: bool = False

    @property
    def audio_end(self) -> int:
        return 0 if self.ring is None else self.ring.write_index


class SpeakerNode(Node):
    """Streaming speaker embeddings, identification and clustering; see the module docstring."""

    kind = "speaker"
    help = "Who is speaking: GE2E d-vectors in VAD speech, enrolled names or voice_N clusters, speaker changes."
    inputs = (
        PortSpec("audio", (AudioChunk,), queue=QueueConfig.make("block", 512), help="16 kHz audio"),
        PortSpec("vad", (VadEvent,), queue=QueueConfig.make("block", 256), help="speech start / end events"),
    )
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
        from kikimimi.models.speaker.encoder import load_encoder

        p = self.p
        self.encoder = load_encoder(p.encoder, p.device, p.threads)
        rate = self.encoder.sample_rate
        self._window = int(self.encoder.window_s * rate)
        self._hop = p.hop_ms * rate // 1000
        self._min_window = int(self.encoder.min_window_s * rate)
        self._lookahead = p.vad_lookahead_ms * rate // 1000
        self._streams: dict[str, _Stream] = {}
        self.identifier: Any = None
        self.threshold = float("nan")
        self.windows_embedded = 0
        self.embed_seconds = 0.0
        self.windows_lost = 0        # windows whose audio had left the ring
        self.forced_events = 0

    # ------------------------------------------------------------------ hooks
    def on_start(self) -> None:
        """Read the enrollment database, build the identifier, warm the encoder up."""
        from kikimimi.models.speaker.identify import Identifier

        gallery, stored = self._enrolled()
        p = self.p
        self.threshold = float(p.threshold if p.threshold is not None else
                               stored if stored is not None else self.encoder.default_threshold)
        self.identifier = Identifier(gallery, self.threshold, cluster_unknown=p.cluster_unknown,
                                     new_threshold=p.cluster_threshold, min_windows=p.min_windows)
        if len(gallery):
            log.info("speaker %s: %d enrolled speakers, threshold %.3f", self.name, len(gallery), self.threshold)
        from kikimimi.models.speaker.windows import embed_windows

        embed_windows(self.encoder, [np.zeros(self._window, np.float32)])   # the mel front end and the network

    def _enrolled(self) -> tuple[Any, float | None]:
        from kikimimi.models.speaker.identify import Gallery

        if self.p.db == "none":
            return Gallery(self.encoder.dim), None
        from pathlib import Path

        from kikimimi.models.speaker.db import SpeakerDB, default_db_path

        path = Path(self.p.db).expanduser() if self.p.db else default_db_path()
        if not path.exists():
            if self.p.db:
                log.warning("speaker %s: enrollment database %s does not exist; no speaker is enrolled",
                            self.name, path)
            return Gallery(self.encoder.dim), None
        db = SpeakerDB(path)
        vectors = db.vectors(self.encoder.id)
        return Gallery.from_vectors(vectors) if vectors else Gallery(self.encoder.dim), db.threshold(self.encoder.id)

    def on_message(self, port: str, msg: Message) -> None:
        """Audio goes into the stream's ring; VAD events wait for their audio; due windows are embedded."""
        if isinstance(msg, AudioChunk):
            st = self._on_audio(msg)
        elif isinstance(msg, VadEvent):
            st = self._stream(msg.header.stream_id)
            forced = st.gate.on_event(msg)
            if forced is not None:          # more than MAX_PENDING_EVENTS wait: the oldest goes now
                self.forced_events += 1
                self._apply(st, forced)
        else:
            return
        if st is not None:
            self._advance(st)

    def on_control(self, port: str, ctrl: Control) -> None:
        """END_OF_STREAM / FLUSH on ``vad`` apply the stream's held events and close its open utterance
        (at the last sample of audio that arrived); on ``audio`` they mark its audio complete."""
        if ctrl.kind not in (ControlKind.FLUSH, ControlKind.END_OF_STREAM):
            return
        for sid in control_targets(ctrl, self._streams):
            st = self._streams[sid]
            if port == "audio":
                st.ended = True
            self._advance(st, force=port == "vad")
            if port == "vad" and st.utt is not None:
                self._close(st, st.audio_end)

    def on_stop(self) -> None:
        """Apply every held event and close every open utterance."""
        for st in self._streams.values():
            self._advance(st, force=True)
            if st.utt is not None:
                self._close(st, st.audio_end)

    # ------------------------------------------------------------------ streams
    def _stream(self, sid: str) -> _Stream:
        st = self._streams.get(sid)
        if st is None:
            st = self._streams[sid] = _Stream(sid, VadGate(self._lookahead, MAX_PENDING_EVENTS))
        return st

    def _on_audio(self, msg: AudioChunk) -> _Stream | None:
        if not self.accepts("audio", msg, (self.encoder.sample_rate,)):
            return None
        st = self._stream(msg.header.stream_id)
        x = mono_float32(msg.samples)
        idx = msg.header.sample_index
        if st.ring is None or idx < st.ring.write_index - st.ring.capacity // 2 \
                or idx > st.ring.write_index + st.ring.capacity // 2:
            st.ring = AudioRing(self.p.ring_s * self.encoder.sample_rate, 1, np.float32, start_index=idx)
        ring = st.ring
        if idx > ring.write_index:                       # dropped audio upstream: silence in its place
            ring.write(np.zeros((idx - ring.write_index, 1), np.float32))
        skip = ring.write_index - idx
        if skip < len(x):
            ring.write(x[skip:].reshape(-1, 1))
        return st

    def _advance(self, st: _Stream, force: bool = False) -> None:
        """Embed the windows that are due and apply the events whose audio is in, in order (all of them,
        and windows up to the audio's end, with ``force`` or once the audio ended)."""
        force = force or st.ended
        while True:
            self._windows(st, st.gate.data_limit(st.audio_end, force))
            ev = st.gate.pop_due(st.audio_end, force)
            if ev is None:
                return
            self._apply(st, ev)

    def _apply(self, st: _Stream, ev: VadEvent) -> None:
        if ev.kind is SpeechEventKind.SPEECH_START:
            if st.utt is not None:
                self._close(st, ev.start_sample)
            from kikimimi.models.speaker.identify import ChangeDetector

            st.n_utt += 1
            st.utt = _Utt(st.n_utt, ev.start_sample, ev.start_sample, [_Part(ev.start_sample)],
                          ChangeDetector(self.threshold) if self.p.split else None)
        elif st.utt is not None:
            self._close(st, ev.end_sample)

    # ------------------------------------------------------------------ windows
    def _windows(self, st: _Stream, limit: int) -> None:
        u = st.utt
        if u is None:
            return
        spans = []
        while u.next_win + self._window <= limit:
            spans.append((u.next_win, u.next_win + self._window))
            u.next_win += self._hop
        if spans:
            self._embed(st, u, spans)

    def _embed(self, st: _Stream, u: _Utt, spans: list[tuple[int, int]]) -> None:
        import time

        from kikimimi.models.speaker.windows import embed_windows

        ring = st.ring
        ok = [(a, b) for a, b in spans if ring is not None and a >= ring.oldest_index and b <= ring.write_index]
        self.windows_lost += len(spans) - len(ok)
        if not ok or ring is None:
            return
        t0 = time.perf_counter()
        vecs = embed_windows(self.encoder, [ring.view(a, b)[:, 0] for a, b in ok])
        self.embed_seconds += time.perf_counter() - t0
        self.windows_embedded += len(ok)
        for (a, b), v in zip(ok, vecs, strict=True):
            self._window_done(st, u, a, b, v)

    def _window_done(self, st: _Stream, u: _Utt, a: int, b: int, v: np.ndarray) -> None:
        rate = self.encoder.sample_rate
        self.emit("embeddings", SpeakerEmbedding(self.header("embeddings", st.sid, b), u.uid, "window", a, b,
                                                 rate, self.encoder.id, v))
        if len(u.all_vecs) < MAX_WINDOWS:
            u.all_vecs.append(v)
        part = u.parts[-1]
        change = u.detector.push(v, a, b) if u.detector is not None else None
        if change is not None and change > part.start:
            old = part       # windows that began at or after the change belong to the new part
            moved = [(s, vec) for s, vec in zip(old.spans, old.vecs, strict=True) if s[0] >= change]
            kept = [(s, vec) for s, vec in zip(old.spans, old.vecs, strict=True) if s[0] < change]
            old.spans, old.vecs = [s for s, _ in kept], [vec for _, vec in kept]
            self._final_part(st, u, old, change)
            part = _Part(change, [vec for _, vec in moved], [s for s, _ in moved])
            u.parts.append(part)
        if len(part.vecs) < MAX_WINDOWS:
            part.vecs.append(v)
            part.spans.append((a, b))
        if self.p.provisional:
            ident = self._peek(_mean(part.vecs), len(part.vecs))
            if ident.speaker != part.label:
                part.label = ident.speaker
                self._turn(st, u, len(u.parts) - 1, ident, False, part.start, b)

    # ------------------------------------------------------------------ decisions
    def _peek(self, vec: np.ndarray, n: int) -> Any:
        """The provisional speaker of a part so far, leaving the clusters as they are: an enrolled name at
        the threshold, else the voice cluster it would join, else ``unknown`` (a new voice gets its id at
        the final turn)."""
        from kikimimi.models.speaker.identify import Identity

        ident = self.identifier
        if n < ident.min_windows:
            return Identity(UNKNOWN_SPEAKER, -1.0, False)
        name, score = ident.gallery.best(vec)
        if name is not None and score >= ident.threshold:
            return Identity(name, score, True)
        if ident.cluster_unknown:
            voice, sim = ident.clusterer.peek(vec)
            if voice is not None and sim >= ident.clusterer.new_threshold:
                return Identity(voice, sim, False)
        return Identity(UNKNOWN_SPEAKER, score, False)

    def _close(self, st: _Stream, end: int) -> None:
        """The utterance ends at ``end``: embed its closing window, send its last part's final turn and
        its utterance embedding."""
        from kikimimi.models.speaker.windows import window_spans

        u = st.utt
        if u is None:
            return
        st.utt = None
        end = max(end, u.start)
        done = {s for p in u.parts for s in p.spans}
        closing = [s for s in window_spans(u.start, end, self._window, self._hop, self._min_window)
                   if s not in done and s[1] > max((b for p in u.parts for _, b in p.spans), default=u.start)]
        if closing:
            st.utt = u          # windows of a closing utterance still go through _window_done
            self._embed(st, u, closing)
            st.utt = None
        self._final_part(st, u, u.parts[-1], end)
        if u.all_vecs:
            self.emit("embeddings", SpeakerEmbedding(self.header("embeddings", st.sid, end), u.uid, "utterance",
                                                     u.start, end, self.encoder.sample_rate, self.encoder.id,
                                                     _mean(u.all_vecs)))

    def _final_part(self, st: _Stream, u: _Utt, part: _Part, end: int) -> None:
        ident = self.identifier.identify(_mean(part.vecs) if part.vecs else None, len(part.vecs))
        self._turn(st, u, u.parts.index(part), ident, True, part.start, end)

    def _turn(self, st: _Stream, u: _Utt, index: int, ident: Any, final: bool, a: int, b: int) -> None:
        speaker = ident.speaker or UNKNOWN_SPEAKER
        self.emit("turns", SpeakerTurn(self.header("turns", st.sid, b), u.uid, index, speaker, float(ident.score),
                                       bool(ident.enrolled), final, a, max(a, b), self.encoder.sample_rate))


def _mean(vecs: list[np.ndarray]) -> np.ndarray:
    m = np.mean(np.stack(vecs), axis=0)
    return (m / max(float(np.linalg.norm(m)), 1e-12)).astype(np.float32)
