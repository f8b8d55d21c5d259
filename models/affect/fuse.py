"""Affect labels for a transcript: the voice (and face) estimates over its span, and a fused one.

:func:`span_affect` merges the Affect messages of one source that overlap a span (an utterance of the
recognizer can hold several VAD utterances, each with its own estimate): finals only when there are any, their
probabilities averaged with weights equal to their overlap with the span. :func:`affect_labels` turns the voice
and face estimates into the transcript's :class:`~kikimimi.engine.msgs.affect.AffectLabel` tuple: per modality
its label with its probability, then ``arousal`` and ``valence``; then the ``fused`` label, arousal and valence
(the mean of the modalities present, over a common set of classes: calm counts as neutral, the face model's
``fear`` / ``surprise`` as ``fearful`` / ``surprised``). Which modalities a fused label rests on is what the
tuple holds besides it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from kikimimi.engine.msgs.affect import NO_FACE_ID, Affect, AffectLabel
from kikimimi.models.affect.labels import arousal_valence

COMMON = {"calm": "neutral", "fear": "fearful", "surprise": "surprised"}
"""Class names mapped onto the fused set (others keep their name)."""


@dataclass(frozen=True, slots=True)
class SpanAffect:
    """One source's estimate over a span: classes, probabilities, label, confidence, arousal, valence."""

    source: str
    classes: tuple[str, ...]
    probabilities: np.ndarray
    label: str
    confidence: float
    arousal: float
    valence: float


def span_affect(affects: Iterable[Affect], start: int, end: int, source: str = "voice",
                face_id: int = NO_FACE_ID) -> SpanAffect | None:
    """The estimate of ``source`` (and face ``face_id`` for faces) over ``[start, end)``, or None if none overlaps."""
    hits = [(min(end, a.end_sample) - max(start, a.start_sample), a) for a in affects
            if a.source == source and (source != "face" or a.face_id == face_id)]
    hits = [(w, a) for w, a in hits if w > 0 or (w == 0 and start == end)]
    if not hits:
        return None
    finals = [(w, a) for w, a in hits if a.final]
    if finals:
        hits = finals
    else:   # provisional only: the newest estimate of each utterance
        newest: dict[int, tuple[int, Affect]] = {}
        for w, a in hits:
            if a.utterance_id not in newest or a.end_sample >= newest[a.utterance_id][1].end_sample:
                newest[a.utterance_id] = (w, a)
        hits = list(newest.values())
    classes = max(hits, key=lambda h: h[0])[1].classes
    same = [(max(w, 1), a) for w, a in hits if a.classes == classes]
    weights = np.array([w for w, _ in same], np.float64)
    p = (np.stack([a.probabilities for _, a in same]).astype(np.float64) * weights[:, None]).sum(0) / weights.sum()
    k = int(np.argmax(p))
    a, v = arousal_valence(classes, p)
    return SpanAffect(source, classes, p.astype(np.float32), classes[k], float(p[k]), a, v)


def _common(e: SpanAffect) -> dict[str, float]:
    out: dict[str, float] = {}
    for c, p in zip(e.classes, e.probabilities.tolist(), strict=True):
        name = COMMON.get(c, c)
        out[name] = out.get(name, 0.0) + p
    return out


def affect_labels(voice: SpanAffect | None, face: SpanAffect | None = None) -> tuple[AffectLabel, ...]:
    """The labels of a transcript from its voice and face estimates (see the module docstring); () if neither."""
    present = [e for e in (voice, face) if e is not None]
    if not present:
        return ()
    labels: list[AffectLabel] = []
    for e in present:
        labels += [AffectLabel(e.label, e.confidence, e.source), AffectLabel("arousal", e.arousal, e.source),
                   AffectLabel("valence", e.valence, e.source)]
    mixed: dict[str, float] = {}
    for e in present:
        for c, p in _common(e).items():
            mixed[c] = mixed.get(c, 0.0) + p / len(present)
    best = max(mixed, key=lambda c: mixed[c])
    arousal = sum(e.arousal for e in present) / len(present)
    valence = sum(e.valence for e in present) / len(present)
    return (*labels, AffectLabel(best, mixed[best], "fused"), AffectLabel("arousal", arousal, "fused"),
            AffectLabel("valence", valence, "fused"))
