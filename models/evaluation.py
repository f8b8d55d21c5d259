"""Frame-level speech/non-speech scoring of a VAD against reference speaker turns.

* :func:`read_rttm` reads the SPEAKER lines of an RTTM file as ``(speaker, start_s, end_s)``.
* :func:`segments_to_frames` turns time segments (any speaker) into a boolean frame labelling: frame
  ``i`` covers ``[i * frame_s, (i + 1) * frame_s)`` and is speech when its centre lies inside a
  segment. The reference labelling of a recording is the union of all speakers' turns.
* :func:`events_to_segments` / :func:`vad_frames` do the same for the SPEECH_END events of one stream
  (each SPEECH_END carries its whole segment; an unmatched SPEECH_START is ignored).
* :func:`speech_scores` counts true/false positives and misses of speech frames and gives precision,
  recall and F1 (:class:`SpeechScores`); several recordings are pooled by adding their scores.
* :func:`der` gives the diarization error rate of hypothesis speaker turns against reference turns
  (NIST md-eval definition, exact segment arithmetic, optimal one-to-one speaker mapping) as a
  :class:`DerScore`; :func:`merge_turns` joins each speaker's turns separated by short gaps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent

FRAME_S = 0.01
"""Default frame length of the labellings: 10 ms."""

Turn = tuple[str, float, float]
"""One speaker turn: (speaker, start_s, end_s)."""

Interval = tuple[float, float]
"""A time interval (start_s, end_s)."""


def read_rttm(path: str | Path) -> list[Turn]:
    """The SPEAKER turns of an RTTM file as (speaker, start_s, end_s), in file order.

    RTTM fields: type, file, channel, onset, duration, ortho, stype, name, conf, slat. Lines of other
    types and blank or ``#`` lines are skipped; a malformed SPEAKER line raises ValueError naming it.
    """
    turns: list[Turn] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0].startswith("#") or fields[0] != "SPEAKER":
                continue
            where = f"{path}:{lineno}"
            if len(fields) < 8:
                raise ValueError(f"{where}: SPEAKER line has {len(fields)} fields, expected at least 8: {line!r}")
            try:
                onset, duration = float(fields[3]), float(fields[4])
            except ValueError:
                raise ValueError(f"{where}: onset {fields[3]!r} / duration {fields[4]!r} are not numbers") from None
            if not (onset >= 0 and duration >= 0):
                raise ValueError(f"{where}: onset {onset} and duration {duration} must be >= 0")
            turns.append((fields[7], onset, onset + duration))
    return turns


def n_frames_for(duration_s: float, frame_s: float = FRAME_S) -> int:
    """Number of whole-or-partial frames covering ``duration_s`` seconds."""
    if not duration_s >= 0 or not frame_s > 0:
        raise ValueError(f"duration_s must be >= 0 and frame_s > 0, got {duration_s!r}, {frame_s!r}")
    return int(np.ceil(round(duration_s / frame_s, 6)))


def segments_to_frames(segments: Iterable[tuple[float, float]], n_frames: int,
                       frame_s: float = FRAME_S) -> np.ndarray:
    """Boolean labelling of ``n_frames`` frames: True where the frame's centre is inside a segment
    ``[start_s, end_s)``. Segments may overlap (their union counts) and may run past the end."""
    labels = np.zeros(n_frames, bool)
    for start, end in segments:
        # centre (i + 0.5) * frame_s in [start, end)  <=>  i in [start/f - 0.5, end/f - 0.5)
        a = max(0, int(np.ceil(round(start / frame_s - 0.5, 9))))
        b = min(n_frames, int(np.ceil(round(end / frame_s - 0.5, 9))))
        if b > a:
            labels[a:b] = True
    return labels


def rttm_frames(turns: Iterable[Turn], n_frames: int, frame_s: float = FRAME_S) -> np.ndarray:
    """Reference speech labelling: the union of every speaker's turns."""
    return segments_to_frames(((s, e) for _, s, e in turns), n_frames, frame_s)


def events_to_segments(events: Iterable[VadEvent], stream_id: str | None = None) -> list[tuple[float, float]]:
    """(start_s, end_s) of each SPEECH_END event (of ``stream_id``, or of every stream when None)."""
    out = []
    for e in events:
        if e.kind is SpeechEventKind.SPEECH_END and (stream_id is None or e.header.stream_id == stream_id):
            out.append((e.start_sample / e.sample_rate, e.end_sample / e.sample_rate))
    return out


def vad_frames(events: Iterable[VadEvent], n_frames: int, stream_id: str | None = None,
               frame_s: float = FRAME_S) -> np.ndarray:
    """Hypothesis speech labelling from the SPEECH_END events of one stream."""
    return segments_to_frames(events_to_segments(events, stream_id), n_frames, frame_s)


