"""Message validation (engine.messages) and node parameter validation (engine.params)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from kikimimi.engine.errors import MessageError, ParamError
from kikimimi.engine.messages import (
    NO_SAMPLE,
    Control,
    ControlKind,
    Header,
    Message,
    lookup_type,
    message_type,
    register_types,
    registered_types,
)
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.engine.msgs.vision import VideoFrame
from kikimimi.engine.params import REQUIRED, Param, ParamValues, validate_params


def hdr(sample_index: int = 0) -> Header:
    return Header("mic", 0, sample_index, 0, "src")


# ------------------------------------------------------------------------------------------ Header
@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"stream_id": ""}, "stream_id must be a non-empty str, got ''"),
    ({"stream_id": 5}, "stream_id must be a non-empty str, got 5"),
    ({"source": None}, "source must be a str, got None"),
    ({"seq": -1}, "seq must be >= 0, got -1"),
    ({"seq": 1.0}, "seq must be an int, got 1.0"),
    ({"seq": True}, "seq must be an int, got True"),
    ({"t_ns": "5"}, "t_ns must be an int, got '5'"),
    ({"sample_index": -2}, "sample_index must be >= 0 or NO_SAMPLE (-1), got -2"),
])
def test_header_validation(kwargs: dict[str, Any], needle: str) -> None:
    base = {"stream_id": "mic", "seq": 0, "sample_index": 0, "t_ns": 0, "source": "src"}
    with pytest.raises(MessageError) as info:
        Header(**{**base, **kwargs})
    assert needle in str(info.value)


def test_header_accepts_numpy_ints_and_no_sample() -> None:
    h = Header("mic", np.int64(3), NO_SAMPLE, np.int64(7), "")  # type: ignore[arg-type]
    assert h.seq == 3 and h.sample_index == NO_SAMPLE


# ------------------------------------------------------------------------------------------ AudioChunk
def test_audio_chunk_float64_samples_rejected() -> None:
    with pytest.raises(MessageError, match="dtype float64 is not allowed; allowed: int16, float32"):
        AudioChunk(hdr(), np.zeros((4, 1), np.float64), 16000)


@pytest.mark.parametrize("dtype", ["int32", "uint8", ">i2"])
def test_audio_chunk_other_dtypes_rejected(dtype: str) -> None:
    with pytest.raises(MessageError, match="is not allowed"):
        AudioChunk(hdr(), np.zeros((4, 1), dtype), 16000)


@pytest.mark.parametrize("shape", [(5,), (5, 1, 1), (5, 0)])
def test_audio_chunk_needs_2d_samples(shape: tuple[int, ...]) -> None:
    with pytest.raises(MessageError) as info:
        AudioChunk(hdr(), np.zeros(shape, np.int16), 16000)
    assert f"got shape {shape}" in str(info.value)


def test_audio_chunk_samples_must_be_an_array() -> None:
    with pytest.raises(MessageError, match="must be a numpy array, got list"):
        AudioChunk(hdr(), [[0], [1]], 16000)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0, -16000, 16000.0, "16000"])
def test_audio_chunk_rate_must_be_positive_int(rate: Any) -> None:
    with pytest.raises(MessageError) as info:
        AudioChunk(hdr(), np.zeros((4, 1), np.int16), rate)
    assert f"sample_rate must be a positive int, got {rate!r}" in str(info.value)


def test_audio_chunk_needs_a_sample_index() -> None:
    with pytest.raises(MessageError, match="absolute index of its first sample"):
        AudioChunk(hdr(NO_SAMPLE), np.zeros((4, 1), np.int16), 16000)


def test_audio_chunk_properties() -> None:
    c = AudioChunk(hdr(1600), np.zeros((320, 2), np.float32), 16000)
    assert (c.n_samples, c.channels, c.end_index, c.duration_ns) == (320, 2, 1920, 20_000_000)
    assert not c.is_control
    assert c.type_name == "AudioChunk"


# ------------------------------------------------------------------------------------------ VideoFrame
@pytest.mark.parametrize(("fmt", "channels", "want"), [("gray", 3, 1), ("bgr24", 1, 3), ("rgb24", 4, 3)])
def test_video_frame_channels_must_match_pixel_format(fmt: str, channels: int, want: int) -> None:
    with pytest.raises(MessageError) as info:
        VideoFrame(hdr(), np.zeros((2, 2, channels), np.uint8), fmt, 0)
    assert f"pixel_format {fmt!r} needs {want} channels, got {channels}" in str(info.value)


def test_video_frame_other_errors() -> None:
    with pytest.raises(MessageError, match=r"'yuv420' is not allowed; allowed: \['bgr24', 'gray'"):
        VideoFrame(hdr(), np.zeros((2, 2, 3), np.uint8), "yuv420", 0)
    with pytest.raises(MessageError, match=r"uint8 array.*got float32"):
        VideoFrame(hdr(), np.zeros((2, 2, 3), np.float32), "rgb24", 0)
    with pytest.raises(MessageError, match=r"got uint8 \(2, 2\)"):
        VideoFrame(hdr(), np.zeros((2, 2), np.uint8), "gray", 0)
    with pytest.raises(MessageError, match="frame_index must be >= 0, got -1"):
        VideoFrame(hdr(), np.zeros((2, 2, 1), np.uint8), "gray", -1)
    ok = VideoFrame(hdr(NO_SAMPLE), np.zeros((2, 2, 1), np.uint8), "gray", 0)
    assert ok.header.sample_index == NO_SAMPLE


# ------------------------------------------------------------------------------------------ VadEvent
def test_vad_event_end_before_start() -> None:
    with pytest.raises(MessageError, match="end_sample 100 is before start_sample 200"):
        VadEvent(hdr(), SpeechEventKind.SPEECH_END, 200, 100, 16000, 0.9)


@pytest.mark.parametrize(("args", "needle"), [
    (("speech_end", 0, 10, 16000, 0.5), "kind must be a SpeechEventKind, got 'speech_end'"),
    ((SpeechEventKind.SPEECH_START, -5, NO_SAMPLE, 16000, 0.5), "start_sample must be >= 0, got -5"),
    ((SpeechEventKind.SPEECH_START, 0, NO_SAMPLE, 16000, 1.5), "probability must be in [0, 1], got 1.5"),
    ((SpeechEventKind.SPEECH_START, 0, NO_SAMPLE, 16000, float("nan")), "got nan"),
    ((SpeechEventKind.SPEECH_START, 0, NO_SAMPLE, 0, 0.5), "sample_rate must be positive, got 0"),
])
def test_vad_event_other_errors(args: tuple[Any, ...], needle: str) -> None:
    with pytest.raises(MessageError) as info:
        VadEvent(hdr(), *args)
    assert needle in str(info.value)


def test_vad_event_times() -> None:
    start = VadEvent(hdr(), SpeechEventKind.SPEECH_START, 8000, NO_SAMPLE, 16000, 0.7)  # end unknown: fine
    assert start.start_ns == 500_000_000
    end = VadEvent(hdr(), SpeechEventKind.SPEECH_END, 8000, 24000, 16000, 0.7)
    assert (end.start_ns, end.end_ns) == (500_000_000, 1_500_000_000)
    assert VadEvent(hdr(), SpeechEventKind.SPEECH_END, 5, 5, 16000, 0.0).end_sample == 5  # empty segment ok


# ---------------------------------------------------------------------------------- Control / registry
def test_control_kind_must_be_an_enum() -> None:
    with pytest.raises(MessageError, match=r"Control\.kind must be a ControlKind, got 'stop'"):
        Control(hdr(), "stop")  # type: ignore[arg-type]
    c = Control(hdr(), ControlKind.STOP)
    assert c.is_control and c.reason == ""


def test_registry() -> None:
    types = registered_types()
    for cls in (AudioChunk, VideoFrame, Control, VadEvent):
        assert types[cls.__name__] is cls
        assert lookup_type(cls.__name__) is cls
    assert lookup_type("Nope") is None
    assert lookup_type("Message") is None
    types.clear()  # a copy: the registry itself is untouched
    assert lookup_type("AudioChunk") is AudioChunk


def test_registering_a_second_class_under_a_taken_name_fails() -> None:
    @message_type
    @dataclass(frozen=True, slots=True)
    class AudioChunk(Message):
        x: int = 0

    with pytest.raises(MessageError, match="'AudioChunk' is already registered"):
        register_types([AudioChunk])
    assert lookup_type("AudioChunk") is not None and lookup_type("AudioChunk").__module__ == (
        "kikimimi.engine.msgs.audio")


def test_naming_a_type_registers_nothing_and_registering_is_explicit() -> None:
    @message_type
    @dataclass(frozen=True, slots=True)
    class OnlyNamed(Message):
        x: int = 0

    assert OnlyNamed.type_name == "OnlyNamed" and lookup_type("OnlyNamed") is None
    register_types([OnlyNamed, OnlyNamed])      # twice: a no-op
    assert lookup_type("OnlyNamed") is OnlyNamed
    with pytest.raises(MessageError, match="not a message type"):
        register_types([Header])  # type: ignore[list-item]


def test_importing_the_engine_imports_no_message_family() -> None:
    code = ("import sys, kikimimi.engine, kikimimi.engine.messages, kikimimi.engine.wire, kikimimi.engine.queues, "
            "kikimimi.engine.runner, kikimimi.engine.zmq_transport, kikimimi.engine.msgs; "
            "print(sorted(m for m in sys.modules if m.startswith('kikimimi.engine.msgs.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------------ params
DECLARED = [
    Param("model", str, REQUIRED, help="which model to load"),
    Param("threshold", float, 0.5, help="speech probability", min=0.0, max=1.0),
    Param("frame_ms", int, 30, help="frame length", choices=(10, 20, 30)),
    Param("aggressiveness", int, 2, min=0, max=3),
    Param("verbose", bool, False),
    Param("device", str, None, nullable=True),
]


def check(given: dict[str, Any]) -> ParamValues:
    return validate_params(DECLARED, {"model": "silero", **given}, "node 'vad'")


def test_defaults_and_required_value() -> None:
    v = check({})
    assert v.as_dict() == {"model": "silero", "threshold": 0.5, "frame_ms": 30, "aggressiveness": 2,
                           "verbose": False, "device": None}
    assert v.model == "silero"


def test_unknown_param_lists_known_ones() -> None:
    with pytest.raises(ParamError) as info:
        check({"treshold": 0.3})
    msg = str(info.value)
    assert "node 'vad': unknown parameter 'treshold'" in msg
    assert "parameters: aggressiveness, device, frame_ms, model, threshold, verbose" in msg
    with pytest.raises(ParamError, match=r"unknown parameter 'x'; parameters: \(none\)"):
        validate_params([], {"x": 1}, "n")


def test_missing_required() -> None:
    with pytest.raises(ParamError, match=r"'vad': parameter 'model' is required \(which model to load\)"):
        validate_params(DECLARED, {}, "node 'vad'")
    with pytest.raises(ParamError, match="'model' is required"):
        validate_params(DECLARED, None, "node 'vad'")


@pytest.mark.parametrize(("given", "needle"), [
    ({"frame_ms": "30"}, "frame_ms='30' has type str; expected int"),
    ({"frame_ms": 30.5}, "frame_ms=30.5 has type float; expected int"),
    ({"threshold": "0.5"}, "threshold='0.5' has type str; expected float"),
    ({"model": 3}, "model=3 has type int; expected str"),
    ({"verbose": "yes"}, "verbose='yes' has type str; expected bool"),
    ({"verbose": 1}, "verbose=1 has type int; expected bool"),
    ({"model": None}, "model may not be null; expected str"),
])
def test_wrong_type(given: dict[str, Any], needle: str) -> None:
    with pytest.raises(ParamError) as info:
        validate_params(DECLARED, {"model": "m", **given}, "node 'vad'")
    assert needle in str(info.value)


@pytest.mark.parametrize(("name", "value"),
                         [("aggressiveness", True), ("frame_ms", False), ("threshold", True)])
def test_bool_is_not_accepted_as_a_number(name: str, value: bool) -> None:
    with pytest.raises(ParamError, match=f"{name}={value!r} has type bool"):
        check({name: value})


def test_value_not_in_choices_lists_choices() -> None:
    with pytest.raises(ParamError, match=r"frame_ms=25 is not allowed; allowed: 10, 20, 30"):
        check({"frame_ms": 25})
    assert check({"frame_ms": 20}).frame_ms == 20


@pytest.mark.parametrize(("given", "needle"), [
    ({"threshold": -0.1}, "threshold=-0.1 is below the minimum 0.0"),
    ({"threshold": 1.5}, "threshold=1.5 is above the maximum 1.0"),
    ({"aggressiveness": 4}, "aggressiveness=4 is above the maximum 3"),
    ({"aggressiveness": -1}, "aggressiveness=-1 is below the minimum 0"),
    ({"threshold": float("nan")}, "threshold=nan is below the minimum"),
])
def test_out_of_range(given: dict[str, Any], needle: str) -> None:
    with pytest.raises(ParamError) as info:
        check(given)
    assert needle in str(info.value)


def test_range_edges_are_inclusive() -> None:
    assert check({"threshold": 0.0}).threshold == 0.0
    assert check({"threshold": 1.0, "aggressiveness": 3}).aggressiveness == 3


def test_int_to_float_coercion() -> None:
    v = check({"threshold": 1})
    assert v.threshold == 1.0 and type(v.threshold) is float
    v = check({"aggressiveness": 2.0})  # an integral float is taken as the int
    assert v.aggressiveness == 2 and type(v.aggressiveness) is int


def test_nullable() -> None:
    assert check({"device": None}).device is None
    assert check({"device": "cuda:0"}).device == "cuda:0"


def test_param_values_are_read_only() -> None:
    v = check({})
    with pytest.raises(AttributeError, match="read-only"):
        v.threshold = 0.9
    with pytest.raises(AttributeError, match="no parameter 'nope'; parameters: model, threshold"):
        _ = v.nope
    d = v.as_dict()
    d["threshold"] = 0.0
    assert v.threshold == 0.5  # as_dict is a copy


def test_describe() -> None:
    assert DECLARED[0].describe() == "model (str, required): which model to load"
    assert DECLARED[1].describe() == "threshold (float, default 0.5; 0.0 <= value <= 1.0): speech probability"
    assert DECLARED[2].describe() == "frame_ms (int, default 30; one of 10, 20, 30): frame length"
    assert DECLARED[5].describe() == "device (str or null, default None): "
    assert DECLARED[0].required and not DECLARED[1].required
