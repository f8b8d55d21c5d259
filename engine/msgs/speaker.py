"""Speaker family: speaker embeddings and who spoke each part of an utterance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kikimimi.engine.errors import MessageError
from kikimimi.engine.messages import Message, message_type

EMBEDDING_KINDS = ("window", "utterance")


@message_type
@dataclass(frozen=True, slots=True, eq=False)
class SpeakerEmbedding(Message):
    """A speaker embedding of ``[start_sample, end_sample)`` of one stream.

    kind: ``window`` (one sliding window inside speech) or ``utterance`` (the whole utterance: the
    re-normalised mean of its windows). encoder: the encoder's id (embeddings of different encoders
    are not comparable). vector: float32 (dim,), L2-normalised, so a dot product is a cosine.
    """

    utterance_id: int
    kind: str
    start_sample: int
    end_sample: int
    sample_rate: int
    encoder: str
    vector: np.ndarray

    def __post_init__(self) -> None:
        v = self.vector
        if not isinstance(v, np.ndarray) or v.dtype != np.float32 or v.ndim != 1 or v.shape[0] == 0:
            raise MessageError("SpeakerEmbedding.vector must be a non-empty float32 array of shape (dim,), got "
                               f"{getattr(v, 'dtype', type(v).__name__)} {getattr(v, 'shape', '')}")
        if self.kind not in EMBEDDING_KINDS:
            raise MessageError(f"SpeakerEmbedding.kind {self.kind!r} is not allowed; allowed: "
                               f"{', '.join(EMBEDDING_KINDS)}")
        if self.utterance_id < 0 or self.start_sample < 0 or self.end_sample < self.start_sample:
            raise MessageError(f"SpeakerEmbedding utterance {self.utterance_id}, span [{self.start_sample}, "
                               f"{self.end_sample}): need utterance_id >= 0 and 0 <= start <= end")
        if self.sample_rate <= 0:
            raise MessageError(f"SpeakerEmbedding.sample_rate must be positive, got {self.sample_rate}")


UNKNOWN_SPEAKER = "unknown"


@message_type
@dataclass(frozen=True, slots=True)
class SpeakerTurn(Message):
    """Who spoke ``[start_sample, end_sample)`` of utterance ``utterance_id`` of one stream.

    speaker: an enrolled name (``enrolled`` true), ``voice_N`` (an unknown voice, clustered into a
    stable anonymous id for the session) or ``unknown`` (too little speech to tell). score: the cosine
    similarity to that speaker (enrolled centroid or cluster). part: the turn's index within the
    utterance (a speaker change inside an utterance splits it into parts 0, 1, ...). final: false for
    a provisional label while the utterance goes on, true once the utterance has ended; a final
    turn replaces the provisional ones of its utterance.
    """

    utterance_id: int
    part: int
    speaker: str
    score: float
    enrolled: bool
    final: bool
    start_sample: int
    end_sample: int
    sample_rate: int

    def __post_init__(self) -> None:
        if self.utterance_id < 0 or self.part < 0:
            raise MessageError(f"SpeakerTurn utterance_id and part must be >= 0, got {self.utterance_id}, "
                               f"{self.part}")
        if not self.speaker:
            raise MessageError("SpeakerTurn.speaker must not be empty")
        if self.start_sample < 0 or self.end_sample < self.start_sample:
            raise MessageError(f"SpeakerTurn span [{self.start_sample}, {self.end_sample}) is not allowed; "
                               "need 0 <= start <= end")
        if self.sample_rate <= 0:
            raise MessageError(f"SpeakerTurn.sample_rate must be positive, got {self.sample_rate}")
