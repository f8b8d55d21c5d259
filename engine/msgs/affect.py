"""Affect family: how a person sounds or looks.

:class:`AffectLabel` is one estimate (a categorical emotion with its probability, or a dimension such
as arousal or valence with its value) from one modality. A
:class:`~kikimimi.engine.msgs.fused.LabeledTranscript` carries the labels of its utterance in
``affect``; it is empty until an affect model feeds the fusion node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kikimimi.engine.errors import MessageError

AFFECT_MODALITIES = ("voice", "face", "text", "fused")


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