@dataclass(frozen=True, slots=True)
class SpeechScores:
    """Counts of speech frames: hypothesis and reference both speech (tp), hypothesis only (fp),
    reference only (fn), neither (tn). Add two to pool recordings."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        """tp / (tp + fp); 1.0 when the hypothesis has no speech at all."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """tp / (tp + fn); 1.0 when the reference has no speech at all."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        """2 tp / (2 tp + fp + fn); 1.0 when neither side has speech."""
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 1.0

    def __add__(self, other: SpeechScores) -> SpeechScores:
        return SpeechScores(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)


def speech_scores(reference: np.ndarray, hypothesis: np.ndarray) -> SpeechScores:
    """Frame counts of two boolean labellings of the same frames."""
    ref = np.asarray(reference, bool)
    hyp = np.asarray(hypothesis, bool)
    if ref.shape != hyp.shape or ref.ndim != 1:
        raise ValueError(f"labellings must be 1-D and the same length, got shapes {ref.shape} and {hyp.shape}")
    tp = int(np.count_nonzero(ref & hyp))
    fp = int(np.count_nonzero(hyp & ~ref))
    fn = int(np.count_nonzero(ref & ~hyp))
    return SpeechScores(tp, fp, fn, int(ref.size) - tp - fp - fn)


def pooled(scores: Sequence[SpeechScores]) -> SpeechScores:
    """The sum of several recordings' scores (micro-average)."""
    total = SpeechScores(0, 0, 0, 0)
    for s in scores:
        total = total + s
    return total


def merge_turns(turns: Iterable[Turn], gap_s: float = 0.0) -> list[Turn]:
    """Each speaker's turns with overlapping ones, and ones separated by at most ``gap_s`` seconds, joined
    into one; other speakers' turns in between do not prevent the join. Sorted by (start, end, speaker)."""
    if not gap_s >= 0:
        raise ValueError(f"gap_s must be >= 0, got {gap_s!r}")
    by_speaker: dict[str, list[Interval]] = {}
    for speaker, start, end in turns:
        by_speaker.setdefault(speaker, []).append((start, end))
    merged = [(spk, s, e) for spk, segs in by_speaker.items() for s, e in _union(segs, gap_s)]
    return sorted(merged, key=lambda t: (t[1], t[2], t[0]))


def _union(intervals: Iterable[Interval], gap_s: float = 0.0) -> list[Interval]:
    """Sorted disjoint intervals covering ``intervals``, joining ones at most ``gap_s`` apart; empty ones dropped."""
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and start <= out[-1][1] + gap_s:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _subtract(base: Sequence[Interval], removed: Sequence[Interval]) -> list[Interval]:
    """The parts of disjoint sorted ``base`` intervals outside disjoint sorted ``removed`` intervals."""
    out: list[Interval] = []
    for start, end in base:
        for r_start, r_end in removed:
            if r_end <= start or r_start >= end:
                continue
            if r_start > start:
                out.append((start, r_start))
            start = max(start, r_end)
        if end > start:
            out.append((start, end))
    return out


def _active(intervals: Sequence[Interval], times: np.ndarray) -> np.ndarray:
    """Boolean mask of ``times`` lying inside one of the disjoint sorted ``intervals`` [start, end)."""
    if not intervals:
        return np.zeros(times.shape, bool)
    starts, ends = np.array(intervals, float).T
    idx = np.searchsorted(starts, times, side="right") - 1
    return (idx >= 0) & (times < ends[np.maximum(idx, 0)])


def _speaker_intervals(turns: Sequence[Turn], what: str) -> dict[str, list[Interval]]:
    """Each speaker's turns as sorted disjoint intervals (a speaker overlapping itself counts once)."""
    by_speaker: dict[str, list[Interval]] = {}
    for speaker, start, end in turns:
        if not end >= start:
            raise ValueError(f"{what} turn {(speaker, start, end)!r} ends before it starts")
        by_speaker.setdefault(speaker, []).append((start, end))
    return {spk: merged for spk, segs in by_speaker.items() if (merged := _union(segs))}


def _scored_regions(reference: Sequence[Turn], ref: dict[str, list[Interval]], collar_s: float,
                    skip_overlap: bool, uem: Interval | None) -> list[Interval]:
    """The evaluated time: ``uem`` (or everything) less ±collar_s around each reference turn's start and end
    and, with ``skip_overlap``, less the regions where two or more reference speakers talk."""
    if uem is None:
        uem = (-np.inf, np.inf)
    elif not uem[1] >= uem[0]:
        raise ValueError(f"uem {uem!r} ends before it starts")
    removed = [(t - collar_s, t + collar_s) for _, s, e in reference for t in (s, e)] if collar_s > 0 else []
    if skip_overlap:
        edges = np.unique([t for segs in ref.values() for seg in segs for t in seg])
        if edges.size > 1:
            mids = (edges[:-1] + edges[1:]) / 2
            n_ref = sum(_active(segs, mids).astype(int) for segs in ref.values())
            removed += [(float(a), float(b)) for a, b, n in zip(edges[:-1], edges[1:], n_ref, strict=True) if n >= 2]
    return _subtract([uem], _union(removed))


