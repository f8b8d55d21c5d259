"""Where a Whisper final, decoded again as a whole, starts: the carry of the previous final's words.

A short utterance decoded alone loses the context a long window gives (Whisper hears "ask not" better after
"and so my fellow Americans"). When an utterance starts at most ``carry_gap_s`` after the previous final, its
final window starts earlier, inside the previous final's window (:func:`plan_carry`):

* at the first of that final's words that lies at most ``carry_s`` before the utterance (and among its last
  ``carry_words`` words), cut between two words by their aligned times;
* those words' tokens, exactly as decoded, are forced as prefix and never published, without the
  punctuation that closed them (the previous final ended where its audio did, so Whisper decides that
  punctuation again with more audio); they are left out of the context prompt (``final_context``);
* later words give later starts (``points``), for a final that would not fit one window from the first.

:func:`final_window` picks, at the final, the start that fits the model's window: the earliest carry point,
else the utterance's origin (no carry), else the utterance's own start; None when none fits (the final is
then decoded from the buffer's last cut, continuing what partials committed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kikimimi.models.asr.policy import CLAUSE_END, SENTENCE_END

if TYPE_CHECKING:
    from kikimimi.models.asr.whisper_config import AlignedWord

CLOSING = "".join(SENTENCE_END + CLAUSE_END)
"""Punctuation that closes carried text (stripped from it, and from the front of the text after it)."""

Window = tuple[int, list[int], list["AlignedWord"]]
"""A final's decode window: its first frame, its tokens (prefix included) and their aligned words."""


@dataclass(frozen=True, slots=True)
class CarryPlan:
    """The carry of one utterance: its window's first frame, the carried tokens, the context prompt
    without them, and the later starts (frame, index into ``carried``) between carried words."""

    origin: int
    carried: list[int]
    final_context: list[int]
    points: list[tuple[int, int]]


def plan_carry(prev: Window, lo: int, start_frame: int, context: list[int], carry_words: int,
               decode_text: Callable[[Sequence[int]], str], fps: int) -> CarryPlan | None:
    """The carry from ``prev`` (the previous final's window; ``fps`` frames a second) for an utterance
    whose frames start at ``start_frame``, starting no earlier than frame ``lo``; None when no carried word
    qualifies."""
    start, tokens, words = prev
    if not words or sum(w.n_tokens for w in words) != len(tokens):
        return None

    def cut(i: int) -> int:     # the window starts between word i - 1 and word i
        w = words[i]
        if i == 0:
            return start + round(max(0.0, w.start_s - 0.2) * fps)
        before = words[i - 1].end_s
        return start + round(max(before, min((before + w.start_s) / 2, w.start_s)) * fps)
    first = next((i for i in range(max(0, len(words) - carry_words), len(words)) if cut(i) >= lo), None)
    if first is None or cut(first) > start_frame:
        return None
    n = sum(w.n_tokens for w in words[first:])
    carried = tokens[len(tokens) - n:]
    while carried and not decode_text(carried[-1:]).strip(CLOSING):
        carried = carried[:-1]
    if not carried:
        return None
    final_context = context[:-n] if context[-n:] == tokens[len(tokens) - n:] else list(context)
    points: list[tuple[int, int]] = []
    at = 0
    for i in range(first, len(words)):
        if at < len(carried) and cut(i) <= start_frame:
            points.append((cut(i), at))
        at += words[i].n_tokens
    return CarryPlan(cut(first), list(carried), final_context, points)


def final_window(plan: CarryPlan | None, origin: int, start_frame: int, end: int, oldest: int,
                 max_window: int) -> tuple[int, int | None] | None:
    """(first frame, carried tokens kept as prefix from index k, or None for no carry) of a final ending at
    frame ``end``, with frames from ``oldest`` on still held; None when no start fits ``max_window``.
    ``origin`` < 0: the utterance may not be decoded again from its start (a seek cut it)."""
    if plan is not None:
        for f, k in plan.points:
            if f >= oldest and end - f <= max_window:
                return f, k
        if start_frame >= oldest and end - start_frame <= max_window and origin >= 0:
            return start_frame, None
        return None
    if origin >= 0 and origin >= oldest and end - origin <= max_window:
        return origin, None
    return None
