"""A pocketsphinx backend for robot commands: a JSGF grammar, true streaming partials, out-of-grammar rejection.

Unlike Whisper, pocketsphinx computes its own MFCCs and searches as audio arrives, so this backend eats
**raw audio**: :attr:`SphinxRecognizer.feature_kind` is :data:`AUDIO_KIND` with ``hop = 1`` and
``n_bins = 1``: the "frames" the node passes to :meth:`SphinxStream.accept` are 16 kHz samples, shape
(n,) or (n, channels), int16 or float32 in [-1, 1] (channels are averaged, float is scaled to int16),
and frame index = sample index. An asr node feeds such a recognizer from AudioChunks instead of Features.

How an utterance goes (one pocketsphinx ``Decoder`` per stream; the search state lives in it):

* ``accept`` keeps audio: while no utterance is open only the last ``preroll_s`` seconds (a VAD's
  SPEECH_START arrives after the speech began; when a file plays as fast as possible the audio can
  run several seconds ahead of the VAD's events); while one is open, everything not yet fed.
* ``begin(start_sample)`` opens an utterance ``pad_s`` (0.1 s) before that sample (or at the oldest
  sample still kept), and the final decodes up to ``pad_s`` past the endpoint as far as that audio has
  arrived (live, the VAD decides an end only after its hangover, so it has): the VAD's segments are
  tight (30 ms pads) and clip soft onsets like the /s/ of "stop", which the grammar then mistakes.
* ``step`` returns a request holding the audio not yet fed: a partial one once ``interval_frames``
  samples have arrived, the final one when the endpoint's samples are all in. :meth:`SphinxRecognizer.decode`
  feeds each request's audio to its stream's decoder (``process_raw``: the search advances as audio
  arrives, so partials cost only the new audio) and reads the hypothesis; the final request ends the
  utterance (``end_utt``) and reads the word segments. The utterance's audio is kept (up to
  ``MAX_UTTERANCE_S``) and the final decodes it again, exactly ``[start, end)``, from the decoder's
  state (cepstral mean) at the utterance's start: the final does not depend on how the partials
  went, or on audio the partials were fed past the endpoint when it ran ahead of the VAD.
* Partials are all ``unstable``: a grammar search may replace its best path completely ("look" ->
  "turn left"), so nothing is committed before the final. A partial is published when its text is
  non-empty and differs from the last one. The final has the whole text committed and
  one :class:`~kikimimi.engine.messages.Word` per grammar word (span on the stream's sample clock;
  ``confidence`` is pocketsphinx's segment probability, a rough score, not a calibrated posterior).
* Rejection: a grammar search always finds *some* command, so the final is checked. The utterance's
  10 ms frames within ``speech_db`` dB of its loudest frame count as speech; if the grammar's words
  cover less than ``min_coverage`` of them (out-of-grammar speech is mostly absorbed by silence and
  the grammar word lands on a fragment of it), or the search ended outside the grammar's final state,
  the final has empty text: published (to retract the partials) if partials were, else nothing is.

pocketsphinx's lattice best-path rescoring (``bestpath``) returns paths that end outside the grammar
on short commands in pocketsphinx 5.1, so it is off: the final is the Viterbi path of the FSG search.
Dither (Gaussian, 3 int16 steps, about -80 dBFS) keeps digital silence (exact zeros) from derailing
the search and the cepstral mean of a decoder's first utterance; it is drawn from a generator seeded
with the utterance's start sample, so a final is the same on every run.
The acoustic model and dictionary are the English ones bundled in the pocketsphinx package
(``pocketsphinx.get_model_path()``); each stream's decoder loads a dictionary trimmed to the
grammar's words (a few MB per stream instead of ~27 MB). English only.
"""

from __future__ import annotations

import logging
import re
import tempfile
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.engine.errors import MissingDependency, ParamError
from kikimimi.engine.msgs.speech import Word
from kikimimi.engine.params import Param, check_fields
from kikimimi.models.asr.grammar import (
    GRAMMAR_DIR,
    load_grammar,
    resolve_grammar,
    trimmed_dictionary,
)
from kikimimi.models.asr.recognizer import AUTO, SAMPLE_RATE, DecodeRequest, Recognizer, RecognizerStream, Revision

log = logging.getLogger("kikimimi.asr.sphinx")

