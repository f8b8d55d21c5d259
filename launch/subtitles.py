"""Final transcripts as text, JSON lines, WebVTT and SubRip: what ``kikimimi transcribe`` writes.

* :func:`file_text`: a file's whole final text, utterances joined with a space (for languages written
  without spaces, ``ja`` and ``zh``, with nothing).
* :func:`make_cues`: subtitle cues (one line each) from final transcripts. An utterance is cut into cues at
  word boundaries so that no cue lasts longer than ``max_s`` seconds or has more characters than its
  language's limit (:func:`cue_chars`: 42, or 20 full-width characters for Japanese and Chinese; a single
  word longer than that gets a cue of its own). Among the cuts within those limits the one chosen (by dynamic
  programming) prefers few cues, cuts after sentence punctuation, then after commas or at pauses, and avoids
  cues shorter than ``min_s`` (1 s). Punctuation-only tokens stay with the word before them. A cue still
  shorter than ``min_s``, or with no letter or digit in it, joins the cue before or after it when that is of
  the same speaker and language, no more than ``JOIN_GAP_S`` away, and the joined cue keeps the limits. A cue
  runs from its first word's start to its last word's end (words without duration share the time up to the
  next timed word, or the utterance's end, evenly), and is then held on screen until ``min_s`` after its
  start where the next cue (or ``end_ms``) leaves room; a final without words gives one cue over the
  utterance's span. Cue times never go backwards: a cue starts no earlier than the previous one ended and
  lasts at least 1 ms. With ``speakers`` a cue never mixes speakers and carries its speaker's name (the
  words' ``speaker``, else the transcript's).
* :func:`format_vtt` / :func:`format_srt`: the documents, timestamps ``00:00:01.230`` (VTT) and
  ``00:00:01,230`` (SRT); a cue's speaker as ``<v NAME>`` (VTT) or a ``NAME: `` prefix (SRT).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kikimimi.engine.msgs.fused import AnyTranscript

NO_SPACE_LANGUAGES = ("ja", "zh")
MAX_CUE_S = 7.0
MAX_CUE_CHARS = 42
"""Characters per cue (one line) for languages written with spaces, per common subtitling practice."""
MAX_CUE_CHARS_FULL_WIDTH = 20
"""Characters per cue for Japanese and Chinese (full-width: about 16-20 per line in common practice)."""
MIN_CUE_S = 1.0
JOIN_GAP_S = 0.5
"""A short cue joins a neighbour at most this far away (seconds of silence between them)."""
STRONG_END = (".", "?", "!", "\u3002", "\uff1f", "\uff01", "\u2026", '."', '?"', '!"', "\u300d", "\u300f")
"""Sentence ends (also the full-width ones, and closing quotes): the best places to cut."""
WEAK_END = (",", ";", ":", "\u3001", "\uff0c", "\uff1b", "\uff1a", "-", "\u2014")
"""Phrase ends (also the full-width ones): good places to cut."""
PAUSE_S = 0.3


@dataclass(frozen=True, slots=True)
class Cue:
    """One subtitle: start and end in milliseconds, its text, and (when asked for) who says it."""

    start_ms: int
    end_ms: int
    text: str
    speaker: str = ""


def cue_chars(language: str) -> int:
    """Characters per cue for ``language``: :data:`MAX_CUE_CHARS_FULL_WIDTH` for ja/zh, else :data:`MAX_CUE_CHARS`."""
    return MAX_CUE_CHARS_FULL_WIDTH if language.split("-")[0].lower() in NO_SPACE_LANGUAGES else MAX_CUE_CHARS


def joiner(language: str) -> str:
    """What goes between words / utterances: "" for languages written without spaces, else " "."""
    return "" if language.split("-")[0].lower() in NO_SPACE_LANGUAGES else " "


def join_words(words: Iterable[str], language: str) -> str:
    """Words (stripped) joined as the language writes them."""
    return joiner(language).join(t for t in (w.strip() for w in words) if t)


def file_text(finals: Sequence[AnyTranscript]) -> str:
    """The whole text of one input: its final utterances' text in order, joined as their language writes."""
    out = ""
    for t in finals:
        text = t.committed.strip()
        if not text:
            continue
        out = text if not out else out + joiner(t.language) + text
    return out


def _ms(samples: int, rate: int) -> int:
    return round(samples * 1000 / rate)


@dataclass(frozen=True, slots=True)
class _Unit:
    """A word (with the punctuation-only tokens after it) on the sample clock, and its speaker."""

    text: str
    start: int
    end: int
    speaker: str


