"""Streaming speaker labels: windows inside utterances, speaker changes, provisional and final turns.

The shape is the usual one of a streaming model: :class:`SpeakerModel` (shared: the encoder, whose
weights are loaded once per process through :func:`~kikimimi.models.speaker.encoder.shared_encoder`,
and one :class:`~kikimimi.models.speaker.identify.Identifier`, so the ``voice_N`` clusters are common
to every stream of the model) -> :meth:`SpeakerModel.new_stream` -> :class:`SpeakerStream`.

Per stream, :meth:`SpeakerStream.accept` puts mono float32 audio (at its stream sample index) into a
ring of ``ring_s`` seconds; a jump of more than half the ring either way starts a new ring there,
a gap is filled with silence and audio already seen is skipped. :meth:`~SpeakerStream.begin` opens
an utterance (closing the open one there first), :meth:`~SpeakerStream.end` closes it. Windows of
the encoder's length (GE2E: 1.6 s) every ``hop_ms`` inside the open utterance are embedded when a
step reaches them: :meth:`SpeakerModel.step` takes the due windows of many streams (each up to its
own limit, by default the end of its audio) and embeds them all in one ``embed`` call of the shared
encoder; :meth:`SpeakerStream.step` does it for one stream. The window arithmetic is that of
:mod:`kikimimi.models.speaker.windows`, so a window's embedding equals the offline embedding of the
same span. Windows whose audio has left the ring are skipped (counted in ``windows_lost``).

With ``split`` on, a :class:`~kikimimi.models.speaker.identify.ChangeDetector` watches the windows; a
change ends the current part of the utterance (its final turn comes out at once; windows that began
at or after the change move to the next part) and starts the next. With ``provisional`` on, the
current part's label so far comes out (``final`` false) whenever it changes: an enrolled name at the
threshold, else the voice cluster it would join, else ``unknown`` (the clusters are left as they
are; a new voice gets its id at the final turn). :meth:`~SpeakerStream.end` embeds the utterance's
closing window, then gives the last part's final turn and the utterance embedding (the normalised
mean of its windows, the first ``max_windows`` of them).

Identification: the best enrolled speaker at or above the threshold (``threshold``, else the one
calibrated for this encoder in the database, else the encoder's default), else a ``voice_N`` cluster
(``cluster_unknown``, joined at ``cluster_threshold``), else ``unknown``; parts with fewer than
``min_windows`` windows are ``unknown``. Settings: :class:`~kikimimi.models.speaker.config.SpeakerConfig`;
results (:mod:`~kikimimi.models.speaker.results`): window and utterance embeddings and turns, in the
order they happen.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from kikimimi.engine.errors import ParamError
from kikimimi.engine.ring import AudioRing
from kikimimi.models.speaker.config import SpeakerConfig
from kikimimi.models.speaker.encoder import SpeakerEncoder, shared_encoder
from kikimimi.models.speaker.identify import UNKNOWN, ChangeDetector, Gallery, Identifier, Identity
from kikimimi.models.speaker.results import SpeakerResult, Turn, UtteranceEmbedding, WindowEmbedding
from kikimimi.models.speaker.windows import embed_windows, window_spans


@dataclass(eq=False)
class _Part:
    start: int
    vecs: list[np.ndarray] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    label: str = ""                 # last provisional label given


@dataclass(eq=False)
class _Utt:
    uid: int
    start: int
    next_win: int
    parts: list[_Part]
    detector: ChangeDetector | None
    all_vecs: list[np.ndarray] = field(default_factory=list)


def _mean(vecs: list[np.ndarray]) -> np.ndarray:
    m = np.mean(np.stack(vecs), axis=0)
    return (m / max(float(np.linalg.norm(m)), 1e-12)).astype(np.float32)


class SpeakerModel:
    """The shared part: encoder, identifier (voice clusters of the session) and counters; see the module.

    ``gallery``: the enrolled speakers (None: nobody); ``stored_threshold``: the threshold calibrated for
    the encoder (used when ``config.threshold`` is None); ``encoder``: an encoder already loaded (else
    the one ``config`` names, through the process-wide cache)."""

    def __init__(self, config: SpeakerConfig, gallery: Gallery | None = None, stored_threshold: float | None = None,
                 encoder: SpeakerEncoder | None = None) -> None:
        self.config = config
        self.encoder = encoder if encoder is not None else shared_encoder(config.encoder, config.device,
                                                                          config.threads)
        rate = self.encoder.sample_rate
        self.window = int(self.encoder.window_s * rate)
        self.hop = config.hop_ms * rate // 1000
        self.min_window = int(self.encoder.min_window_s * rate)
        if self.hop <= 0:
            raise ParamError(f"speaker hop_ms={config.hop_ms} is less than one sample at {rate} Hz; allowed: "
                             f">= {-(-1000 // rate)}")
        self.threshold = float(config.threshold if config.threshold is not None else
                               stored_threshold if stored_threshold is not None else self.encoder.default_threshold)
        self.identifier = Identifier(gallery if gallery is not None else Gallery(self.encoder.dim), self.threshold,
                                     cluster_unknown=config.cluster_unknown,
                                     new_threshold=config.cluster_threshold, min_windows=config.min_windows)
        self.windows_embedded = 0
        self.embed_seconds = 0.0
        self.windows_lost = 0        # windows whose audio had left the ring

    @property
    def sample_rate(self) -> int:
        return self.encoder.sample_rate

    def warmup(self) -> None:
        """Embed one silent window (the mel front end and the network), so the first real one is not slow."""
        embed_windows(self.encoder, [np.zeros(self.window, np.float32)])

    def new_stream(self) -> SpeakerStream:
        """A new stream: its own ring and utterances, this model's encoder and voice clusters."""
        return SpeakerStream(self)

    def step(self, streams: Sequence[SpeakerStream], limits: Sequence[int | None] | None = None
             ) -> list[list[SpeakerResult]]:
        """Embed the due windows of every stream in ``streams`` (each up to its limit: a sample index, or
        None for the end of its audio) in one ``embed`` call; returns each stream's results, in order."""
        lims = [None] * len(streams) if limits is None else list(limits)
        if len(lims) != len(streams) or len({id(s) for s in streams}) != len(streams):
            raise ParamError(f"step over {len(streams)} streams with {len(lims)} limits; allowed: distinct "
                             "streams of this model, one limit each")
        jobs = []
        for st, lim in zip(streams, lims, strict=True):
            if st.model is not self:
                raise ParamError("step over a stream of another SpeakerModel; allowed: streams of this model")
            u = st._utt
            if u is not None:
                jobs.append((st, u, st._due(u, st.audio_end if lim is None else lim)))
        done = self._embed(jobs)
        return [done.get(id(st), []) for st in streams]

    def _embed(self, jobs: list[tuple[SpeakerStream, _Utt, list[tuple[int, int]]]]) -> dict[int, list[SpeakerResult]]:
        """Embed windows ``spans`` of utterance ``u`` of stream ``st`` for every job, in one call."""
        todo = []
        for st, u, spans in jobs:
            ring = st.ring
            ok = [(a, b) for a, b in spans if ring is not None and a >= ring.oldest_index and b <= ring.write_index]
            self.windows_lost += len(spans) - len(ok)
            if ok and ring is not None:
                todo.append((st, u, ok, [ring.view(a, b)[:, 0] for a, b in ok]))
        if not todo:
            return {}
        t0 = time.perf_counter()
        vecs = embed_windows(self.encoder, [w for *_, wins in todo for w in wins])
        self.embed_seconds += time.perf_counter() - t0
        self.windows_embedded += len(vecs)
        out: dict[int, list[SpeakerResult]] = {}
        i = 0
        for st, u, ok, _ in todo:
            res = out.setdefault(id(st), [])
            for a, b in ok:
                res += st._window_done(u, a, b, vecs[i])
                i += 1
        return out

    def peek(self, vec: np.ndarray, n: int) -> Identity:
        """The provisional speaker of a part so far (``n`` windows, mean ``vec``), leaving the clusters as
        they are: an enrolled name at the threshold, else the voice cluster it would join, else
        ``unknown`` (a new voice gets its id at the final turn)."""
        ident = self.identifier
        if n < ident.min_windows:
            return Identity(UNKNOWN, -1.0, False)
        name, score = ident.gallery.best(vec)
        if name is not None and score >= ident.threshold:
            return Identity(name, score, True)
        if ident.cluster_unknown:
            voice, sim = ident.clusterer.peek(vec)
            if voice is not None and sim >= ident.clusterer.new_threshold:
                return Identity(voice, sim, False)
        return Identity(UNKNOWN, score, False)


