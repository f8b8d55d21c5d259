"""Streaming speech segmentation of a sequence of per-unit speech probabilities.

A :class:`SpeechSegmenter` is fed consecutive units (a Silero window, a webrtcvad frame) as
``push(start, end, probability)`` on one stream's sample clock and returns the segment decisions they
cause, as :class:`SegmentDecision` records. The rule is Silero's, made strictly streaming:

* **hysteresis**: out of speech, a unit with ``probability >= threshold`` opens a segment at the
  unit's start. In speech, a unit below ``neg_threshold`` starts a pending silence; a pending silence
  is cancelled only by a unit back at ``>= threshold`` (units in between neither end nor resume speech).
* **hangover** (``min_silence``): the segment ends once the pending silence has lasted ``min_silence``
  samples; the end decision is made at the end of the unit that completes it, and the segment's speech
  ends where the silence began.
* **minimum speech** (``min_speech``): SPEECH_START is decided once the segment's speech extent (its
  start to the end of its last speech unit) reaches ``min_speech``; a segment that ends shorter emits
  nothing at all.
* **padding** (``pad``): the reported segment is widened by ``pad`` samples each side, never back
  past the previous segment's end or the stream's origin, and never past the samples seen so far.

Every decision's ``probability`` is the mean unit probability over the segment's speech so far.
"""

from __future__ import annotations

from dataclasses import dataclass

from kikimimi.engine.messages import NO_SAMPLE
from kikimimi.engine.msgs.speech import SpeechEventKind


@dataclass(frozen=True, slots=True)
class SegmentDecision:
    """A SPEECH_START (end = NO_SAMPLE) or SPEECH_END decided at sample ``decision`` (the VAD model,
    :mod:`kikimimi.models.vad`, also gives PROGRESS watermarks in it: start = decision, end = NO_SAMPLE)."""

    kind: SpeechEventKind
    start: int
    end: int
    decision: int
    probability: float


class SpeechSegmenter:
    """Hysteresis + hangover + minimum-speech segmentation of one stream (durations in samples)."""

    def __init__(self, threshold: float, neg_threshold: float, min_speech: int, min_silence: int,
                 pad: int = 0, origin: int = 0) -> None:
        if not 0.0 <= neg_threshold <= threshold <= 1.0:
            raise ValueError(f"need 0 <= neg_threshold <= threshold <= 1, got neg_threshold={neg_threshold}, "
                             f"threshold={threshold}")
        if min(min_speech, min_silence, pad) < 0:
            raise ValueError(f"min_speech, min_silence and pad must be >= 0 samples, got "
                             f"{min_speech}, {min_silence}, {pad}")
        self.threshold = threshold
        self.neg_threshold = neg_threshold
        self.min_speech = min_speech
        self.min_silence = min_silence
        self.pad = pad
        self.floor = origin          # no padded start before this (previous end, stream origin)
        self.last_seen = origin      # end of the last unit pushed
        self.triggered = False       # a segment is open (START may not be decided yet)
        self.started = False         # SPEECH_START decided for the open segment
        self.seg_start = 0           # unpadded start of the open segment
        self.out_start = 0           # padded start reported for it
        self.speech_end = 0          # end of its last speech unit
        self.silence_start: int | None = None
        self._sum = 0.0              # probabilities of every unit of the open segment
        self._n = 0
        self._sum_speech = 0.0       # ... up to its last speech unit
        self._n_speech = 0

    @property
    def in_speech(self) -> bool:
        """True while a segment is open (its START decided or not)."""
        return self.triggered

    def push(self, start: int, end: int, probability: float, decision: int | None = None) -> list[SegmentDecision]:
        """Feed the unit ``[start, end)`` with its speech probability; returns the decisions it causes,
        made at sample ``decision`` (default ``end``; later when the unit needed look-ahead)."""
        out: list[SegmentDecision] = []
        at = end if decision is None else decision
        self.last_seen = end
        p = float(probability)
        if not self.triggered:
            if p >= self.threshold:
                self.triggered, self.started = True, False
                self.seg_start, self.speech_end, self.silence_start = start, end, None
                self._sum = self._sum_speech = p
                self._n = self._n_speech = 1
                self._maybe_start(out, at)
            return out
        self._sum += p
        self._n += 1
        if self.silence_start is None:
            if p >= self.neg_threshold:
                self._speech_until(end)
            else:
                self.silence_start = start
        elif p >= self.threshold:
            self.silence_start = None
            self._speech_until(end)
        if self.silence_start is not None and end - self.silence_start >= self.min_silence:
            self._finish(out, at)
        else:
            self._maybe_start(out, at)
        return out

    def close(self, decision: int) -> list[SegmentDecision]:
        """End of input (or flush): end the open segment now, decided at sample ``decision``."""
        out: list[SegmentDecision] = []
        if self.triggered:
            self._finish(out, decision)
        return out

    # ------------------------------------------------------------------ internals
    def _speech_until(self, end: int) -> None:
        self.speech_end = end
        self._sum_speech, self._n_speech = self._sum, self._n

    def _mean(self) -> float:
        return min(1.0, max(0.0, self._sum_speech / max(1, self._n_speech)))

    def _maybe_start(self, out: list[SegmentDecision], decision: int) -> None:
        if not self.started and self.speech_end - self.seg_start >= self.min_speech:
            self.started = True
            self.out_start = max(self.floor, self.seg_start - self.pad)
            out.append(SegmentDecision(SpeechEventKind.SPEECH_START, self.out_start, NO_SAMPLE, decision,
                                       self._mean()))

    def _finish(self, out: list[SegmentDecision], decision: int) -> None:
        if self.started:
            end = max(self.out_start, min(self.speech_end + self.pad, self.last_seen))
            out.append(SegmentDecision(SpeechEventKind.SPEECH_END, self.out_start, end, decision, self._mean()))
            self.floor = end
        self.triggered = self.started = False
        self.silence_start = None
