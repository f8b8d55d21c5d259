"""The core of every message: :class:`Header`, :class:`Message`, :class:`Control`, and the table of
message types the wire codec can rebuild.

Every message is a frozen, slotted dataclass with a :class:`Header` that carries integer time: the
absolute sample index of the stream (for audio: the index of the first sample in the message) and the
monotonic nanoseconds at which the data was captured or produced. Float seconds never travel; wall
clock time appears only in logs.

The engine core (queues, wire codec, runners, transports) depends on this module alone. The message
types themselves live by family in :mod:`kikimimi.engine.msgs` (audio, speech, vision, speaker,
affect, fused). :func:`message_type` names a class for the wire; :func:`register_types` is the explicit
step that lets the codec rebuild it: the runners register the types on every port of the graph they
run, and :func:`kikimimi.engine.msgs.builtin_types` lists the built-in ones. Importing a module registers
nothing.

The old names (``from kikimimi.engine.messages import AudioChunk``) still resolve, to the family
module that defines them.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from kikimimi.engine.errors import MessageError

NO_SAMPLE = -1
"""Header.sample_index of a message that is not tied to a position in an audio stream."""

ALL_STREAMS = "all"
"""Header.stream_id of a control message that addresses every stream of the receiving node."""

_REGISTRY: dict[str, type[Message]] = {}

M = TypeVar("M", bound="type[Message]")


def message_type(cls: M) -> M:
    """Class decorator: name a message class (``type_name``, its class name) for the wire codec.

    Naming registers nothing: :func:`register_types` does that."""
    cls.type_name = cls.__name__
    cls.wire_type = True
    return cls


def register_types(types: Iterable[type[Message]]) -> None:
    """Let the wire codec rebuild ``types`` (classes decorated with :func:`message_type`).

    Registering a class again is a no-op; a different class under a name already taken raises
    MessageError naming both."""
    for cls in types:
        if not getattr(cls, "wire_type", False) or cls.__dict__.get("type_name") != cls.__name__:
            raise MessageError(f"{cls!r} is not a message type; decorate it with @message_type")
        name = cls.type_name
        have = _REGISTRY.get(name)
        if have is not None and have is not cls:
            raise MessageError(f"message type name {name!r} is already registered by {have!r}; cannot "
                               f"register {cls!r}")
        _REGISTRY[name] = cls


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
    wire_type: ClassVar[bool] = False
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



# Where the message types that used to live here are now (old imports keep working).
_MOVED = {
    "kikimimi.engine.msgs.audio": ("AUDIO_DTYPES", "AudioChunk", "FEATURE_KINDS", "Features"),
    "kikimimi.engine.msgs.vision": ("PIXEL_FORMATS", "VideoFrame"),
    "kikimimi.engine.msgs.speech": ("SpeechEventKind", "VadEvent", "Word", "Transcript"),
    "kikimimi.engine.msgs.speaker": ("EMBEDDING_KINDS", "SpeakerEmbedding", "UNKNOWN_SPEAKER", "SpeakerTurn"),
}
_WHERE = {name: module for module, names in _MOVED.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
