"""The Affect message: checked when made, and carried over the wire and into JSON lines unchanged."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from kikimimi.engine import wire
from kikimimi.engine.errors import MessageError
from kikimimi.engine.jsonio import message_to_json
from kikimimi.engine.messages import Header
from kikimimi.engine.msgs.affect import Affect

CLASSES = ("neutral", "happy", "sad")


def make(**kw: object) -> Affect:
    args: dict[str, object] = dict(header=Header("s", 3, 48000, 123, "affect"), utterance_id=2, source="voice",
                                   start_sample=16000, end_sample=48000, sample_rate=16000, label="happy",
                                   classes=CLASSES, probabilities=np.array([0.1, 0.7, 0.2], np.float32),
                                   arousal=0.4, valence=0.6, confidence=0.7, model="voice-test", final=True)
    args.update(kw)
    return Affect(**args)  # type: ignore[arg-type]


def test_round_trip_over_the_wire_and_to_json() -> None:
    a = make()
    b = wire.decode([bytes(f) for f in wire.encode(a)])
    assert isinstance(b, Affect) and b.classes == CLASSES and b.label == "happy" and b.final and b.face_id == -1
    np.testing.assert_array_equal(b.probabilities, a.probabilities)
    assert (b.arousal, b.valence, b.confidence, b.model) == (0.4, 0.6, 0.7, "voice-test")
    obj = json.loads(json.dumps(message_to_json(a)))
    assert obj["label"] == "happy" and obj["source"] == "voice"


@pytest.mark.parametrize(("field", "value", "says"), [
    ("label", "angry", "label 'angry' is not allowed"),
    ("source", "text-ish", "source 'text-ish' is not allowed"),
    ("probabilities", np.array([0.5, 0.5], np.float32), "shape (3,)"),
    ("probabilities", np.array([0.1, 0.7, 0.2]), "float32"),
    ("arousal", 1.5, "arousal must be in [-1, 1], got 1.5"),
    ("valence", float("nan"), "valence must be in [-1, 1]"),
    ("confidence", -0.1, "confidence must be in [0, 1]"),
    ("end_sample", 10, "0 <= start <= end"),
])
def test_bad_values_name_the_field_and_what_is_allowed(field: str, value: object, says: str) -> None:
    with pytest.raises(MessageError, match=re.escape(says)):
        make(**{field: value})