AUDIO_KIND = "audio"
"""``Recognizer.feature_kind`` of a backend that takes raw 16 kHz audio (frames = samples, hop 1)."""
INSTALL = "pip install pocketsphinx"
FRAME = 160                      # pocketsphinx frame shift at 16 kHz (100 frames/s)
DITHER_LSB = 3.0                 # dither (int16 steps): about -80 dBFS, a quiet room's floor
MAX_UTTERANCE_S = 60             # an utterance's audio is kept (for an exact final) up to this long
_NOT_WORDS = ("(NULL)",)
_ALT_PRON = re.compile(r"\(\d+\)$")


def _dither(audio: np.ndarray, rng: np.random.Generator | int) -> np.ndarray:
    """``audio`` plus Gaussian noise of ``DITHER_LSB`` (from ``rng``, or a generator seeded with it)."""
    gen = np.random.default_rng(rng) if isinstance(rng, int) else rng
    noise = np.rint(gen.standard_normal(audio.size) * DITHER_LSB)
    return np.clip(audio.astype(np.float64) + noise, -32768, 32767).astype(np.int16)


def _pocketsphinx() -> Any:
    try:
        import pocketsphinx
    except ImportError as exc:
        raise MissingDependency("pocketsphinx (the sphinx ASR backend)", INSTALL) from exc
    return pocketsphinx


@dataclass(eq=False)
class SphinxRequest(DecodeRequest):
    """Audio (int16 mono) to feed to the stream's decoder, ending at ``end_sample`` on the stream's clock."""

    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    end_sample: int = 0
    restart: bool = False      # decode ``audio`` as the whole utterance, from the state it began in


@dataclass(frozen=True, slots=True)
class SphinxOutput:
    """What one request's decode gave: the hypothesis text and, for a final, the word segments."""

    text: str
    words: tuple[tuple[str, int, int, float], ...] = ()   # (word, first frame, last frame, prob)
    in_grammar: bool = True   # the text is a sentence of the grammar (pocketsphinx falls back to the best
    #                           partial path when no path reached the grammar's final state)


