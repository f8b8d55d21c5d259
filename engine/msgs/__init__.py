"""The message types, by family: one module each, imported only where used.

=========  ==============================================================
``audio``  AudioChunk, Features
``speech`` VadEvent, Word, Transcript (the recognizer's)
``vision`` VideoFrame, Face, Faces, ActiveSpeaker
``speaker`` SpeakerEmbedding, SpeakerTurn
``affect`` AffectLabel, Affect
``fused``  LabeledTranscript (the fusion node's: text with speaker, face and affect)
=========  ==============================================================

Importing this package imports none of them. :func:`builtin_types` imports every family and returns
its message types, for the runners (which register them with the wire codec) and for tools that read
any message (JSON lines).
"""

from __future__ import annotations

import importlib

from kikimimi.engine.messages import Control, Message

FAMILIES = ("audio", "speech", "vision", "speaker", "affect", "fused")


def builtin_types() -> tuple[type[Message], ...]:
    """Every message type of the built-in families (and Control), in family order."""
    out: list[type[Message]] = [Control]
    for family in FAMILIES:
        module = importlib.import_module(f"{__name__}.{family}")
        out += [v for v in vars(module).values()
                if isinstance(v, type) and issubclass(v, Message) and v.__dict__.get("wire_type")
                and v.__module__ == module.__name__]
    return tuple(out)
