"""Guards against text Whisper-style models produce without speech: silence phrases and loops.

* :func:`is_silence_phrase`: the whole text is one of the phrases these models emit on silence or
  noise ("Thank you.", "Thanks for watching!", "ご視聴ありがとうございました", ...), compared after
  normalization; :data:`SILENCE_PHRASES` holds the English and Japanese lists.
* :func:`strip_annotations`: removes bracketed sound annotations ("[Music]", "(applause)", "♪",
  fullwidth brackets as Japanese subtitles use them).
* :func:`find_loop` / :func:`collapse_repeats`: a unit sequence (tokens, words or characters) that
  repeats the same run back to back is cut to one copy of the run; :func:`remove_repeats` does that
  to text, by words or, for unspaced languages, by characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

from kikimimi.models.asr.text import is_unspaced, normalize

T = TypeVar("T")

SILENCE_PHRASES: dict[str, frozenset[str]] = {
    "en": frozenset(normalize(p, "en") for p in (
        "thank you", "thank you very much", "thanks", "thanks for watching", "thank you for watching",
        "thanks for watching and see you next time", "thank you so much for watching",
        "please subscribe", "please subscribe to my channel", "subscribe to my channel",
        "don't forget to like and subscribe", "like and subscribe", "see you next time",
        "see you in the next video", "i'll see you next time", "bye", "bye bye", "goodbye", "you",
        "so", "okay", "oh", "hmm", "uh", "um", "the end", "silence", "music", "applause",
        "subtitles by the amara org community", "transcription by castingwords",
        "thank you for listening", "thanks for listening",
    )),
    "ja": frozenset(normalize(p, "ja") for p in (
        "ご視聴ありがとうございました", "ご視聴ありがとうございます", "ご視聴いただきありがとうございました",
        "ご視聴いただきありがとうございます", "最後までご視聴いただきありがとうございました",
        "最後までご視聴ありがとうございました", "チャンネル登録よろしくお願いします",
        "チャンネル登録お願いします", "チャンネル登録をお願いします", "ありがとうございました",
        "ありがとうございます", "おやすみなさい", "お疲れ様でした", "字幕", "はい", "うん", "ん",
        "それではまた", "またね", "では", "次回もお楽しみに", "ご清聴ありがとうございました",
    )),
}
"""Normalized phrases, per language, that count as hallucinated when they are the whole text."""

_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\uff08[^\uff09]*\uff09|【[^】]*】|♪+|♫+|\*[^*]*\*")


def strip_annotations(text: str) -> str:
    """``text`` without bracketed sound annotations and music notes; whitespace is kept as it was."""
    return _ANNOTATION.sub("", text)


def is_silence_phrase(text: str, language: str) -> bool:
    """True if the whole of ``text`` (normalized) is a known silence phrase of ``language`` or English.

    Empty text (after normalization) counts as a silence phrase too: there is nothing to publish.
    """
    lang = (language or "en").split("-")[0].lower()
    norm = normalize(strip_annotations(text), lang)
    if not norm.strip():
        return True
    if norm in SILENCE_PHRASES.get(lang, frozenset()):
        return True
    return normalize(text, "en") in SILENCE_PHRASES["en"]


def find_loop(units: Sequence[T], min_period: int = 4, min_repeats: int = 2,
              short_period_repeats: int = 4) -> tuple[int, int] | None:
    """The first back-to-back repetition in ``units``: (start of the 2nd copy, end of the last copy).

    A run of ``p`` units repeated so that it occurs ``r`` times in a row counts when ``p >= min_period``
    and ``r >= min_repeats``, or when ``p < min_period`` and ``r >= short_period_repeats`` (short
    runs such as "no no" repeat in real speech, so they need more copies). Returns None if none.
    """
    n = len(units)
    best: tuple[int, int] | None = None
    for p in range(1, n // 2 + 1):
        need = min_repeats if p >= min_period else short_period_repeats
        if need * p > n:
            continue
        i = 0
        while i + need * p <= n:
            r = 1
            while i + (r + 1) * p <= n and units[i + r * p:i + (r + 1) * p] == units[i:i + p]:
                r += 1
            if r >= need:
                cand = (i + p, i + r * p)
                if best is None or cand[0] < best[0]:
                    best = cand
                break
            i += 1
    return best


def collapse_repeats(units: Sequence[T], min_period: int = 4, min_repeats: int = 2,
                     short_period_repeats: int = 4) -> list[T]:
    """``units`` with every back-to-back repetition (see :func:`find_loop`) cut to one copy."""
    out = list(units)
    for _ in range(len(out)):
        loop = find_loop(out, min_period, min_repeats, short_period_repeats)
        if loop is None:
            break
        del out[loop[0]:loop[1]]
    return out


def remove_repeats(text: str, language: str) -> str:
    """``text`` with looped phrases cut to one copy: by words, or by characters for unspaced languages.

    Words compare after normalization (case and punctuation ignored) but the original words are kept.
    """
    if is_unspaced(language):
        chars = list(text)
        return "".join(collapse_repeats(chars, min_period=3, min_repeats=3, short_period_repeats=6))
    words = text.split()
    keys = [normalize(w, language) or w for w in words]
    kept = list(range(len(words)))
    for _ in range(len(words)):
        loop = find_loop([keys[i] for i in kept])
        if loop is None:
            break
        del kept[loop[0]:loop[1]]
    return " ".join(words[i] for i in kept)
