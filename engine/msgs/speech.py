"""Speech family: voice activity events and the recognizer's transcripts."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kikimimi.engine.errors import MessageError
from kikimimi.engine.messages import Message, message_type

if TYPE_CHECKING:
    from kikimimi.engine.msgs.fused import LabeledTranscript

class SpeechEventKind(enum.Enum):
    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"
    PROGRESS = "progress"


@message_type
@dataclass(frozen=True, slots=True)
class VadEvent(Message):
    """Start or end of a speech segment, or the detector's progress, in absolute samples on the stream's
    audio clock.

    SPEECH_START: start_sample is where speech began, end_sample is NO_SAMPLE.
    SPEECH_END: start_sample and end_sample (exclusive) bound the whole segment.
    PROGRESS: a watermark, sent periodically: every event decided at or before sample start_sample
    (= header.sample_index) has been sent; end_sample is NO_SAMPLE and probability is the detector's
    latest speech probability. Consumers that hold other inputs in step with the VAD use it; others
    ignore it.
    probability: the detector's confidence that the segment is speech, in [0, 1].
    header.sample_index is the sample at which the decision was made.
    """

    kind: SpeechEventKind
    start_sample: int
    end_sample: int
    sample_rate: int
    probability: float

    def __post_init__(self) -> None:
        if not isinstance(self.kind, SpeechEventKind):
            raise MessageError(f"VadEvent.kind must be a SpeechEventKind, got {self.kind!r}")
        if self.start_sample < 0:
            raise MessageError(f"VadEvent.start_sample must be >= 0, got {self.start_sample}")
        if self.kind is SpeechEventKind.SPEECH_END and self.end_sample < self.start_sample:
            raise MessageError(
                f"VadEvent end_sample {self.end_sample} is before start_sample {self.start_sample}"
            )
        if not 0.0 <= self.probability <= 1.0:
            raise MessageError(f"VadEvent.probability must be in [0, 1], got {self.probability}")
        if self.sample_rate <= 0:
            raise MessageError(f"VadEvent.sample_rate must be positive, got {self.sample_rate}")

    @property
    def start_ns(self) -> int:
        return self.start_sample * 1_000_000_000 // self.sample_rate

    @property
    def end_ns(self) -> int:
        return self.end_sample * 1_000_000_000 // self.sample_rate



@dataclass(frozen=True, slots=True)
class Word:
    """One recognized word (or token-level unit) with its span on the stream's sample clock."""

    text: str
    start_sample: int
    end_sample: int
    confidence: float
    speaker: str = ""          # who said it: set by the fusion node ("" = not labelled)


@message_type
@dataclass(frozen=True, slots=True)
class Transcript(Message):
    """One revision of an utterance's transcript.

    committed: the stable prefix; later partial revisions of the utterance never change it.
    unstable: the tail that may still change. final: the utterance ended (endpoint); committed holds
    the whole final text and unstable is empty. The final is decoded again over the whole utterance
    (the Whisper backend's ``redecode_final``, on by default), so it may correct words that partials
    committed: a display replaces the utterance's text with the final's. start_sample/end_sample: the
    utterance's span on the stream's audio clock; words (final results) carry their own spans.
    language: ISO code ("en", "ja"). Who spoke it and how is the fusion node's to say: it sends a
    :class:`~kikimimi.engine.msgs.fused.LabeledTranscript` for each revision.
    """

    utterance_id: int
    revision: int
    committed: str
    unstable: str
    final: bool
    start_sample: int
    end_sample: int
    sample_rate: int
    language: str
    words: tuple[Word, ...] = ()

    def __post_init__(self) -> None:
        check_revision(self)

    @property
    def text(self) -> str:
        """Committed and unstable text together."""
        return self.committed + self.unstable


def check_revision(t: Transcript | LabeledTranscript) -> None:
    """The checks every transcript revision passes, recognized or labelled; MessageError names the bad value."""
    name = type(t).__name__
    if t.utterance_id < 0 or t.revision < 0:
        raise MessageError(f"{name} utterance_id and revision must be >= 0, got {t.utterance_id}, {t.revision}")
    if t.final and t.unstable:
        raise MessageError(f"a final {name} has no unstable text, got {t.unstable!r}")
    if t.end_sample < t.start_sample:
        raise MessageError(f"{name} end_sample {t.end_sample} is before start_sample {t.start_sample}")
    if t.sample_rate <= 0:
        raise MessageError(f"{name}.sample_rate must be positive, got {t.sample_rate}")