class SphinxStream(RecognizerStream):
    """One stream: its audio buffer, its own pocketsphinx decoder and the open utterance."""

    def __init__(self, rec: SphinxRecognizer) -> None:
        self.rec = rec
        self.decoder = rec.make_decoder()
        self._chunks: deque[tuple[int, np.ndarray]] = deque()   # (first sample, int16 mono) not yet fed
        self._end = 0                       # one past the newest accepted sample
        self._seen_any = False
        self.utterance_open = False
        self._utt_start = 0
        self._fed = 0                       # next sample of the utterance to feed
        self._utt: list[np.ndarray] = []    # the utterance's audio fed so far (from _utt_start), up to MAX_UTTERANCE_S
        self._utt_len = 0
        self.decoding = False               # the decoder is inside an utterance (start_utt without end_utt)
        self.cmn: str | None = None         # the decoder's cepstral mean when the utterance began
        self._rng = np.random.default_rng(0)
        self._endpoint: int | None = None
        self._last: Revision | None = None
        self._published = False             # a revision of the open utterance was published

    @property
    def frames_end(self) -> int:
        return self._end

    # ------------------------------------------------------------------ audio in
    def accept(self, frames: np.ndarray, start_frame: int, sample_index: int) -> None:
        """Take samples ``[sample_index, sample_index + n)``; overlap with earlier audio is skipped, gaps are zeros."""
        x = np.asarray(frames)
        if x.ndim == 2:
            x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
        if x.ndim != 1:
            raise ValueError(f"sphinx audio must have shape (n,) or (n, channels), got {np.shape(frames)}")
        if x.dtype != np.int16:
            x = np.clip(np.rint(x.astype(np.float64) * 32767.0), -32768, 32767).astype(np.int16)
        start = int(sample_index)
        if not self._seen_any:
            self._end, self._seen_any = start, True
        if start < self._end:                       # overlap: keep only the new part
            x = x[self._end - start:]
            start = self._end
        if start > self._end:                       # gap: zeros keep the clock
            self._chunks.append((self._end, np.zeros(start - self._end, np.int16)))
        if x.size:
            self._chunks.append((start, x))
        self._end = start + x.size
        if not self.utterance_open:
            self._trim(self._end - int(self.rec.preroll_s * SAMPLE_RATE))

    def _trim(self, keep_from: int) -> None:
        while self._chunks and self._chunks[0][0] + self._chunks[0][1].size <= keep_from:
            self._chunks.popleft()

    def _take(self, upto: int) -> np.ndarray:
        """Audio ``[self._fed, upto)`` (what is kept of it), removed from the buffer and kept for the utterance."""
        self._trim(self._fed)
        parts = []
        while self._chunks and self._chunks[0][0] < upto:
            s, x = self._chunks.popleft()
            lo, hi = max(self._fed - s, 0), min(upto - s, x.size)
            if lo < hi:
                parts.append(x[lo:hi])
            if hi < x.size:
                self._chunks.appendleft((s + hi, x[hi:]))
                break
        self._fed = max(self._fed, upto)
        audio = np.concatenate(parts) if parts else np.zeros(0, np.int16)
        if audio.size and self._utt_len < MAX_UTTERANCE_S * SAMPLE_RATE:
            self._utt.append(audio)
            self._utt_len += audio.size
        return audio

    def _utterance_audio(self, upto: int) -> np.ndarray:
        """The kept audio of the utterance, ``[_utt_start, upto)`` (shorter if it was not all kept)."""
        audio = np.concatenate(self._utt) if self._utt else np.zeros(0, np.int16)
        return audio[: max(upto - self._utt_start, 0)]

    # ------------------------------------------------------------------ utterance control
    def begin(self, start_sample: int) -> None:
        """Open an utterance ``pad_s`` before ``start_sample`` (or at the oldest sample still kept, if later)."""
        oldest = self._chunks[0][0] if self._chunks else self._end
        start = max(int(start_sample) - self.rec.pad, 0)
        self._utt_start = max(start, oldest) if self._seen_any else start
        self._fed = self._utt_start
        self.utterance_open = True
        self._end_decoder()
        self._endpoint = None
        self._utt, self._utt_len = [], 0
        self._last = None
        self._published = False
        self.cmn = None
        self._rng = np.random.default_rng(self._utt_start)

    def endpoint(self, end_sample: int) -> None:
        """Close the utterance at ``end_sample``; the final request comes once that audio is in."""
        if self.utterance_open:
            self._endpoint = max(int(end_sample), self._utt_start)

    def step(self, interval_frames: int, partial: bool = True) -> SphinxRequest | None:
        """Final request when the endpoint's audio is in; else a partial one after ``interval_frames`` new samples."""
        if not self.utterance_open:
            return None
        if self._endpoint is not None and self._end >= self._endpoint:
            end = min(self._end, self._endpoint + self.rec.pad)    # the trailing pad, as far as it has arrived
            if self._fed < end:
                self._take(end)
            if self._utt_len >= end - self._utt_start:
                # Decode exactly [start, end) again from the utterance's starting state: the final is
                # the same however the partials went (and never hears audio fed past the endpoint).
                audio = _dither(self._utterance_audio(end), self._utt_start)
                return SphinxRequest(self, True, audio, end, restart=True)
            return SphinxRequest(self, True, np.zeros(0, np.int16), end)       # too long to keep: as fed
        if partial and self._end - self._fed >= max(int(interval_frames), 1):
            upto = self._end if self._endpoint is None else min(self._end, self._endpoint)
            return SphinxRequest(self, False, _dither(self._take(upto), self._rng), upto)
        return None

    def speech_coverage(self, words: Sequence[tuple[str, int, int, float]], end_sample: int) -> float:
        """Share of the utterance's speech frames (within ``speech_db`` of its loudest) that ``words`` cover."""
        x = self._utterance_audio(end_sample)
        n = x.size // FRAME
        if n == 0:
            return 0.0
        fr = x[: n * FRAME].astype(np.float32).reshape(n, FRAME)
        e = 10.0 * np.log10((fr * fr).mean(axis=1) + 1.0)
        speech = e >= e.max() - self.rec.speech_db
        covered = np.zeros(n, bool)
        for _, first, last, _ in words:
            covered[max(first, 0):last + 1] = True
        return float((speech & covered).sum() / max(int(speech.sum()), 1))

    # ------------------------------------------------------------------ results
    def apply(self, request: DecodeRequest, output: Any) -> Revision | None:
        """Turn a decode's output into the revision to publish (None: nothing new to show)."""
        if not isinstance(request, SphinxRequest) or not isinstance(output, SphinxOutput):
            raise TypeError(f"sphinx stream got {type(request).__name__} / {type(output).__name__}")
        if not request.final:
            if not output.text or (self._last is not None and self._last.unstable == output.text):
                return None
            self._last = Revision("", output.text, False, "en", self._utt_start, request.end_sample)
            self._published = True
            return self._last
        words = output.words
        coverage = self.speech_coverage(words, request.end_sample)
        accepted = output.in_grammar and bool(words) and coverage >= self.rec.min_coverage
        if not accepted and words:
            log.info("rejected %r: coverage %.2f (min %.2f), in grammar: %s",
                     output.text, coverage, self.rec.min_coverage, output.in_grammar)
        out_words: tuple[Word, ...] = ()
        if accepted:
            out_words = tuple(Word(w, self._utt_start + first * FRAME,
                                   min(self._utt_start + (last + 1) * FRAME, request.end_sample),
                                   float(min(max(p, 0.0), 1.0)))
                              for w, first, last, p in words)
        text = " ".join(w.text for w in out_words)
        self.utterance_open = False
        self._endpoint = None
        self._utt, self._utt_len = [], 0
        if not text and not self._published:
            return None
        self._last = Revision(text, "", True, "en", self._utt_start, request.end_sample, out_words)
        return self._last

    def result(self) -> Revision | None:
        return self._last

    def _end_decoder(self) -> None:
        if self.decoding:
            self.decoder.end_utt()
            self.decoding = False

    def reset(self) -> None:
        """End any decoder utterance and forget all audio; the stream's clock starts over."""
        self._end_decoder()
        self._chunks.clear()
        self._end, self._seen_any = 0, False
        self.utterance_open, self._endpoint = False, None
        self._fed = self._utt_start = 0
        self._utt, self._utt_len, self._last = [], 0, None


