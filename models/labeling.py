"""Labelling a transcript revision with what else is known about its span: who spoke (speaker turns) and which
visible face spoke (active-speaker windows). The fusion node holds the turns and windows per stream and calls
these; they are pure functions of their arguments.
"""

from __future__ import annotations

import dataclasses
from collections import deque

from kikimimi.engine.msgs.fused import AnyTranscript, LabeledTranscript
from kikimimi.engine.msgs.speaker import SpeakerTurn
from kikimimi.engine.msgs.speech import Word
from kikimimi.engine.msgs.vision import NO_FACE, ActiveSpeaker


def current_turns(turns: deque[SpeakerTurn] | list[SpeakerTurn]) -> list[SpeakerTurn]:
    """Final turns, plus the provisional turns of utterance parts that have no final turn yet."""
    finals = {(t.utterance_id, t.part) for t in turns if t.final}
    latest: dict[tuple[int, int], SpeakerTurn] = {}
    for t in turns:
        key = (t.utterance_id, t.part)
        if t.final or key not in finals:
            latest[key] = t
    return list(latest.values())


def label(msg: LabeledTranscript, turns: deque[SpeakerTurn] | list[SpeakerTurn]) -> LabeledTranscript:
    """``msg`` with the speaker of most overlap (and its score) and, for words, the speaker holding each
    word's midpoint. Unchanged if no turn overlaps it."""
    cands = current_turns(turns)
    a, b = msg.start_sample, max(msg.end_sample, msg.start_sample + 1)
    best, best_overlap = None, 0
    for t in cands:
        ov = min(b, t.end_sample) - max(a, t.start_sample)
        if ov > best_overlap:
            best, best_overlap = t, ov
    if best is None:
        return msg
    words: tuple[Word, ...] = msg.words
    if words:
        labelled = []
        for w in words:
            mid = (w.start_sample + w.end_sample) // 2
            hold = [t for t in cands if t.start_sample <= mid < t.end_sample]
            who = max(hold, key=lambda t: t.final).speaker if hold else best.speaker
            labelled.append(dataclasses.replace(w, speaker=who))
        words = tuple(labelled)
    return dataclasses.replace(msg, speaker=best.speaker, speaker_score=best.score, words=words)


def window_ends_in(msg: AnyTranscript, active: deque[ActiveSpeaker]) -> list[ActiveSpeaker]:
    """The windows (and no-face frames) ending inside ``(start, end]`` of the transcript."""
    a, b = msg.start_sample, max(msg.end_sample, msg.start_sample + 1)
    return [m for m in active if a < m.end_sample <= b]


def has_evidence(msg: AnyTranscript, active: deque[ActiveSpeaker]) -> bool:
    """Whether any window (or a no-face frame) ends inside the transcript's span."""
    return bool(window_ends_in(msg, active))


def label_face(msg: LabeledTranscript, active: deque[ActiveSpeaker], threshold: float) -> LabeledTranscript:
    """``msg`` with the face of highest mean speaking probability over its span, if it reaches ``threshold``
    (else face_id -1); ``face_score`` is that mean either way. Unchanged if no window ends in the span."""
    inside = [m for m in window_ends_in(msg, active) if m.face_id != NO_FACE]
    if not inside:
        return msg
    sums: dict[int, list[float]] = {}
    for m in inside:
        sums.setdefault(m.face_id, []).append(m.probability)
    face, probs = max(sums.items(), key=lambda kv: sum(kv[1]) / len(kv[1]))
    score = sum(probs) / len(probs)
    return dataclasses.replace(msg, face_id=face if score >= threshold else NO_FACE, face_score=score)
