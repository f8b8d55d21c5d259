"""Streaming policy pieces, independent of any model: LocalAgreement, buffer trimming, adaptive interval.

* :class:`LocalAgreement`: re-decoding a growing buffer gives a new hypothesis each time; the units
  (tokens) on which the last ``n`` hypotheses agree, from the start, are committed, backed off to a
  boundary the caller accepts (a whole word, a whole character). Committed units are never revised.
* :func:`trim_point`: where to cut the audio buffer so its cost does not grow with the utterance:
  after the last committed word that ends a segment or a sentence, once the buffer is longer than
  ``trim_after_s``; after any committed word once it is longer than ``force_after_s``.
* :class:`StreamPolicy`: the settings of a re-decoding stream (agreement, trimming, guards).
* :class:`AdaptiveInterval`: how much new audio to wait for before the next partial decode:
  ``headroom`` times the measured decode time (a moving average), clamped to [min, max], so the
  decoder spends at most 1 / headroom of real time on partials.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from kikimimi.engine.errors import ParamError

T = TypeVar("T")

SENTENCE_END = (".", "?", "!", "。", "\uff1f", "\uff01", "…")   # with the fullwidth ? and !
CLAUSE_END = (",", ";", ":", "、", "\uff0c", "\uff1b")            # with the fullwidth , and ;


def common_prefix(a: Sequence[T], b: Sequence[T]) -> int:
    """Length of the longest common prefix of ``a`` and ``b``."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class LocalAgreement(Generic[T]):
    """LocalAgreement-n over unit sequences that continue the committed text.

    Each :meth:`update` takes the newest hypothesis *after* what is already committed, and the
    position (e.g. the audio frame) it was decoded up to. It returns how many of its leading units to
    commit: the prefix on which it and the ``n - 1`` latest earlier hypotheses decoded at least
    ``min_gap`` positions before it agree, shortened until ``boundary(seq, k)`` holds for every one of
    them (``k`` units can be committed without splitting a word or character). With ``min_gap`` the
    decode rate (for the unstable text) and the evidence needed to commit are set apart: hypotheses
    from nearly the same audio tend to agree on the same mistakes. Kept hypotheses that do not start
    with the committed units are dropped, the others lose them.
    """

    def __init__(self, n: int = 2, min_gap: int = 0, keep: int = 16) -> None:
        if not isinstance(n, int) or n < 2:
            raise ParamError(f"LocalAgreement n={n!r} is not allowed; allowed: an int >= 2")
        if min_gap < 0:
            raise ParamError(f"LocalAgreement min_gap={min_gap!r} is not allowed; allowed: >= 0")
        self.n = n
        self.min_gap = min_gap
        self._history: deque[tuple[int, list[T]]] = deque(maxlen=max(keep, n))

    def reset(self) -> None:
        """Forget previous hypotheses (a new utterance, or the committed text changed under them)."""
        self._history.clear()

    def update(self, hypothesis: Sequence[T], boundary: Callable[[Sequence[T], int], bool],
               position: int = 0) -> int:
        """Units of ``hypothesis`` to commit now (0 until enough earlier hypotheses have been seen)."""
        hyp = list(hypothesis)
        refs = [h for p, h in self._history if position - p >= self.min_gap][-(self.n - 1):]
        k = 0
        if len(refs) == self.n - 1:
            k = min(common_prefix(hyp, h) for h in refs)
            while k > 0 and not all(boundary(s, k) for s in (hyp, *refs)):
                k -= 1
        if k:
            head = hyp[:k]
            kept = [(p, h[k:]) for p, h in self._history if h[:k] == head]
            self._history.clear()
            self._history.extend(kept)
        self._history.append((position, hyp[k:]))
        return k


@dataclass(frozen=True, slots=True)
class TimedWord:
    """A word of a hypothesis: its text, the units up to its end, and its span in seconds of the window."""

    text: str
    units_end: int
    start_s: float
    end_s: float
    probability: float = 1.0
    segment_end: bool = False


def trim_point(words: Sequence[TimedWord], committed_units: int, buffer_s: float, trim_after_s: float,
               force_after_s: float, min_cut_s: float = 0.5) -> tuple[int, float] | None:
    """Where to cut the buffer: (number of words cut, cut time in s of the window), or None.

    Only committed words (``units_end <= committed_units``) followed by another word are eligible; the
    cut lies between the word's end and the next word's start. Once ``buffer_s >= trim_after_s`` the
    last eligible word ending a segment or a sentence is chosen; once ``buffer_s >= force_after_s``,
    failing that, the last eligible word ending a clause, then any eligible word.
    """
    if buffer_s < trim_after_s:
        return None
    best: dict[str, tuple[int, float]] = {}
    for i in range(len(words) - 1):
        w, nxt = words[i], words[i + 1]
        if w.units_end > committed_units:
            break
        cut = max(w.end_s, min((w.end_s + nxt.start_s) / 2, nxt.start_s))
        if cut < min_cut_s:
            continue
        text = w.text.rstrip()
        if w.segment_end or text.endswith(SENTENCE_END):
            best["sentence"] = (i + 1, cut)
        if text.endswith(CLAUSE_END):
            best["clause"] = (i + 1, cut)
        best["word"] = (i + 1, cut)
    if "sentence" in best:
        return best["sentence"]
    if buffer_s >= force_after_s:
        return best.get("clause") or best.get("word")
    return None