PARAMS: tuple[Param, ...] = (
    Param("grammar", str, "", "JSGF grammar: a file path or a bundled name (grid, robot); empty: the asr node's "
          "model when that is a .jsgf path or a bundled name, else the bundled robot commands"),
    Param("min_coverage", float, 0.6, "share of the utterance's speech frames the grammar's words must cover "
          "(else the final is rejected: empty text)", min=0.0, max=1.0),
    Param("speech_db", float, 30.0, "frames within this many dB of the utterance's loudest count as speech "
          "(> 0)"),
    Param("preroll_s", float, 30.0, "audio kept before an utterance opens (s)", min=0.0),
    Param("pad_s", float, 0.1, "an utterance starts this much before the VAD's start and its final decodes "
          "this much past its end (s)", min=0.0, max=1.0),
)
"""The sphinx backend's parameters (the asr node takes them as ``sphinx.NAME``)."""


@dataclass(frozen=True, slots=True)
class SphinxConfig:
    """What :class:`SphinxRecognizer` loads and how it rejects: ``model`` (the asr node's model: names the
    grammar when ``grammar`` is empty and it is a ``.jsgf`` path or a bundled grammar name) and the fields
    declared in :data:`PARAMS`. With neither naming a grammar (``model`` a Whisper name such as the default
    graph's ``base``), ParamError says how to name one: the grammar would reject all free speech, so every
    transcript would be empty. An empty ``model`` and ``grammar`` mean the bundled robot commands."""

    model: str = ""
    grammar: str = ""
    min_coverage: float = 0.6
    speech_db: float = 30.0
    preroll_s: float = 30.0
    pad_s: float = 0.1

    def __post_init__(self) -> None:
        check_fields(self, PARAMS, "sphinx")
        if not self.speech_db > 0:
            raise ParamError(f"sphinx speech_db={self.speech_db!r} is not allowed; allowed: a positive number of dB")
        if not self.grammar and self.model and self.grammar_source() is None:
            bundled = ", ".join(sorted(p.stem for p in GRAMMAR_DIR.glob("*.jsgf")))
            raise ParamError(f"the sphinx backend recognizes the commands of a grammar, and model={self.model!r} is "
                             f"not one; allowed: a bundled grammar ({bundled}) or a .jsgf file, as the model "
                             f"(--set asr.model=robot; transcribe --model robot) or as sphinx.grammar")

    def grammar_source(self) -> str | None:
        """The grammar to load (a path or a bundled name), or None for the bundled default."""
        if self.grammar:
            return self.grammar
        model = str(self.model or "")
        if model.endswith(".jsgf") or (GRAMMAR_DIR / f"{model}.jsgf").is_file():
            return model
        return None


