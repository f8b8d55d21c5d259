"""Transcript text: joining pieces per language, normalization for scoring, and WER / CER.

* :func:`join_text` joins text pieces: with single spaces for languages written with spaces, with
  nothing for Japanese, Chinese, Thai and the like (no spurious spaces between characters).
* :func:`normalize` prepares text for scoring: Unicode NFKC, case folded, punctuation removed,
  whitespace collapsed; English also spells out the common title abbreviations (Mr. -> mister) and
  splits hyphenated words; for unspaced languages all whitespace is removed.
* :func:`edit_distance`, :func:`wer`, :func:`cer`: Levenshtein distance over words or characters;
  :class:`ErrorCount` sums errors and reference length over a corpus (the usual corpus-level rate).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

UNSPACED_LANGUAGES = frozenset({"ja", "zh", "yue", "th", "lo", "my", "km", "bo"})
"""Languages written without spaces between words."""

_EN_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "mt": "mount"}
_SPACE = re.compile(r"\s+")


def is_unspaced(language: str) -> bool:
    """True for languages written without spaces between words (ja, zh, th, ...)."""
    return language.split("-")[0].lower() in UNSPACED_LANGUAGES


def join_text(pieces: Iterable[str], language: str) -> str:
    """Join text pieces: no spaces for unspaced languages, single spaces otherwise; trimmed."""
    if is_unspaced(language):
        return "".join(_SPACE.sub("", p) for p in pieces)
    return _SPACE.sub(" ", " ".join(p.strip() for p in pieces)).strip()


def _strip_punctuation(text: str, keep_apostrophes: bool) -> str:
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch == "'" and keep_apostrophes:
            out.append(ch)
        elif cat[0] in "PS":
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def normalize(text: str, language: str = "en") -> str:
    """Text for scoring: NFKC, lower case, no punctuation, single spaces (none for unspaced languages)."""
    t = unicodedata.normalize("NFKC", text).lower()
    if is_unspaced(language):
        return _SPACE.sub("", _strip_punctuation(t, keep_apostrophes=False))
    t = t.replace("\u2019", "'").replace("-", " ")
    words = _strip_punctuation(t, keep_apostrophes=True).split()
    out = []
    for w in words:
        w = w.strip("'")
        if not w:
            continue
        if language.startswith("en"):
            w = _EN_ABBREVIATIONS.get(w, w)
        out.append(w)
    return " ".join(out)


def edit_distance(ref: Sequence[object], hyp: Sequence[object]) -> int:
    """Levenshtein distance (substitutions, deletions, insertions each cost 1) between two sequences."""
    if len(ref) < len(hyp):
        ref, hyp = hyp, ref
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


@dataclass(frozen=True, slots=True)
class ErrorCount:
    """Edit errors and reference length; add them up over a corpus, then read ``rate``."""

    errors: int = 0
    length: int = 0

    def __add__(self, other: ErrorCount) -> ErrorCount:
        return ErrorCount(self.errors + other.errors, self.length + other.length)

    @property
    def rate(self) -> float:
        """errors / length (0 for an empty reference with no errors, inf with errors)."""
        if self.length == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.length


def wer(reference: str, hypothesis: str, language: str = "en") -> ErrorCount:
    """Word errors of ``hypothesis`` against ``reference`` after :func:`normalize`."""
    ref = normalize(reference, language).split()
    hyp = normalize(hypothesis, language).split()
    return ErrorCount(edit_distance(ref, hyp), len(ref))


def cer(reference: str, hypothesis: str, language: str = "ja") -> ErrorCount:
    """Character errors after :func:`normalize` (spaces removed, so only characters count)."""
    ref = normalize(reference, language).replace(" ", "")
    hyp = normalize(hypothesis, language).replace(" ", "")
    return ErrorCount(edit_distance(ref, hyp), len(ref))


_CJK = (r"\u3000-\u303f\u3040-\u309f\u30a0-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
        r"\u0e00-\u0e7f")
_SPACE_BEFORE_CJK = re.compile(rf"\s+(?=[{_CJK}])")
_SPACE_AFTER_CJK = re.compile(rf"(?<=[{_CJK}])\s+")


def tidy(text: str, language: str) -> str:
    """Recognizer output as it is shown: trimmed, runs of spaces collapsed, and for unspaced languages
    no spaces next to a Japanese/Chinese/Thai character (spaces between Latin words stay)."""
    t = _SPACE.sub(" ", text).strip()
    if is_unspaced(language):
        t = _SPACE_AFTER_CJK.sub("", _SPACE_BEFORE_CJK.sub("", t))
    return t
