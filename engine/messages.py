"""Typed messages that travel along graph edges.

Every message is a frozen, slotted dataclass with a :class:`Header` that carries integer time: the
absolute sample index of the stream (for audio: the index of the first sample in the message) and the
monotonic nanoseconds at which the data was captured or produced. Float seconds never travel; wall
clock time appears only in logs.

Message classes register themselves by name with :func:`message_type` so the wire codec can rebuild
them on the far side of a process boundary without pickle.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np

from kikimimi.engine.errors import MessageError

NO_SAMPLE = -1
"""Header.sample_index of a message that is not tied to a position in an audio stream."""

ALL_STREAMS = "all"
"""Header.stream_id of a control message that addresses every stream of the receiving node."""

AUDIO_DTYPES = (np.dtype(np.int16), np.dtype(np.float32))

_REGISTRY: dict[str, type[Message]] = {}

M = TypeVar("M", bound="type[Message]")


def message_type(cls: M) -> M:
    """Class decorator: register a message class under its class name for the wire codec."""
    name = cls.__name__
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise MessageError(f"message type name {name!r} is already registered by {_REGISTRY[name]!r}")
    _REGISTRY[name] = cls
    cls.type_name = name
    return cls


def registered_types() -> dict[str, type[Message]]:
    """All registered message classes by name (a copy)."""
    return dict(_REGISTRY)


def lookup_type(name: str) -> type[Message] | None:
    """The registered message class called ``name``, or None."""
    return _REGISTRY.get(name)


@dataclass(frozen=True, slots=True)
class Header:
    """Identity and time of one message.

    stream_id: which stream (microphone, camera, file) the message belongs to.
    seq: per-(source node, output port) sequence number, starting at 0, no gaps unless a drop happened.
    sample_index: absolute sample index on the stream's audio clock, or NO_SAMPLE.
    t_ns: monotonic nanoseconds when the data was captured (sources) or produced (other nodes).
    source: name of the node that produced the message.
    """

    stream_id: str
    seq: int
    sample_index: int
    t_ns: int
    source: str

    def __post_init__(self) -> None:
        if not isinstance(self.stream_id, str) or not self.stream_id:
            raise MessageError(f"Header.stream_id must be a non-empty str, got {self.stream_id!r}")
        if not isinstance(self.source, str):
            raise MessageError(f"Header.source must be a str, got {self.source!r}")
        for name in ("seq", "sample_index", "t_ns"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise MessageError(f"Header.{name} must be an int, got {value!r}")
        if self.seq < 0:
            raise MessageError(f"Header.seq must be >= 0, got {self.seq}")
        if self.sample_index < NO_SAMPLE:
            raise MessageError(f"Header.sample_index must be >= 0 or NO_SAMPLE (-1), got {self.sample_index}")


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every message; subclasses add typed fields after ``header``."""

    type_name: ClassVar[str] = "Message"
    header: Header

    @property
    def is_control(self) -> bool:
        return False


class ControlKind(enum.Enum):
    """What a control message asks for."""

    START = "start"
    STOP = "stop"
    FLUSH = "flush"
    END_OF_STREAM = "end_of_stream"


@message_type
@dataclass(frozen=True, slots=True)
class Control(Message):
    """A control message: never dropped, never aged out, and ahead of data in every queue.

    START, STOP and FLUSH are delivered before any data that is already queued. END_OF_STREAM is the
    sender's promise that no more data follows on that edge, so it is delivered after the data it
    follows: delivering it early would lose data already accepted.
    """

    kind: ControlKind
    reason: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ControlKind):
            raise MessageError(f"Control.kind must be a ControlKind, got {self.kind!r}")

    @property
    def is_control(self) -> bool:
        return True


@message_type
@dataclass(frozen=True, slots=True, eq=False)
class AudioChunk(Message):
    """A block of audio samples, shape (n_samples, channels), int16 or float32 in [-1, 1].

    header.sample_index is the absolute index of the first sample; header.t_ns its capture time.
    """

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        s = self.samples
        if not isinstance(s, np.ndarray):
            raise MessageError(f"AudioChunk.samples must be a numpy array, got {type(s).__name__}")
        if s.dtype not in AUDIO_DTYPES:
            raise MessageError(f"AudioChunk.samples dtype {s.dtype} is not allowed; allowed: int16, float32")
        if s.ndim != 2 or s.shape[1] < 1:
            raise MessageError(
                f"AudioChunk.samples must have shape (n_samples, channels), got shape {s.shape}"
            )
        if not isinstance(self.sample_rate, (int, np.integer)) or self.sample_rate <= 0:
            raise MessageError(f"AudioChunk.sample_rate must be a positive int, got {self.sample_rate!r}")
        if self.header.sample_index < 0:
            raise MessageError("AudioChunk.header.sample_index must be the absolute index of its first sample")

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def end_index(self) -> int:
        """Absolute index one past the last sample."""
        return self.header.sample_index + self.n_samples

    @property
    def duration_ns(self) -> int:
        return self.n_samples * 1_000_000_000 // self.sample_rate


