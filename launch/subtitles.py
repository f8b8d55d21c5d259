"""Final transcripts as text, JSON lines, WebVTT and SubRip: what ``kikimimi transcribe`` writes.

* :func:`file_text`: a file's whole final text, utterances joined with a space (for languages written
  without spaces, ``ja`` and ``zh``, with nothing).
* :func:`make_cues`: subtitle cues from final transcripts. One cue per utterance, split on word
  boundaries so that no cue lasts longer than ``max_s`` seconds or has more than ``max_chars``
  characters (a single word longer than that gets a cue of its own). A cue runs from its first word's
  start to its last word's end (cues whose words have no duration share the time up to the next
  timed cue, or the utterance's end, evenly); a final without words gives one cue over the
  utterance's span. Cue times never go backwards: a cue starts no earlier than the previous one
  ended and lasts at least 1 ms.
* :func:`format_vtt` / :func:`format_srt`: the documents, timestamps ``00:00:01.230`` (VTT) and
  ``00:00:01,230`` (SRT).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kikimimi.engine.msgs.fused import AnyTranscript
from kikimimi.engine.msgs.speech import Word

NO_SPACE_LANGUAGES = ("ja", "zh")
MAX_CUE_S = 7.0
MAX_CUE_CHARS = 42


@dataclass(frozen=True, slots=True)
class Cue:
    """One subtitle: start and end in milliseconds, and its text."""

    start_ms: int
    end_ms: int
    text: str


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


def _split(words: Sequence[Word], rate: int, language: str, max_s: float, max_chars: int) -> list[list[Word]]:
    groups: list[list[Word]] = []
    cur: list[Word] = []
    for w in words:
        if not w.text.strip():
            continue
        if cur:
            text = join_words([x.text for x in (*cur, w)], language)
            too_long = (w.end_sample - cur[0].start_sample) / rate > max_s or len(text) > max_chars
            if too_long:
                groups.append(cur)
                cur = []
        cur.append(w)
    if cur:
        groups.append(cur)
    return groups


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


def make_cues(finals: Iterable[AnyTranscript], max_s: float = MAX_CUE_S, max_chars: int = MAX_CUE_CHARS) -> list[Cue]:
    """Cues of the final transcripts, in order, with non-decreasing times (see the module docstring)."""
    cues: list[Cue] = []
    last_end = 0
    for t in finals:
        if not t.final or not t.committed.strip():
            continue
        rate = t.sample_rate
        if t.words:
            groups = _split(t.words, rate, t.language, max_s, max_chars)
            timed = _fill_lost_timing([(g[0].start_sample, g[-1].end_sample) for g in groups], t.end_sample)
            spans = [(a, b, join_words([w.text for w in g], t.language))
                     for (a, b), g in zip(timed, groups, strict=True)]
        else:
            spans = [(t.start_sample, t.end_sample, t.committed.strip())]
        for start, end, text in spans:
            s = max(_ms(start, rate), last_end)
            e = max(_ms(end, rate), s + 1)
            cues.append(Cue(s, e, text))
            last_end = e
    return cues


def timestamp(ms: int, decimal: str = ".") -> str:
    """``HH:MM:SS.mmm`` (``decimal`` "," for SRT) of a non-negative time in milliseconds."""
    if ms < 0:
        raise ValueError(f"a subtitle time must be >= 0 ms, got {ms}")
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, milli = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{milli:03d}"


def format_vtt(cues: Sequence[Cue]) -> str:
    """A WebVTT document."""
    parts = ["WEBVTT\n"]
    for c in cues:
        parts.append(f"\n{timestamp(c.start_ms)} --> {timestamp(c.end_ms)}\n{c.text}\n")
    return "".join(parts)


def format_srt(cues: Sequence[Cue]) -> str:
    """A SubRip document (cues numbered from 1)."""
    return "".join(f"{i}\n{timestamp(c.start_ms, ',')} --> {timestamp(c.end_ms, ',')}\n{c.text}\n\n"
                   for i, c in enumerate(cues, 1))