def buffer_cut(committed: Sequence[int], tokens: Sequence[int], segment_ends: Sequence[tuple[int, float]],
               words: Sequence[TimedWord], dur: float, trim_after_s: float, force_after_s: float, force: bool
               ) -> tuple[int, float, int] | None:
    """Where to cut a buffer of ``dur`` s after its committed tokens: (tokens cut, cut time in s of the
    window, words cut), or None. ``tokens`` is the hypothesis (it must begin with ``committed``),
    ``segment_ends`` its (token count, time) segment ends, ``words`` its aligned words. Past
    ``trim_after_s`` (or forced) at the last committed segment end at least 0.5 s inside the window (its own
    timestamp is the cut), else past ``force_after_s`` (or forced) after a committed word
    (:func:`trim_point`)."""
    n = len(committed)
    if not n or list(tokens[:n]) != list(committed):
        return None
    cut: tuple[int, float] | None = None
    if dur >= trim_after_s or force:
        segs = [(k, t) for k, t in segment_ends if 0 < k <= n and 0.5 <= t <= dur - 0.5]
        if segs:
            cut = segs[-1]
    if cut is None and words:
        after = 0.0 if force else force_after_s
        point = trim_point(words, n, dur, after, after)
        if point is not None:
            cut = (words[point[0] - 1].units_end, point[1])
    if cut is None:
        return None
    return cut[0], cut[1], sum(1 for w in words if w.units_end <= cut[0])


class AdaptiveInterval:
    """Frames of new audio to wait for between partial decodes, adapted to the measured decode time."""

    def __init__(self, min_frames: int, max_frames: int, headroom: float = 2.0, alpha: float = 0.3,
                 frames_per_second: int = 100) -> None:
        if min_frames < 1 or max_frames < min_frames:
            raise ParamError(f"interval bounds {min_frames}..{max_frames} frames are not allowed; "
                             "allowed: 1 <= min <= max")
        if headroom <= 0 or not 0 < alpha <= 1:
            raise ParamError(f"headroom={headroom} and alpha={alpha} are not allowed; allowed: headroom > 0, "
                             "0 < alpha <= 1")
        self.min_frames = int(min_frames)
        self.max_frames = int(max_frames)
        self.headroom = float(headroom)
        self.alpha = float(alpha)
        self.fps = frames_per_second
        self.decode_s: float | None = None

    def observe(self, seconds: float) -> None:
        """Record the wall time of one decode call (all the streams it served together)."""
        s = max(0.0, float(seconds))
        self.decode_s = s if self.decode_s is None else (1 - self.alpha) * self.decode_s + self.alpha * s

    @property
    def frames(self) -> int:
        """The current interval in frames."""
        if self.decode_s is None:
            return self.min_frames
        want = math.ceil(self.headroom * self.decode_s * self.fps)
        return max(self.min_frames, min(self.max_frames, want))


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """Settings of a re-decoding stream (see :mod:`~kikimimi.models.asr.whisper_stream` for their use)."""

    agreement_n: int = 2
    agreement_gap_s: float = 1.0
    trim_after_s: float = 10.0
    force_after_s: float = 20.0
    min_partial_s: float = 0.5
    commit_after_s: float = 2.0
    seek_s: float = 1.0
    context_tokens: int = 96
    context_gap_s: float = 10.0
    carry_gap_s: float = 2.0
    carry_s: float = 20.0
    redecode_final: bool = True
    carry_words: int = 120
    ring_s: float = 60.0
    no_speech_threshold: float = 0.6
    no_speech_strong: float = 0.7
    logprob_threshold: float = -1.0
    phrase_no_speech: float = 0.2
    phrase_logprob: float = -0.5

    def __post_init__(self) -> None:
        if not 0 < self.trim_after_s <= self.force_after_s:
            raise ParamError(f"trim_after_s={self.trim_after_s}, force_after_s={self.force_after_s} are not allowed;"
                             " allowed: 0 < trim_after_s <= force_after_s")
        if self.ring_s < 35.0:
            raise ParamError(f"ring_s={self.ring_s} is not allowed; allowed: >= 35 (one window plus look-back)")
