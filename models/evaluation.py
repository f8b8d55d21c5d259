"""Frame-level speech/non-speech scoring of a VAD against reference speaker turns.

* :func:`read_rttm` reads the SPEAKER lines of an RTTM file as ``(speaker, start_s, end_s)``.
* :func:`segments_to_frames` turns time segments (any speaker) into a boolean frame labelling: frame
  ``i`` covers ``[i * frame_s, (i + 1) * frame_s)`` and is speech when its centre lies inside a
  segment. The reference labelling of a recording is the union of all speakers' turns.
* :func:`events_to_segments` / :func:`vad_frames` do the same for the SPEECH_END events of one stream
  (each SPEECH_END carries its whole segment; an unmatched SPEECH_START is ignored).
* :func:`speech_scores` counts true/false positives and misses of speech frames and gives precision,
  recall and F1 (:class:`SpeechScores`); several recordings are pooled by adding their scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kikimimi.engine.messages import SpeechEventKind, VadEvent

FRAME_S = 0.01
"""Default frame length of the labellings: 10 ms."""

Turn = tuple[str, float, float]
"""One speaker turn: (speaker, start_s, end_s)."""


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
