"""Which language a stream is recognized in: a fixed code, ``auto``, or ``auto`` restricted to a set.

``language`` values: ``"en"`` (fixed), ``"auto"`` (any language the model knows) or ``"auto:en,ja"``
(detection restricted to those: nothing outside the set is ever emitted). :func:`parse_language` checks one.

Under ``auto`` a stream's language is decided by :class:`StreamLanguage`:

* an utterance's language is fixed only on enough audio (``decide_s`` of it, or the whole utterance when it
  is shorter), never on the first short window alone;
* once a stream has a language it keeps it: an utterance switches only when the detection over at least
  ``switch_s`` of its audio gives another language with probability ``switch_probability`` or more (a
  sustained, strong switch, as when a speaker goes from English to Japanese); weaker evidence, or a short
  utterance, stays in the stream's language. Clean English no longer turns Welsh or Polish mid-file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kikimimi.engine.errors import ParamError

AUTO = "auto"


@dataclass(frozen=True, slots=True)
class LanguageChoice:
    """A parsed ``language`` value: ``fixed`` set for one code; else ``allowed`` (None: every language)."""

    fixed: str | None = None
    allowed: tuple[str, ...] | None = None

    @property
    def auto(self) -> bool:
        return self.fixed is None


def parse_language(value: object, known: Sequence[str]) -> LanguageChoice:
    """``value`` ("en", "auto" or "auto:en,ja") checked against the model's languages ``known``; ParamError
    names the bad value and what is allowed."""
    head = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
    allowed_text = f"auto, auto:CODE,CODE,... or one of {head}"
    if not isinstance(value, str) or not value.strip():
        raise ParamError(f"language={value!r} is not allowed; allowed: {allowed_text}")
    if value == AUTO:
        return LanguageChoice()
    if value.startswith(AUTO + ":"):
        codes = tuple(dict.fromkeys(c.strip() for c in value[len(AUTO) + 1:].split(",") if c.strip()))
        bad = [c for c in codes if c not in known]
        if not codes or bad:
            raise ParamError(f"language={value!r} is not allowed ({'unknown: ' + ', '.join(bad) if bad else 'no code'}"
                             f"); allowed: {allowed_text}")
        return LanguageChoice(fixed=codes[0]) if len(codes) == 1 else LanguageChoice(allowed=codes)
    if value not in known:
        raise ParamError(f"language={value!r} is not allowed; allowed: {allowed_text}")
    return LanguageChoice(fixed=value)


def best_allowed(ranked: Sequence[tuple[str, float]], allowed: tuple[str, ...] | None) -> tuple[str, float]:
    """The most probable language of ``ranked`` (code, probability; most probable first) within ``allowed``,
    with its probability renormalized over the allowed ones."""
    if allowed is None:
        return ranked[0]
    kept = [(c, p) for c, p in ranked if c in allowed]
    if not kept:
        return allowed[0], 0.0
    total = sum(p for _, p in kept)
    code, p = kept[0]
    return code, (p / total if total > 0 else 0.0)


def decoding_language(preferred: str | None, detected: str, probability: float, audio_s: float,
                      switch_probability: float, switch_s: float) -> str:
    """The language a window is decoded in: ``preferred`` (the stream's language), unless there is none or the
    window's detection says another one with ``switch_probability`` or more over ``switch_s`` of audio."""
    if preferred is None or detected == preferred:
        return detected
    return detected if audio_s >= switch_s and probability >= switch_probability else preferred


@dataclass(slots=True)
class StreamLanguage:
    """The language of one stream under ``auto``: see the module docstring."""

    decide_s: float = 2.0
    switch_s: float = 2.0
    switch_probability: float = 0.9
    current: str | None = None

    def fix(self, decoded_in: str, audio_s: float, final: bool) -> str | None:
        """The language to fix for an utterance whose windows so far (``audio_s`` of audio) were decoded in
        ``decoded_in`` (None: not enough audio yet)."""
        return decoded_in if final or audio_s >= self.decide_s else None

    def finished(self, language: str | None) -> None:
        """An utterance ended in ``language``: the stream keeps it."""
        if language is not None:
            self.current = language