PIXEL_FORMATS = {"bgr24": 3, "rgb24": 3, "gray": 1}


@message_type
@dataclass(frozen=True, slots=True, eq=False)
class VideoFrame(Message):
    """One video frame, shape (height, width, channels) uint8.

    header.t_ns is the frame's presentation time on the stream clock; header.sample_index is the audio
    sample index at that instant (NO_SAMPLE when the stream has no audio clock).
    """

    image: np.ndarray
    pixel_format: str
    frame_index: int

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3:
            raise MessageError(
                "VideoFrame.image must be a uint8 array of shape (height, width, channels), got "
                f"{getattr(img, 'dtype', type(img).__name__)} {getattr(img, 'shape', '')}"
            )
        want = PIXEL_FORMATS.get(self.pixel_format)
        if want is None:
            raise MessageError(
                f"VideoFrame.pixel_format {self.pixel_format!r} is not allowed; allowed: {sorted(PIXEL_FORMATS)}"
            )
        if img.shape[2] != want:
            raise MessageError(
                f"VideoFrame with pixel_format {self.pixel_format!r} needs {want} channels, got {img.shape[2]}"
            )
        if self.frame_index < 0:
            raise MessageError(f"VideoFrame.frame_index must be >= 0, got {self.frame_index}")


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


FEATURE_KINDS = ("whisper_log10_mel", "kaldi_fbank")


@message_type
@dataclass(frozen=True, slots=True, eq=False)
class Features(Message):
    """Feature frames ``[start_frame, start_frame + n)`` of one stream, shape (n_frames, n_bins) float32.

    kind: ``whisper_log10_mel`` (Whisper's log10 power mel before its per-window normalization, which
    the recognizer applies to the window it decodes) or ``kaldi_fbank`` (natural-log mel energies).
    Frame ``i`` covers audio centred (Whisper) or starting (Kaldi) at sample ``i * hop`` of the stream;
    header.sample_index is the sample index of frame ``start_frame``'s position, on the stream's clock.
    """

    frames: np.ndarray
    kind: str
    start_frame: int
    hop: int
    sample_rate: int

    def __post_init__(self) -> None:
        f = self.frames
        if not isinstance(f, np.ndarray) or f.dtype != np.float32 or f.ndim != 2:
            raise MessageError(
                "Features.frames must be a float32 array of shape (n_frames, n_bins), got "
                f"{getattr(f, 'dtype', type(f).__name__)} {getattr(f, 'shape', '')}"
            )
        if self.kind not in FEATURE_KINDS:
            raise MessageError(f"Features.kind {self.kind!r} is not allowed; allowed: {', '.join(FEATURE_KINDS)}")
        if self.start_frame < 0:
            raise MessageError(f"Features.start_frame must be >= 0, got {self.start_frame}")
        if self.hop <= 0 or self.sample_rate <= 0:
            raise MessageError(f"Features.hop and sample_rate must be positive, got {self.hop}, {self.sample_rate}")

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def end_frame(self) -> int:
        return self.start_frame + self.n_frames


@dataclass(frozen=True, slots=True)
class Word:
    """One recognized word (or token-level unit) with its span on the stream's sample clock."""

    text: str
    start_sample: int
    end_sample: int
    confidence: float
    speaker: str = ""          # set by the fusion node from the speaker turns ("" = not labelled)


@message_type
@dataclass(frozen=True, slots=True)
class Transcript(Message):
    """One revision of an utterance's transcript.

    committed: the stable prefix; once published it never changes within the utterance.
    unstable: the tail that may still change. final: the utterance ended (endpoint); committed holds
    the whole final text and unstable is empty. start_sample/end_sample: the utterance's span on the
    stream's audio clock; words (final results) carry their own spans. language: ISO code ("en", "ja").
    speaker / speaker_score: who spoke (set by the fusion node from SpeakerTurn messages: an enrolled
    name, ``voice_N`` for an unknown voice of this session, ``unknown``; "" = no label yet) and the
    similarity behind it. A final whose words were said by several speakers labels each Word, and
    ``speaker`` is the one who said most of it. face_id / face_score: the visible face that spoke it
    (set by the fusion node from ActiveSpeaker messages; -1 = none known) and its mean speaking probability
    over the utterance.
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
    speaker: str = ""
    speaker_score: float = 0.0
    face_id: int = -1
    face_score: float = 0.0

    def __post_init__(self) -> None:
        if self.utterance_id < 0 or self.revision < 0:
            raise MessageError(
                f"Transcript utterance_id and revision must be >= 0, got {self.utterance_id}, {self.revision}"
            )
        if self.final and self.unstable:
            raise MessageError(f"a final Transcript has no unstable text, got {self.unstable!r}")
        if self.end_sample < self.start_sample:
            raise MessageError(f"Transcript end_sample {self.end_sample} is before start_sample {self.start_sample}")
        if self.sample_rate <= 0:
            raise MessageError(f"Transcript.sample_rate must be positive, got {self.sample_rate}")

    @property
    def text(self) -> str:
        """Committed and unstable text together."""
        return self.committed + self.unstable


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
