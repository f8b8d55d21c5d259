"""Results of the streaming speaker model, in the order they happen: window embeddings, utterance
embeddings and turns (who spoke each part of an utterance, provisional, then final). Sample indices
are those of the stream; vectors are float32 and of unit length, so a dot product is a cosine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True, eq=False)
class WindowEmbedding:
    """The embedding (float32, unit length) of window ``[start, end)`` of utterance ``utterance``."""

    utterance: int
    start: int
    end: int
    vector: np.ndarray


@dataclass(frozen=True, slots=True, eq=False)
class UtteranceEmbedding:
    """The embedding of utterance ``utterance`` ``[start, end)``: the normalised mean of its windows'."""

    utterance: int
    start: int
    end: int
    vector: np.ndarray


@dataclass(frozen=True, slots=True)
class Turn:
    """Who spoke part ``part`` ``[start, end)`` of utterance ``utterance``: ``speaker`` (an enrolled name
    when ``enrolled``, ``voice_N`` or ``unknown``) with ``score`` (see
    :class:`~kikimimi.models.speaker.identify.Identity`); ``final`` false for a provisional label.
    ``at``: the sample it was decided at (the end of the window or of the part, before ``end`` is
    raised to ``start`` where a part closes before its own start)."""

    utterance: int
    part: int
    speaker: str
    score: float
    enrolled: bool
    final: bool
    start: int
    end: int
    at: int


SpeakerResult = WindowEmbedding | UtteranceEmbedding | Turn