class SphinxRecognizer(Recognizer):
    """pocketsphinx with a JSGF grammar; one decoder per stream (see the module docstring)."""

    name = "sphinx"
    feature_kind = AUDIO_KIND
    n_bins = 1
    hop = 1
    sample_rate = SAMPLE_RATE
    languages = ("en",)
    params = PARAMS
    config_type = SphinxConfig

    def __init__(self, config: SphinxConfig | None = None) -> None:
        cfg = config if config is not None else SphinxConfig()
        self.config = cfg
        self.ps = _pocketsphinx()
        self.ps.set_loglevel("FATAL")
        self.min_coverage, self.speech_db, self.preroll_s = cfg.min_coverage, cfg.speech_db, cfg.preroll_s
        self.pad = round(cfg.pad_s * SAMPLE_RATE)
        self.grammar = resolve_grammar(cfg.grammar_source())
        self.rule, self.fsg, self.words = load_grammar(self.ps, self.grammar)
        self._tmp = tempfile.TemporaryDirectory(prefix="kkm-sphinx-")
        self._finalizer = weakref.finalize(self, self._tmp.cleanup)
        self.dictionary = Path(self._tmp.name) / "grammar.dict"
        trimmed_dictionary(Path(self.ps.get_model_path("en-us/cmudict-en-us.dict")), self.words, self.dictionary)
        self.make_decoder()   # fail here, not on the first stream, if the model cannot load

    def make_decoder(self) -> Any:
        """A fresh pocketsphinx Decoder with the bundled English model, the trimmed dictionary and the grammar."""
        try:
            return self.ps.Decoder(hmm=self.ps.get_model_path("en-us/en-us"), dict=str(self.dictionary),
                                   jsgf=str(self.grammar), toprule=self.rule, bestpath=False, dither=False,
                                   loglevel="FATAL")
        except RuntimeError as exc:
            raise ParamError(f"pocketsphinx could not load grammar {str(self.grammar)!r}: {exc}") from None

    def new_stream(self, language: str = AUTO) -> SphinxStream:
        if language not in (AUTO, "en"):
            raise ParamError(f"the sphinx backend recognizes English only: language={language!r} is not allowed; "
                             "allowed: 'auto', 'en'")
        return SphinxStream(self)

    def decode(self, requests: Sequence[DecodeRequest]) -> list[SphinxOutput]:
        """Feed each request's audio to its stream's decoder; finals end the utterance and read the words."""
        outs = []
        for req in requests:
            if not isinstance(req, SphinxRequest):
                raise TypeError(f"sphinx decode got a {type(req).__name__}, not a SphinxRequest")
            st = req.stream
            if not isinstance(st, SphinxStream):
                raise TypeError(f"sphinx decode got a request of a {type(st).__name__}")
            d = st.decoder
            if req.restart:
                st._end_decoder()
                if st.cmn is not None:
                    d.set_cmn(st.cmn)
            if not st.decoding:
                if st.cmn is None:
                    st.cmn = d.get_cmn()
                d.start_utt()
                st.decoding = True
            if req.audio.size:
                d.process_raw(req.audio.tobytes(), False, False)
            if not req.final:
                h = d.hyp()
                outs.append(SphinxOutput(h.hypstr if h is not None else ""))
                continue
            d.end_utt()
            st.decoding = False
            h = d.hyp()
            segs = tuple((_ALT_PRON.sub("", s.word), int(s.start_frame), int(s.end_frame), float(s.prob))
                         for s in (d.seg() or ()) if s.word not in _NOT_WORDS and not s.word.startswith(("<", "[")))
            text = h.hypstr if h is not None else ""
            outs.append(SphinxOutput(text, segs, in_grammar=bool(text) and bool(self.fsg.accept(text))))
        return outs

    def warmup(self) -> None:
        """Decode 0.3 s of silence once."""
        s = self.new_stream()
        s.accept(np.zeros(4800, np.int16), 0, 0)
        s.begin(0)
        s.endpoint(4800)
        req = s.step(1)
        if req is not None:
            s.apply(req, self.decode([req])[0])

    def close(self) -> None:
        self._finalizer()