class SpeakerStream:
    """One stream's ring and open utterance; see the module docstring."""

    def __init__(self, model: SpeakerModel) -> None:
        self.model = model
        self.ring: AudioRing | None = None
        self.utterances = 0              # utterances begun so far (the next one's id)
        self._utt: _Utt | None = None

    @property
    def audio_end(self) -> int:
        """The sample index after the last audio accepted (0 before any)."""
        return 0 if self.ring is None else self.ring.write_index

    @property
    def utterance_open(self) -> bool:
        return self._utt is not None

    def accept(self, samples: np.ndarray, sample_index: int) -> None:
        """Mono float32 ``samples`` starting at stream sample ``sample_index`` go into the ring."""
        x = np.asarray(samples, np.float32)
        if x.ndim == 2 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 1:
            raise ParamError(f"speaker audio of shape {np.shape(samples)} is not allowed; allowed: mono, (n,) or "
                             "(n, 1)")
        ring = self.ring
        if ring is None or sample_index < ring.write_index - ring.capacity // 2 \
                or sample_index > ring.write_index + ring.capacity // 2:
            ring = self.ring = AudioRing(self.model.config.ring_s * self.model.sample_rate, 1, np.float32,
                                         start_index=sample_index)
        if sample_index > ring.write_index:              # audio missing: silence in its place
            ring.write(np.zeros((sample_index - ring.write_index, 1), np.float32))
        skip = ring.write_index - sample_index
        if skip < len(x):
            ring.write(x[skip:].reshape(-1, 1))

    def step(self, limit: int | None = None) -> list[SpeakerResult]:
        """Embed this stream's due windows up to ``limit`` (None: the end of its audio)."""
        return self.model.step([self], [limit])[0]

    def begin(self, start_sample: int) -> list[SpeakerResult]:
        """An utterance begins at ``start_sample`` (the open one, if any, ends there first)."""
        out = self.end(start_sample)
        m = self.model
        self._utt = _Utt(self.utterances, start_sample, start_sample, [_Part(start_sample)],
                         ChangeDetector(m.threshold) if m.config.split else None)
        self.utterances += 1
        return out

    def end(self, end_sample: int) -> list[SpeakerResult]:
        """The open utterance (if any) ends at ``end_sample``: embed its closing window, give its last
        part's final turn and its utterance embedding."""
        u = self._utt
        if u is None:
            return []
        self._utt = None
        end = max(end_sample, u.start)
        done = {s for p in u.parts for s in p.spans}
        last = max((b for p in u.parts for _, b in p.spans), default=u.start)
        m = self.model
        closing = [s for s in window_spans(u.start, end, m.window, m.hop, m.min_window)
                   if s not in done and s[1] > last]
        out = m._embed([(self, u, closing)]).get(id(self), []) if closing else []
        out += self._final_part(u, u.parts[-1], end)
        if u.all_vecs:
            out.append(UtteranceEmbedding(u.uid, u.start, end, _mean(u.all_vecs)))
        return out

    # ------------------------------------------------------------------ inside
    def _due(self, u: _Utt, limit: int) -> list[tuple[int, int]]:
        spans = []
        window, hop = self.model.window, self.model.hop
        while u.next_win + window <= limit:
            spans.append((u.next_win, u.next_win + window))
            u.next_win += hop
        return spans

    def _window_done(self, u: _Utt, a: int, b: int, v: np.ndarray) -> list[SpeakerResult]:
        m = self.model
        cap = m.config.max_windows
        out: list[SpeakerResult] = [WindowEmbedding(u.uid, a, b, v)]
        if len(u.all_vecs) < cap:
            u.all_vecs.append(v)
        part = u.parts[-1]
        change = u.detector.push(v, a, b) if u.detector is not None else None
        if change is not None and change > part.start:
            old = part       # windows that began at or after the change belong to the new part
            moved = [(s, vec) for s, vec in zip(old.spans, old.vecs, strict=True) if s[0] >= change]
            kept = [(s, vec) for s, vec in zip(old.spans, old.vecs, strict=True) if s[0] < change]
            old.spans, old.vecs = [s for s, _ in kept], [vec for _, vec in kept]
            out += self._final_part(u, old, change)
            part = _Part(change, [vec for _, vec in moved], [s for s, _ in moved])
            u.parts.append(part)
        if len(part.vecs) < cap:
            part.vecs.append(v)
            part.spans.append((a, b))
        if m.config.provisional:
            ident = m.peek(_mean(part.vecs), len(part.vecs))
            if ident.speaker != part.label:
                part.label = ident.speaker
                out.append(_turn(u, len(u.parts) - 1, ident, False, part.start, b))
        return out

    def _final_part(self, u: _Utt, part: _Part, end: int) -> list[SpeakerResult]:
        ident = self.model.identifier.identify(_mean(part.vecs) if part.vecs else None, len(part.vecs))
        return [_turn(u, u.parts.index(part), ident, True, part.start, end)]


def _turn(u: _Utt, index: int, ident: Identity, final: bool, a: int, b: int) -> Turn:
    return Turn(u.uid, index, ident.speaker or UNKNOWN, float(ident.score), bool(ident.enrolled), final,
                a, max(a, b), b)
