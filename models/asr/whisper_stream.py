"""Per-stream state of the Whisper backend: LocalAgreement over re-decoded buffers, trimming, words.

A :class:`WhisperStream` keeps the stream's feature frames and their sample clock in a
:class:`~kikimimi.models.asr.frame_ring.FrameRing`. For the open utterance it keeps:

* ``trimmed``: committed tokens whose audio was cut from the buffer; they go in as the prompt
  (Whisper's previous-text context), after the last ``context_tokens`` of the stream's previous
  final text when that ended at most ``context_gap_s`` before (and is in the same language);
* ``committed``: committed tokens whose audio is still in the buffer; they go in as the forced
  prefix, so every new hypothesis continues the committed text;
* ``tail``: the last hypothesis' uncommitted tokens (the unstable text).

A partial decode re-decodes the buffer; :class:`~kikimimi.models.asr.policy.LocalAgreement` commits
what the newest hypothesis and one decoded at least ``agreement_gap_s`` earlier agree on (nothing
before the utterance is ``commit_after_s`` long), ending at a word boundary (a token starting with
a space) or, for unspaced languages, at a whole character. Once the buffer is longer than
``trim_after_s`` it is cut at the end of the last committed Whisper segment (its timestamp token);
past ``force_after_s``, or when the buffer reaches the model's window (an "advance" decode that
commits its complete words), after a committed word by the aligned word times
(:func:`~kikimimi.models.asr.policy.trim_point`). The final decode (after the VAD endpoint) commits
everything and aligns the words, mapped onto the stream's sample clock; if Whisper closes its text
more than ``seek_s`` before the end of the audio, the rest is decoded again from there (faster-whisper's
seek). The final is decoded again as a whole (``redecode_final``), from the utterance's start or from the
previous final's last words (:mod:`~kikimimi.models.asr.carry`); its text replaces what partials committed
(``corrections`` counts the finals that change it). An utterance longer than one window is decoded again
from the buffer's last cut. On the LibriSpeech clips of ../shared/data, with utterances ended after 500 ms
of silence, this took the live finals to 13.58 % WER (tiny.en) against 14.17 % for faster-whisper's
whole-clip decoding (bench/asr_latency.py; 19.7 % before). A final may be decoded ahead of its endpoint
(:meth:`WhisperStream.speculate`, :mod:`~kikimimi.models.asr.speculation`).

Nothing is published for non-speech: a hypothesis Whisper itself calls speechless (no-speech
probability > 0.7, or > 0.6 with average log-probability < -1; measured on white, brown and hum noise
and digital silence, where Whisper base gives 0.67..0.93, and on speech, where it stays below 0.3 once
there is more than half a second of it) is empty, unstable text that is only a known
silence phrase is not shown while nothing is committed, and a final made only of a silence phrase
with weak evidence (no-speech probability > 0.2 or average log-probability < -0.5) is dropped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from kikimimi.engine.msgs.speech import Word
from kikimimi.engine.ring import AudioRing
from kikimimi.models.asr.carry import CLOSING, final_window, plan_carry
from kikimimi.models.asr.frame_ring import FrameRing
from kikimimi.models.asr.hallucination import is_silence_phrase
from kikimimi.models.asr.language import LanguageChoice, StreamLanguage, parse_language
from kikimimi.models.asr.policy import (
    LocalAgreement,
    StreamPolicy,
    TimedWord,
    buffer_cut,
)
from kikimimi.models.asr.recognizer import AUTO, DecodeRequest, RecognizerStream, Revision
from kikimimi.models.asr.speculation import Speculation
from kikimimi.models.asr.text import is_unspaced, tidy
from kikimimi.models.asr.utterance_state import UtteranceState
from kikimimi.models.asr.whisper_config import AlignedWord, WhisperOutput, WhisperRequest

if TYPE_CHECKING:
    from kikimimi.models.asr.whisper_ct2 import WhisperCT2

log = logging.getLogger("kikimimi.asr.whisper")

FPS = 100
SILENCE_LOG10 = -10.0
START_LEAD_FRAMES = 20
START_LEAD_WITHIN = 5
"""A window that starts less than ``START_LEAD_WITHIN`` frames after the stream's first one (speech from the
first few milliseconds of a file: the VAD's span had no room for its pre-roll) asks for a lead of
``START_LEAD_FRAMES`` minus that many frames (:class:`~kikimimi.models.asr.whisper_config.WhisperRequest`):
Whisper (faster-whisper's transcribe() too) mishears speech that begins at the very start of its window
("There's iron they say" -> "But as I and they say" on a LibriSpeech clip cut at its onset; 0.2 s of silence
before it fixes that). A later start gets none: JFK (a window at 0.12 s) read "asked not to ask what" with it."""


class WhisperStream(RecognizerStream):
    """One stream's Whisper recognition state; see the module docstring."""

    def __init__(self, model: WhisperCT2, language: LanguageChoice | str = AUTO) -> None:
        self.model = model
        self.language = language if isinstance(language, LanguageChoice) else parse_language(language,
                                                                                             model.languages)
        self.policy: StreamPolicy = getattr(model, "policy", StreamPolicy())
        self.stream_language = StreamLanguage(decide_s=self.policy.commit_after_s)
        self.hop = model.hop
        self._frames = FrameRing(int(self.policy.ring_s * FPS), model.n_bins, model.hop, SILENCE_LOG10)
        self.corrections = 0     # finals whose text does not extend the committed text partials published
        self.speculation = Speculation()
        self.reset()

    # ------------------------------------------------------------------ clock
    def reset(self) -> None:
        self._frames.reset()
        self._utt: UtteranceState | None = None
        self._last: Revision | None = None
        self._history: list[int] = []     # tokens of the last utterances' final text
        self._history_end = 0
        self._history_lang = ""
        self._prev_window: tuple[int, list[int], list[AlignedWord]] | None = None  # the last final's window
        self.stream_language.current = None
        self._skip = 0
        self.speculation.clear()
        self.utterance_open = False

    @property
    def _ring(self) -> AudioRing | None:
        return self._frames.ring

    @property
    def frames_end(self) -> int:
        return self._frames.frames_end

    def sample_of(self, frame: int) -> int:
        """Sample index (stream clock) of frame ``frame``'s centre."""
        return self._frames.sample_of(frame)

    def frame_of(self, sample: int) -> int:
        """First frame whose centre is at or after ``sample`` (stream clock)."""
        return self._frames.frame_of(sample)

    def accept(self, frames: np.ndarray, start_frame: int, sample_index: int) -> None:
        self._frames.accept(frames, start_frame, sample_index)

    # ------------------------------------------------------------------ utterances
    def begin(self, start_sample: int) -> None:
        if self._utt is not None and self.utterance_open:
            log.warning("utterance at sample %d begins while the one from %d is open; dropping that one",
                        start_sample, self._utt.start_sample)
        f = self.frame_of(start_sample)
        if self._ring is not None:
            f = max(f, self._ring.oldest_index)
        lang = self.language.fixed
        if not self.model.multilingual:
            lang = "en"
        agreement: LocalAgreement[int] = LocalAgreement(self.policy.agreement_n, int(self.policy.agreement_gap_s * FPS))
        self._utt = UtteranceState(start_sample, f, f, lang, agreement, last_decoded=f)
        self.speculation.clear()
        gap_s = (start_sample - self._history_end) / self.model.sample_rate
        if self._history and 0 <= gap_s <= self.policy.context_gap_s and lang in (None, self._history_lang):
            self._utt.context = list(self._history)
            if gap_s <= self.policy.carry_gap_s:
                self._carry(self._utt)
        if self._utt.origin < 0:
            self._utt.origin = self._utt.buf_start
        self._last = None
        self.utterance_open = True

    def _carry(self, u: UtteranceState) -> None:
        """Start the final's window at the previous final's last words (:mod:`~kikimimi.models.asr.carry`).
        Partials start at the utterance (the previous text as context prompt only), unless
        ``redecode_final`` is off: then every decode starts there. The carried tokens are never published
        (``u.carry``) and their words are not reported."""
        if self._prev_window is None or self._ring is None:
            return
        lo = max(self.frame_of(u.start_sample - int(self.policy.carry_s * self.model.sample_rate)),
                 self._ring.oldest_index)
        plan = plan_carry(self._prev_window, lo, u.start_frame, u.context, self.policy.carry_words,
                          self.model.decode_text, FPS)
        if plan is None:
            return
        u.plan, u.origin = plan, plan.origin
        if not self.policy.redecode_final:     # every decode of the utterance starts there
            u.context, u.buf_start, u.committed, u.carry = plan.final_context, plan.origin, list(plan.carried), \
                len(plan.carried)

    def endpoint(self, end_sample: int) -> None:
        u = self._utt
        if u is None or not self.utterance_open:
            return
        u.end_sample = max(end_sample, u.start_sample)
        u.end_frame = max(self.frame_of(u.end_sample), u.start_frame)

    def speculate(self, end_sample: int) -> DecodeRequest | None:
        """The final request of an endpoint at ``end_sample``, if due now; the stream is left as it was."""
        u = self._utt
        if u is None or not self.utterance_open or u.pending or u.end_frame is not None:
            return None
        saved = (u.restart, u.buf_start)
        self.endpoint(end_sample)
        req = self.step(0, partial=False)
        u.end_sample = u.end_frame = None
        u.restart, u.buf_start, u.pending = saved[0], saved[1], False
        return req if req is not None and req.final else None

    def keep(self, request: DecodeRequest, output: Any) -> None:
        self.speculation.keep(request, output)

    def step(self, interval_frames: int, partial: bool = True) -> DecodeRequest | None:
        u = self._utt
        if u is None or not self.utterance_open or u.pending or self._ring is None:
            return None
        end = self.frames_end
        if u.buf_start < self._ring.oldest_index:
            log.warning("stream fell %d frames behind its frame ring; resuming at the oldest frame held",
                        self._ring.oldest_index - u.buf_start)
            u.buf_start = self._ring.oldest_index
        if u.end_frame is not None:
            target = u.end_frame
            if end < target:
                return None
            if target - u.buf_start > self.model.max_window:
                return self._request(u, u.buf_start + self.model.max_window, "advance")
            return self._request(u, target, "final")
        if end - u.buf_start > self.model.max_window:
            return self._request(u, u.buf_start + self.model.max_window, "advance")
        first = u.last_decoded == u.start_frame    # the first partial comes as soon as there is enough audio
        if partial and (first or end - u.last_decoded >= interval_frames) \
                and end - u.buf_start >= self.policy.min_partial_s * FPS:
            return self._request(u, end, "partial")
        return None

    def _request(self, u: UtteranceState, end: int, kind: str) -> WhisperRequest:
        assert self._ring is not None
        start, context, prefix, carry = u.buf_start, u.context + u.trimmed, list(u.committed), \
            max(0, u.carry - len(u.trimmed))
        u.restart = False
        if kind == "final" and self.policy.redecode_final:
            # decoded again as a whole, with the audio on both sides of every word, from where the
            # utterance's window began when that is in one window: only the carried text (the previous
            # final's) stays forced; what partials committed may be corrected
            w = final_window(u.plan, u.origin, u.start_frame, end, self._ring.oldest_index, self.model.max_window)
            if w is not None and w[1] is not None and u.plan is not None:
                start, k = w     # from a carried word on: the words before it go to the context prompt
                prefix, context = u.plan.carried[k:], u.plan.final_context + u.plan.carried[:k]
                carry, u.restart = len(prefix), True
            elif w is not None:
                start, carry, u.restart, context, prefix = w[0], 0, True, u.context, []
            else:
                prefix = prefix[:carry]
        start = min(start, end)
        frames = self._ring.view(start, end).copy()
        dur = (end - start) / FPS
        u.pending = True
        sl = self.stream_language
        after = start - self._ring.first_index
        lead = START_LEAD_FRAMES - after if after < START_LEAD_WITHIN else 0
        req = WhisperRequest(self, kind == "final", frames, context, prefix,
                             u.language or sl.current, want_words=kind != "partial" or dur >= self.policy.trim_after_s,
                             max_new_tokens=int(24 + 12 * dur), kind=kind, detect=u.language is None,
                             allowed=self.language.allowed, switch_probability=sl.switch_probability,
                             switch_s=sl.switch_s,
                             lead_frames=lead)
        req.utt = u  # type: ignore[attr-defined]
        req.carry = carry  # type: ignore[attr-defined]
        req.start_frame = start  # type: ignore[attr-defined]
        req.end_frame = end  # type: ignore[attr-defined]
        if req.final:
            req.ready = self.speculation.take(req)
        return req

    # ------------------------------------------------------------------ results
    def _boundary(self, lang: str) -> Any:
        model = self.model
        unspaced = is_unspaced(lang)

        def ok(seq: list[int], k: int) -> bool:
            if k >= len(seq):
                return False
            if unspaced:
                return not model.decode_text(seq[max(0, k - 4):k]).endswith("\ufffd")
            return model.starts_word(seq[k])
        return ok

    def apply(self, request: DecodeRequest, output: Any) -> Revision | None:
        u: UtteranceState | None = getattr(request, "utt", None)
        if u is None or u is not self._utt:
            return None
        u.pending = False
        self._skip = int(getattr(request, "carry", 0))
        out: WhisperOutput = output
        kind = request.kind  # type: ignore[attr-defined]
        start_frame: int = request.start_frame  # type: ignore[attr-defined]
        end_frame: int = request.end_frame  # type: ignore[attr-defined]
        u.last_decoded = end_frame
        dur = (end_frame - start_frame) / FPS
        if u.language is None:   # fixed for the rest of the utterance once there is enough audio
            u.language = self.stream_language.fix(out.language, (end_frame - u.start_frame) / FPS, kind != "partial")
        lang = u.language or out.language
        gen = list(out.tokens[out.n_prefix:])
        pol = self.policy
        speechless = out.no_speech_prob > pol.no_speech_strong or (
            out.no_speech_prob > pol.no_speech_threshold and out.avg_logprob < pol.logprob_threshold)
        if speechless or (gen and is_silence_phrase(self.model.decode_text(gen), lang) and (
                out.no_speech_prob > pol.phrase_no_speech or out.avg_logprob < pol.phrase_logprob)):
            gen = []
            out.words = None      # their words go too (they once reached a final's words, not its text)
        if kind == "partial":
            if end_frame - u.start_frame >= self.policy.commit_after_s * FPS:
                k = u.agreement.update(gen, self._boundary(lang), end_frame)
            else:
                k = 0
        elif kind == "advance":
            ok = self._boundary(lang)
            k = max((j for j in range(len(gen)) if ok(gen, j)), default=0)
            u.agreement.reset()
        else:
            k = len(gen)
            if u.restart:
                if gen:      # decoded again from the window's origin: it replaces all the utterance's text
                    u.committed, u.trimmed, u.words = list(out.tokens[:out.n_prefix]), [], []
                    u.buf_start, u.carry, u.redecoded = start_frame, out.n_prefix, True
                else:        # it heard nothing: what partials committed stays, as it was published
                    out.words = None
            elif out.n_prefix < len(u.committed):
                if gen:      # a re-decoded final replaces what partials committed since the buffer's start
                    u.committed = u.committed[:out.n_prefix]
                    u.redecoded = True
                else:
                    k = 0
                    out.words = None
        u.committed += gen[:k]
        u.tail = gen[k:]
        if out.words and kind != "final":
            self._trim(u, out, start_frame, dur, kind == "advance")
        if kind == "advance" and u.buf_start == start_frame:
            # no word boundary to cut at: commit the whole hypothesis and move past the window
            u.committed += u.tail
            u.tail = []
            u.words += self._map_words(out.words or [], start_frame, u)
            u.trimmed += u.committed
            u.committed = []
            u.buf_start = end_frame
        said_s = max(out.end_s or 0.0, out.words[-1].end_s if out.words else 0.0)
        if kind == "final" and (out.end_s is not None or out.words) and dur - said_s > self.policy.seek_s \
                and said_s * FPS >= 50 and not speechless and (gen or out.n_prefix):
            # Whisper ended its text well before the audio ends (by its closing timestamp and by the
            # aligned words): commit it, cut the buffer there, and decode the rest (faster-whisper's seek)
            u.words += self._map_words(out.words or [], start_frame, u)
            u.trimmed += u.committed
            u.committed = []
            u.buf_start = start_frame + round(said_s * FPS)
            u.origin, u.plan = -1, None
            u.agreement.reset()
            if u.redecoded:      # the final follows; its text replaces the committed text as a whole
                return None
            return self._publish(u, out, lang, False, self.sample_of(end_frame))
        if kind == "partial" and out.end_s is not None and not u.tail and dur - out.end_s > self.policy.seek_s \
                and out.end_s * FPS >= 50 and out.tokens[:len(u.committed)] == u.committed and u.committed \
                and out.words:
            # everything the buffer says is committed and Whisper marked where it ends: cut there
            u.words += self._map_words(out.words, start_frame, u)
            u.trimmed += u.committed
            u.committed = []
            u.buf_start = start_frame + round(out.end_s * FPS)
            u.agreement.reset()
        if kind == "final":
            if out.words:
                u.words += self._map_words(out.words, start_frame, u)
            u.last_window = (start_frame, list(out.tokens), list(out.words or []))
            self.utterance_open = False
        return self._publish(u, out, lang, kind == "final", self.sample_of(end_frame))

    def _trim(self, u: UtteranceState, out: WhisperOutput, start_frame: int, dur: float, force: bool) -> None:
        """Cut the buffer after committed text (:func:`~kikimimi.models.asr.policy.buffer_cut`)."""
        words: list[TimedWord] = []
        units = 0
        for w in out.words or []:
            units += w.n_tokens
            words.append(TimedWord(w.text, units, w.start_s, w.end_s, w.probability))
        cut = buffer_cut(u.committed, out.tokens, out.segment_ends, words, dur, self.policy.trim_after_s,
                         self.policy.force_after_s, force)
        if cut is None:
            return
        n_tok, cut_s, n_words = cut
        u.words += self._map_words((out.words or [])[:n_words], start_frame, u)
        u.trimmed += u.committed[:n_tok]
        u.committed = u.committed[n_tok:]
        u.buf_start = start_frame + round(min(cut_s, dur) * FPS)   # aligned words can reach into the padding

    def _map_words(self, words: list[AlignedWord], start_frame: int, u: UtteranceState) -> list[Word]:
        """Words of a window (from its first token on) on the stream's clock, carried words left out."""
        out = []
        skip = self._skip
        units = 0
        lo = u.start_sample
        hi = u.end_sample if u.end_sample is not None else self.sample_of(self.frames_end)
        for w in words:
            units += w.n_tokens
            text = w.text.strip()
            if not text or units - w.n_tokens < skip:    # a carried word (with punctuation decoded after it)
                continue
            a = min(max(self.sample_of(start_frame + round(w.start_s * FPS)), lo), hi)
            b = min(max(self.sample_of(start_frame + round(w.end_s * FPS)), a), hi)
            out.append(Word(text, a, b, float(w.probability)))
        return out

    def _text(self, tokens: list[int], u: UtteranceState, lang: str) -> str:
        """Shown text of an utterance's tokens (after the carried ones: without the punctuation that
        closes the carried text)."""
        text = tidy(self.model.decode_text(tokens), lang)
        return text.lstrip(CLOSING + " ") if u.carry else text

    def _publish(self, u: UtteranceState, out: WhisperOutput, lang: str, final: bool,
                 end_sample: int) -> Revision | None:
        dec = self.model.decode_text
        committed = self._text((u.trimmed + u.committed)[u.carry:], u, lang)
        if final and u.redecoded and not committed.startswith(u.pub_committed):
            self.corrections += 1   # the final, decoded again as a whole, corrects the committed text
        elif not committed.startswith(u.pub_committed):
            log.warning("committed text %r would not extend %r; keeping the published text", committed,
                        u.pub_committed)
            committed = u.pub_committed
        unstable = ""
        if not final and u.tail:
            full = self._text((u.trimmed + u.committed + u.tail)[u.carry:], u, lang)
            if full.startswith(committed):
                unstable = full[len(committed):]
            else:
                sep = "" if is_unspaced(lang) or not committed else " "
                unstable = sep + tidy(dec(u.tail), lang)
            if not committed and is_silence_phrase(unstable, lang):
                unstable = ""
        if final:
            if not u.pub_committed and is_silence_phrase(committed, lang) and (
                    not committed or out.no_speech_prob > self.policy.phrase_no_speech
                    or out.avg_logprob < self.policy.phrase_logprob):
                committed = ""
                u.words = []
            if not committed and not u.published:
                self._utt = None
                return None
            end = u.end_sample if u.end_sample is not None else end_sample
            rev = Revision(committed, "", True, lang, u.start_sample, max(end, u.start_sample), tuple(u.words))
            self._last = rev
            self._utt = None
            if committed:
                self.stream_language.finished(lang)
            if committed:   # context for the next utterance (Whisper's condition on previous text)
                self._history = (self._history + u.trimmed + u.committed)[-self.policy.context_tokens:]
                self._history_end, self._history_lang = max(end, u.start_sample), lang
                self._prev_window = u.last_window
            return rev
        if (committed, unstable) == (u.pub_committed, u.pub_unstable) or not (committed or unstable):
            return None
        u.pub_committed, u.pub_unstable, u.published = committed, unstable, True
        rev = Revision(committed, unstable, False, lang, u.start_sample, max(end_sample, u.start_sample))
        self._last = rev
        return rev

    def result(self) -> Revision | None:
        return self._last