def _has_word(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _units(t: AnyTranscript, speakers: bool) -> list[_Unit]:
    words = [w for w in t.words if w.text.strip()]
    spans = _fill_lost_timing([(w.start_sample, w.end_sample) for w in words], t.end_sample)
    default = str(getattr(t, "speaker", "") or "") if speakers else ""
    units: list[_Unit] = []
    for w, (a, b) in zip(words, spans, strict=True):
        who = (w.speaker or default) if speakers else ""
        text = w.text.strip()
        if units and not _has_word(text) and units[-1].speaker == who:
            u = units[-1]
            units[-1] = _Unit(u.text + text, u.start, max(u.end, b), who)
        else:
            units.append(_Unit(text, a, b, who))
    return units


def _script(ch: str) -> str:
    if "\u3040" <= ch <= "\u309f":
        return "hiragana"
    if "\u30a0" <= ch <= "\u30ff" or "\uff66" <= ch <= "\uff9f":
        return "katakana"
    if "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf":
        return "kanji"
    return "other"


def _unspaced_cost(before: str, after: str) -> float:
    """Between two tokens of a language written without spaces: cheap after a particle or okurigana (hiragana)
    before a new word (kanji or katakana), dear inside a katakana or kanji run (the middle of a word)."""
    a, b = _script(before[-1]), _script(after[0])
    if a == "hiragana" and b in ("kanji", "katakana"):
        return 0.5
    if a == b and a in ("kanji", "katakana"):
        return 2.0
    return 1.0


def _cut_cost(units: Sequence[_Unit], i: int, rate: int, spaced: bool) -> float:
    """The cost of a cue ending before ``units[i]``: none after sentence punctuation or at a change of speaker,
    a little after a comma or at a pause, most within a phrase (for languages written without spaces, most
    within a word: see :func:`_unspaced_cost`)."""
    if i >= len(units) or units[i].speaker != units[i - 1].speaker:
        return 0.0
    text = units[i - 1].text
    if text.endswith(STRONG_END):
        return 0.0
    if text.endswith(WEAK_END) or (units[i].start - units[i - 1].end) / rate >= PAUSE_S:
        return 0.3
    return 1.0 if spaced else _unspaced_cost(text, units[i].text)


def _cue_cost(units: Sequence[_Unit], text: str, seconds: float, min_s: float) -> float:
    """The cost of one cue: 1, plus up to 2 for lasting under ``min_s``, plus 1 if it has no letter or digit,
    plus 0.5 for each sentence that ends inside it (not at its end)."""
    short = 2.0 * (min_s - seconds) / min_s if min_s > 0 and seconds < min_s else 0.0
    inside = sum(0.5 for u in units[:-1] if u.text.endswith(STRONG_END))
    return 1.0 + short + (0.0 if _has_word(text) else 1.0) + inside


def _cut(units: Sequence[_Unit], rate: int, sep: str, limit: int, max_s: float, min_s: float) -> list[list[_Unit]]:
    """``units`` cut into cues within the limits at the least total cost (:func:`_cue_cost` + :func:`_cut_cost`;
    ``sep`` "" for languages written without spaces)."""
    n = len(units)
    best = [0.0] + [float("inf")] * n
    back = [0] * (n + 1)
    for i in range(1, n + 1):
        chars = -len(sep)
        for j in range(i - 1, -1, -1):
            chars += len(units[j].text) + len(sep)
            seconds = (units[i - 1].end - units[j].start) / rate
            if i - j > 1 and (chars > limit or seconds > max_s or units[j].speaker != units[i - 1].speaker):
                break
            text = sep.join(u.text for u in units[j:i])
            cost = best[j] + _cue_cost(units[j:i], text, seconds, min_s) + _cut_cost(units, i, rate, bool(sep))
            if cost < best[i]:
                best[i], back[i] = cost, j
    groups: list[list[_Unit]] = []
    i = n
    while i > 0:
        groups.append(list(units[back[i]:i]))
        i = back[i]
    return groups[::-1]


def _fill_lost_timing(spans: list[tuple[int, int]], utterance_end: int) -> list[tuple[int, int]]:
    """Spans without duration share the time up to the next timed span (or ``utterance_end``) evenly."""
    out = list(spans)
    i = 0
    while i < len(out):
        start, end = out[i]
        if end > start:
            i += 1
            continue
        j = i
        while j < len(out) and out[j][1] <= out[j][0] and out[j][0] <= start:
            j += 1
        target = max(out[j][0] if j < len(out) else utterance_end, start)
        n = j - i
        for k in range(n):
            out[i + k] = (start + (target - start) * k // n, start + (target - start) * (k + 1) // n)
        i = j
    return out


@dataclass(slots=True)
class _Draft:
    start_ms: int
    end_ms: int
    text: str
    speaker: str
    language: str


def _joinable(a: _Draft, b: _Draft, max_s: float) -> bool:
    sep = joiner(a.language)
    return (a.speaker == b.speaker and a.language == b.language and b.start_ms - a.end_ms <= JOIN_GAP_S * 1000
            and len(a.text) + len(sep) + len(b.text) <= cue_chars(a.language)
            and b.end_ms - a.start_ms <= max_s * 1000)


def _join_short(cues: list[_Draft], max_s: float, min_s: float) -> list[_Draft]:
    """Cues under ``min_s`` or without a letter joined with a neighbour where :func:`_joinable`."""
    out = list(cues)
    k = 0
    while k < len(out):
        c = out[k]
        if c.end_ms - c.start_ms >= min_s * 1000 and _has_word(c.text):
            k += 1
            continue
        if k > 0 and _joinable(out[k - 1], c, max_s):
            p = out[k - 1]
            out[k - 1] = _Draft(p.start_ms, c.end_ms, p.text + joiner(p.language) + c.text, p.speaker, p.language)
            del out[k]
            k -= 1
        elif k + 1 < len(out) and _joinable(c, out[k + 1], max_s):
            n = out[k + 1]
            out[k] = _Draft(c.start_ms, n.end_ms, c.text + joiner(c.language) + n.text, c.speaker, c.language)
            del out[k + 1]
        else:
            k += 1
    return out


def make_cues(finals: Iterable[AnyTranscript], max_s: float = MAX_CUE_S, max_chars: int | None = None,
              min_s: float = MIN_CUE_S, speakers: bool = False, end_ms: int | None = None) -> list[Cue]:
    """Cues of the final transcripts, in order, with non-decreasing times (see the module docstring).
    ``max_chars`` overrides the per-language character limit (:func:`cue_chars`); ``end_ms`` (the media's end)
    bounds how long the last cue is held on screen; ``min_s=0`` keeps every cut and every cue's own timing."""
    drafts: list[_Draft] = []
    last_end = 0
    for t in finals:
        if not t.final or not t.committed.strip():
            continue
        rate, lang = t.sample_rate, t.language
        limit = max_chars if max_chars is not None else cue_chars(lang)
        units = _units(t, speakers) if t.words else []
        if units:
            spans = [(g[0].start, g[-1].end, join_words([u.text for u in g], lang), g[0].speaker)
                     for g in _cut(units, rate, joiner(lang), limit, max_s, min_s)]
        else:
            who = str(getattr(t, "speaker", "") or "") if speakers else ""
            spans = [(t.start_sample, t.end_sample, t.committed.strip(), who)]
        for start, end, text, who in spans:
            s = max(_ms(start, rate), last_end)
            e = max(_ms(end, rate), s + 1)
            drafts.append(_Draft(s, e, text, who, lang))
            last_end = e
    if min_s > 0:
        drafts = _join_short(drafts, max_s, min_s)
    cues: list[Cue] = []
    for k, d in enumerate(drafts):
        room = drafts[k + 1].start_ms if k + 1 < len(drafts) else end_ms
        held = d.start_ms + round(min_s * 1000)
        e = max(d.end_ms, held if room is None else min(held, room))
        cues.append(Cue(d.start_ms, e, d.text, d.speaker))
    return cues


def timestamp(ms: int, decimal: str = ".") -> str:
    """``HH:MM:SS.mmm`` (``decimal`` "," for SRT) of a non-negative time in milliseconds."""
    if ms < 0:
        raise ValueError(f"a subtitle time must be >= 0 ms, got {ms}")
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, milli = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{milli:03d}"


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def format_vtt(cues: Sequence[Cue]) -> str:
    """A WebVTT document (a cue's speaker as a voice span, ``<v NAME>text``)."""
    parts = ["WEBVTT\n"]
    for c in cues:
        text = _vtt_escape(c.text)
        if c.speaker:
            text = f"<v {_vtt_escape(c.speaker)}>{text}"
        parts.append(f"\n{timestamp(c.start_ms)} --> {timestamp(c.end_ms)}\n{text}\n")
    return "".join(parts)


def format_srt(cues: Sequence[Cue]) -> str:
    """A SubRip document (cues numbered from 1; a cue's speaker as a ``NAME: `` prefix)."""
    return "".join(f"{i}\n{timestamp(c.start_ms, ',')} --> {timestamp(c.end_ms, ',')}\n"
                   f"{c.speaker + ': ' if c.speaker else ''}{c.text}\n\n"
                   for i, c in enumerate(cues, 1))
