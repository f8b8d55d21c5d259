"""Affect family: how a person sounds or looks.

:class:`AffectLabel` is one estimate (a categorical emotion with its probability, or a dimension such
as arousal or valence with its value) from one modality. A
:class:`~kikimimi.engine.msgs.fused.LabeledTranscript` carries the labels of its utterance in
``affect``; it is empty until an affect model feeds the fusion node. :class:`Affect` is what an affect model
says of one stretch of one stream: a label with every class's probability, arousal and valence, provisional
while the utterance goes on and final at its end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kikimimi.engine.errors import MessageError
from kikimimi.engine.messages import Message, message_type

AFFECT_MODALITIES = ("voice", "face", "text", "fused")
NO_FACE_ID = -1


@dataclass(frozen=True, slots=True)
class AffectLabel:
    """One affect estimate: ``name`` (an emotion such as ``happy``, or a dimension such as ``arousal``),
    ``value`` (a probability in [0, 1] for an emotion; the dimension's value otherwise) and the
    ``modality`` it came from (one of :data:`AFFECT_MODALITIES`)."""

    name: str
    value: float
    modality: str

    def __post_init__(self) -> None:
        if not self.name:
            raise MessageError("AffectLabel.name must not be empty")
        if not math.isfinite(self.value):
            raise MessageError(f"AffectLabel.value must be finite, got {self.value}")
        if self.modality not in AFFECT_MODALITIES:
            raise MessageError(f"AffectLabel.modality {self.modality!r} is not allowed; allowed: "
                               f"{', '.join(AFFECT_MODALITIES)}")


@message_type
@dataclass(frozen=True, slots=True, eq=False)
class Affect(Message):
    """How ``[start_sample, end_sample)`` of utterance ``utterance_id`` of one stream sounds (or looks).

    source: ``voice``, ``face`` or ``fused`` (:data:`AFFECT_MODALITIES`). label: the most probable of
    ``classes``; probabilities: float32 (len(classes),), summing to 1. arousal and valence: in [-1, 1]
    (calm .. excited, negative .. positive). confidence: in [0, 1] (the label's probability, or less where
    the model knows its input is short or unlike its training). model: the model's id (labels of different
    models are not comparable). final: false for a provisional estimate while the utterance goes on, true
    for the one at its end. face_id: the tracked face it is about (source ``face``), else -1.
    """

    utterance_id: int
    source: str
    start_sample: int
    end_sample: int
    sample_rate: int
    label: str
    classes: tuple[str, ...]
    probabilities: np.ndarray
    arousal: float
    valence: float
    confidence: float
    model: str
    final: bool
    face_id: int = NO_FACE_ID

    def __post_init__(self) -> None:
        p = self.probabilities
        if not isinstance(p, np.ndarray) or p.dtype != np.float32 or p.ndim != 1 or p.shape[0] != len(self.classes):
            raise MessageError(f"Affect.probabilities must be float32 of shape ({len(self.classes)},) (one per class), "
                               f"got {getattr(p, 'dtype', type(p).__name__)} {getattr(p, 'shape', '')}")
        if not self.classes or self.label not in self.classes:
            raise MessageError(f"Affect.label {self.label!r} is not allowed; allowed: one of classes "
                               f"{', '.join(self.classes) or '(none)'}")
        if self.source not in AFFECT_MODALITIES:
            raise MessageError(f"Affect.source {self.source!r} is not allowed; allowed: {', '.join(AFFECT_MODALITIES)}")
        for name in ("arousal", "valence"):
            v = getattr(self, name)
            if not math.isfinite(v) or not -1.0 <= v <= 1.0:
                raise MessageError(f"Affect.{name} must be in [-1, 1], got {v}")
        if not math.isfinite(self.confidence) or not 0.0 <= self.confidence <= 1.0:
            raise MessageError(f"Affect.confidence must be in [0, 1], got {self.confidence}")
        if self.utterance_id < 0 or self.start_sample < 0 or self.end_sample < self.start_sample:
            raise MessageError(f"Affect utterance {self.utterance_id}, span [{self.start_sample}, {self.end_sample}): "
                               "need utterance_id >= 0 and 0 <= start <= end")
        if self.sample_rate <= 0:
            raise MessageError(f"Affect.sample_rate must be positive, got {self.sample_rate}")