def _activity(speakers: dict[str, list[Interval]], times: np.ndarray) -> np.ndarray:
    """(speaker, time) matrix of 1.0 where the speaker talks at the time, 0.0 elsewhere; rows in dict order."""
    act = np.zeros((len(speakers), times.size))
    for i, segs in enumerate(speakers.values()):
        act[i] = _active(segs, times)
    return act


def _optimal_mapping(overlap: np.ndarray, hyp_names: Sequence[str], ref_names: Sequence[str]) -> dict[str, str]:
    """Hypothesis -> reference speaker mapping, one-to-one, maximising the total ``overlap[h, r]`` (seconds);
    pairs that do not overlap at all are left unmapped."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(overlap, maximize=True)
    return {hyp_names[h]: ref_names[r] for h, r in zip(rows, cols, strict=True) if overlap[h, r] > 0}


@dataclass(frozen=True, slots=True)
class DerScore:
    """Diarization error components in seconds: scored reference speech (``total``, a region with n reference
    speakers counting n times), false alarm, missed speech and speaker confusion, and the optimal
    hypothesis -> reference speaker ``mapping``. Add two to pool recordings (the sum has an empty mapping,
    since speaker labels belong to one recording)."""

    total: float
    false_alarm: float
    missed: float
    confusion: float
    mapping: dict[str, str] = field(default_factory=dict)

    @property
    def error(self) -> float:
        """false_alarm + missed + confusion, in seconds."""
        return self.false_alarm + self.missed + self.confusion

    @property
    def der(self) -> float:
        """error / total; when there is no reference speech, 0.0 without errors and 1.0 with (as pyannote)."""
        if self.total > 0:
            return self.error / self.total
        return 1.0 if self.error > 0 else 0.0

    def __add__(self, other: DerScore) -> DerScore:
        return DerScore(self.total + other.total, self.false_alarm + other.false_alarm,
                        self.missed + other.missed, self.confusion + other.confusion)


def der(reference: Sequence[Turn], hypothesis: Sequence[Turn], collar_s: float = 0.25, skip_overlap: bool = False,
        uem: tuple[float, float] | None = None) -> DerScore:
    """Diarization error rate of ``hypothesis`` turns against ``reference`` turns (NIST md-eval definition).

    Scored time is ``uem`` (start_s, end_s), or all time when None, less ``collar_s`` seconds on EACH side of
    every reference turn's start and end (md-eval ``-c collar_s``; pyannote.metrics' ``collar`` is the total
    width, so ``collar_s=0.25`` here equals pyannote ``collar=0.5``), less overlapped reference speech when
    ``skip_overlap``. Every boundary of every turn and scored region cuts the time into elementary segments;
    in each, with n_ref / n_hyp speakers talking and n_correct reference speakers whose mapped hypothesis
    speaker also talks: missed = max(0, n_ref - n_hyp), false alarm = max(0, n_hyp - n_ref), confusion =
    min(n_ref, n_hyp) - n_correct, total = n_ref, each times the segment's duration. The speaker mapping is
    the one-to-one hypothesis -> reference mapping maximising the total scored overlap. A speaker's own
    overlapping turns count once.
    """
    if not collar_s >= 0:
        raise ValueError(f"collar_s must be >= 0, got {collar_s!r}")
    ref = _speaker_intervals(reference, "reference")
    hyp = _speaker_intervals(hypothesis, "hypothesis")
    scored = _scored_regions(reference, ref, collar_s, skip_overlap, uem)
    edges = np.unique([t for side in (ref, hyp) for segs in side.values() for seg in segs for t in seg]
                      + [t for seg in scored for t in seg if np.isfinite(t)])
    if edges.size < 2:
        return DerScore(0.0, 0.0, 0.0, 0.0)
    mids = (edges[:-1] + edges[1:]) / 2
    dur = np.diff(edges) * _active(scored, mids)
    r_act, h_act = _activity(ref, mids), _activity(hyp, mids)
    mapping = _optimal_mapping((h_act * dur) @ r_act.T, list(hyp), list(ref))
    n_ref, n_hyp = r_act.sum(0), h_act.sum(0)
    h_row, r_row = {spk: i for i, spk in enumerate(hyp)}, {spk: i for i, spk in enumerate(ref)}
    n_correct = np.zeros_like(dur)
    for h, r in mapping.items():
        n_correct += h_act[h_row[h]] * r_act[r_row[r]]
    return DerScore(total=float(dur @ n_ref),
                    false_alarm=float(dur @ np.maximum(0, n_hyp - n_ref)),
                    missed=float(dur @ np.maximum(0, n_ref - n_hyp)),
                    confusion=float(dur @ (np.minimum(n_ref, n_hyp) - n_correct)),
                    mapping=mapping)
