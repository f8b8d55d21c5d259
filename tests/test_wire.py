"""Wire format v1: round trips (zero-copy arrays) and every kind of rejection."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kikimimi.engine import wire
from kikimimi.engine.errors import WireError
from kikimimi.engine.messages import NO_SAMPLE, Control, ControlKind, Header, Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.engine.msgs.vision import VideoFrame

PREFIX = b"KM\x01\x00"


def hdr(seq: int = 3, sample_index: int = 1600, t_ns: int = 123_456_789) -> Header:
    return Header("mic-1", seq, sample_index, t_ns, "file_source")


def audio(dtype: type = np.int16, channels: int = 1, n: int = 320) -> AudioChunk:
    rng = np.random.default_rng(n * channels)
    if dtype is np.int16:
        s = rng.integers(-32768, 32768, size=(n, channels), dtype=np.int16)
    else:
        s = rng.uniform(-1, 1, size=(n, channels)).astype(np.float32)
    return AudioChunk(hdr(), s, 16000)


def video(fmt: str = "bgr24") -> VideoFrame:
    c = 1 if fmt == "gray" else 3
    img = np.random.default_rng(5).integers(0, 256, size=(6, 8, c), dtype=np.uint8)
    return VideoFrame(hdr(sample_index=NO_SAMPLE), img, fmt, 42)


def as_bytes(frames: list[Any]) -> list[bytes]:
    return [bytes(f) for f in frames]


def raw_header(body: list[Any], prefix: bytes = PREFIX) -> bytes:
    return prefix + msgpack.packb(body, use_bin_type=True)


def audio_body(**over: Any) -> list[Any]:
    """A valid AudioChunk header body (one int16 mono array of 4 samples), with parts replaced."""
    body = {
        "type": "AudioChunk",
        "header": ["mic", 0, 0, 10, "src"],
        "fields": [0, 16000],
        "arrays": [["<i2", [4, 1]]],
    }
    body.update(over)
    return [body["type"], body["header"], body["fields"], body["arrays"]]


ARRAY4 = np.arange(4, dtype="<i2").tobytes()


def rejected(frames: list[Any], **kw: Any) -> WireError:
    with pytest.raises(WireError) as info:
        wire.decode(frames, **kw)
    return info.value


def assert_same_header(a: Message, b: Message) -> None:
    assert a.header == b.header
    assert type(a) is type(b)


# ------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
@pytest.mark.parametrize("channels", [1, 2])
def test_audio_round_trip_is_equal_and_zero_copy(dtype: type, channels: int) -> None:
    msg = audio(dtype, channels)
    frames = as_bytes(wire.encode(msg))
    assert len(frames) == 2
    assert frames[0][:4] == PREFIX
    out = wire.decode(frames)
    assert isinstance(out, AudioChunk)
    assert_same_header(out, msg)
    assert out.sample_rate == 16000 and type(out.sample_rate) is int
    assert out.samples.dtype == np.dtype(dtype) and out.samples.shape == (320, channels)
    np.testing.assert_array_equal(out.samples, msg.samples)
    assert np.shares_memory(out.samples, np.frombuffer(frames[1], dtype=np.uint8))
    assert not out.samples.flags.writeable


def test_round_trip_straight_from_encode_shares_the_senders_array() -> None:
    msg = audio(np.float32, 2)
    out = wire.decode(wire.encode(msg))
    assert np.shares_memory(out.samples, msg.samples)  # no copy anywhere in-process
    np.testing.assert_array_equal(out.samples, msg.samples)


def test_non_contiguous_samples_travel_in_c_order() -> None:
    base = np.arange(40, dtype=np.float32).reshape(10, 4) / 100
    msg = AudioChunk(hdr(), base[:, ::2], 48000)  # strided view
    out = wire.decode(as_bytes(wire.encode(msg)))
    np.testing.assert_array_equal(out.samples, base[:, ::2])
    assert out.samples.flags.c_contiguous


def test_empty_audio_chunk_round_trips() -> None:
    msg = AudioChunk(hdr(), np.zeros((0, 2), np.int16), 16000)
    frames = as_bytes(wire.encode(msg))
    assert frames[1] == b""
    out = wire.decode(frames)
    assert out.samples.shape == (0, 2) and out.samples.dtype == np.int16


@pytest.mark.parametrize("fmt", ["bgr24", "rgb24", "gray"])
def test_video_frame_round_trip(fmt: str) -> None:
    msg = video(fmt)
    frames = as_bytes(wire.encode(msg))
    out = wire.decode(frames)
    assert isinstance(out, VideoFrame)
    assert_same_header(out, msg)
    assert (out.pixel_format, out.frame_index) == (fmt, 42)
    np.testing.assert_array_equal(out.image, msg.image)
    assert out.image.dtype == np.uint8
    assert np.shares_memory(out.image, np.frombuffer(frames[1], dtype=np.uint8))


@pytest.mark.parametrize("kind", list(ControlKind))
def test_control_round_trip(kind: ControlKind) -> None:
    msg = Control(hdr(sample_index=NO_SAMPLE), kind, reason="operator pressed stop ⏹")
    frames = as_bytes(wire.encode(msg))
    assert len(frames) == 1
    out = wire.decode(frames)
    assert out == msg
    assert out.kind is kind


@pytest.mark.parametrize("kind", list(SpeechEventKind))
def test_vad_event_round_trip(kind: SpeechEventKind) -> None:
    end = NO_SAMPLE if kind is SpeechEventKind.SPEECH_START else 48_000
    msg = VadEvent(hdr(), kind, 16_000, end, 16000, 0.875)
    out = wire.decode(as_bytes(wire.encode(msg)))
    assert out == msg
    assert out.kind is kind and type(out.probability) is float


def test_integral_probability_decodes_as_float() -> None:
    msg = VadEvent(hdr(), SpeechEventKind.SPEECH_START, 0, NO_SAMPLE, 16000, 1)  # type: ignore[arg-type]
    out = wire.decode(as_bytes(wire.encode(msg)))
    assert out.probability == 1.0 and type(out.probability) is float


def test_numpy_scalars_in_fields_are_encoded() -> None:
    """Fields computed with numpy (np.int64 rates and sample indices, np.float32 scores) must encode."""
    a = AudioChunk(Header("mic", np.int64(2), np.int64(320), np.int64(9), "s"),
                   np.zeros((3, 1), np.int16), np.int64(16000))  # type: ignore[arg-type]
    out = wire.decode(as_bytes(wire.encode(a)))
    assert out.sample_rate == 16000 and type(out.sample_rate) is int
    assert (out.header.seq, out.header.sample_index) == (2, 320)
    v = VadEvent(hdr(), SpeechEventKind.SPEECH_END, np.int64(10), np.int64(20), 16000,  # type: ignore[arg-type]
                 np.float32(0.5))  # type: ignore[arg-type]
    out = wire.decode(as_bytes(wire.encode(v)))
    assert (out.start_sample, out.end_sample, out.probability) == (10, 20, 0.5)


def test_decode_accepts_zmq_frames() -> None:
    zmq = pytest.importorskip("zmq")
    msg = audio(np.int16, 2)
    frames = [zmq.Frame(bytes(f)) for f in wire.encode(msg)]
    out = wire.decode(frames)
    np.testing.assert_array_equal(out.samples, msg.samples)
    assert np.shares_memory(out.samples, np.frombuffer(frames[1].buffer, dtype=np.uint8))


def test_hand_built_header_matches_the_documented_layout() -> None:
    out = wire.decode([raw_header(audio_body()), ARRAY4])
    assert isinstance(out, AudioChunk)
    assert out.header == Header("mic", 0, 0, 10, "src")
    np.testing.assert_array_equal(out.samples[:, 0], [0, 1, 2, 3])


# ------------------------------------------------------------------------------------------ truncated
def test_header_frame_cut_anywhere_is_truncated() -> None:
    frames = as_bytes(wire.encode(audio(np.int16, 2, n=5)))
    head = frames[0]
    for cut in range(len(head)):
        err = rejected([head[:cut], frames[1]])
        assert err.kind == "truncated", (cut, err)


def test_no_frames_is_truncated() -> None:
    assert rejected([]).kind == "truncated"


def test_missing_array_frame_is_truncated() -> None:
    frames = as_bytes(wire.encode(audio()))
    err = rejected(frames[:1])
    assert err.kind == "truncated"
    assert "announces 1 arrays but 0 frames" in str(err)


def test_array_frame_shorter_than_announced_is_truncated() -> None:
    frames = as_bytes(wire.encode(audio()))
    for cut in (0, 1, len(frames[1]) // 2, len(frames[1]) - 1):
        assert rejected([frames[0], frames[1][:cut]]).kind == "truncated"


def test_array_frame_longer_than_announced_or_extra_frame_is_malformed() -> None:
    frames = as_bytes(wire.encode(audio()))
    assert rejected([frames[0], frames[1] + b"\x00\x00"]).kind == "malformed"
    assert rejected([*frames, b"extra"]).kind == "malformed"


# ------------------------------------------------------------------------------------------ prefix
@pytest.mark.parametrize("version", [0, 2, 255])
def test_wrong_version_byte(version: int) -> None:
    frames = as_bytes(wire.encode(audio()))
    head = frames[0][:2] + bytes([version]) + frames[0][3:]
    err = rejected([head, frames[1]])
    assert err.kind == "version"
    assert f"wire version {version}" in str(err)


def test_bad_magic_is_malformed() -> None:
    frames = as_bytes(wire.encode(audio()))
    assert rejected([b"XX" + frames[0][2:], frames[1]]).kind == "malformed"
    assert rejected([b"X"]).kind == "malformed"


def test_trailing_bytes_after_the_header_are_malformed() -> None:
    frames = as_bytes(wire.encode(audio()))
    assert rejected([frames[0] + b"\xc0", frames[1]]).kind == "malformed"


# ------------------------------------------------------------------------------------------ oversized
def test_total_over_max_message_bytes_is_oversized() -> None:
    frames = as_bytes(wire.encode(audio()))
    total = sum(len(f) for f in frames)
    out = wire.decode(frames, max_message_bytes=total)  # exactly at the limit: fine
    assert isinstance(out, AudioChunk)
    err = rejected(frames, max_message_bytes=total - 1)
    assert err.kind == "oversized"
    assert str(total) in str(err)


def test_header_over_its_own_limit_is_oversized() -> None:
    msg = Control(hdr(), ControlKind.STOP, reason="x" * (wire.MAX_HEADER_BYTES + 10))
    assert rejected(as_bytes(wire.encode(msg))).kind == "oversized"


# ------------------------------------------------------------------------------------------ arrays
@pytest.mark.parametrize("dtype", ["|O", ">i2", ">f4", "<c16", "<U4", "|V2", "xx", "<M8[ns]"])
def test_bad_dtype_is_malformed(dtype: str) -> None:
    err = rejected([raw_header(audio_body(arrays=[[dtype, [4, 1]]])), ARRAY4])
    assert err.kind == "malformed"
    assert "is not allowed" in str(err)


@pytest.mark.parametrize("shape", [[-4, 1], [4, -1], [2.0, 1], [True, 1], ["4", 1], [None], [1] * 9])
def test_bad_shape_is_malformed(shape: list[Any]) -> None:
    err = rejected([raw_header(audio_body(arrays=[["<i2", shape]])), ARRAY4])
    assert err.kind == "malformed"
    assert "bad shape" in str(err)


@pytest.mark.parametrize("entry", [["<i2"], "<i2", ["<i2", 4], [2, [4, 1]], ["<i2", [4, 1], 0]])
def test_bad_array_entry_is_malformed(entry: Any) -> None:
    assert rejected([raw_header(audio_body(arrays=[entry])), ARRAY4]).kind == "malformed"


def test_array_table_not_a_list_is_malformed() -> None:
    assert rejected([raw_header(audio_body(arrays={"a": 1})), ARRAY4]).kind == "malformed"


@pytest.mark.parametrize(("shape", "if_empty", "if_8_bytes"), [
    ([2**32, 2**32], "truncated", "truncated"),   # product wraps to 0 in int64
    ([2**62, 4], "truncated", "truncated"),       # product overflows int64
    ([2**64 - 1], "truncated", "truncated"),      # does not fit int64 at all
    ([0, 2**62], "malformed", "malformed"),       # zero bytes, but a shape numpy cannot make
    ([0, 2**63], "malformed", "malformed"),
])
def test_huge_shapes_are_rejected_as_wire_errors(shape: list[int], if_empty: str, if_8_bytes: str) -> None:
    header = raw_header(audio_body(arrays=[["<i2", shape]]))
    assert rejected([header, b""]).kind == if_empty
    assert rejected([header, ARRAY4]).kind == if_8_bytes


def test_array_of_a_dtype_the_message_rejects_is_malformed() -> None:
    data = np.zeros((4, 1), np.float64).tobytes()
    err = rejected([raw_header(audio_body(arrays=[["<f8", [4, 1]]])), data])
    assert err.kind == "malformed" and "float64" in str(err)
    err = rejected([raw_header(audio_body(arrays=[["<i2", [4]]])), ARRAY4])  # 1-D samples
    assert err.kind == "malformed" and "shape" in str(err)


@pytest.mark.parametrize("ref", [1, -1, "0", None, True, 0.0])
def test_bad_array_reference_is_malformed(ref: Any) -> None:
    assert rejected([raw_header(audio_body(fields=[ref, 16000])), ARRAY4]).kind == "malformed"


# ------------------------------------------------------------------------------------------ types
@pytest.mark.parametrize("name", ["Nope", "Message", "Header", "audiochunk", ""])
def test_unknown_type_name(name: str) -> None:
    err = rejected([raw_header(audio_body(type=name)), ARRAY4])
    assert err.kind == "unknown_type"
    assert repr(name) in str(err)


@pytest.mark.parametrize("body", [
    ["AudioChunk", ["mic", 0, 0, 10, "src"], [0, 16000]],      # 3 parts
    {"type": "AudioChunk"},                                      # not a list
    [7, ["mic", 0, 0, 10, "src"], [0, 16000], []],               # type name not a str
    "AudioChunk",
    None,
])
def test_header_body_of_wrong_shape_is_malformed(body: Any) -> None:
    assert rejected([raw_header(body), ARRAY4]).kind == "malformed"


@pytest.mark.parametrize("header", [
    ["mic", 0, 0, 10],                 # 4 entries
    ["mic", 0, 0, 10, "src", "x"],     # 6 entries
    "mic",
    ["", 0, 0, 10, "src"],             # empty stream id
    ["mic", -1, 0, 10, "src"],         # negative seq
    ["mic", "0", 0, 10, "src"],        # seq as a string
    ["mic", 0, 0, 1.5, "src"],         # t_ns as a float
    ["mic", 0, 0, 10, 5],              # source not a str
    ["mic", True, 0, 10, "src"],       # bool is not an int
    ["mic", 0, -2, 10, "src"],         # sample index below NO_SAMPLE
])
def test_bad_message_header_is_malformed(header: Any) -> None:
    assert rejected([raw_header(audio_body(header=header)), ARRAY4]).kind == "malformed"


@pytest.mark.parametrize("fields", [
    [0, "16000"],       # sample_rate as a string
    [0, 16000.0],       # float is not an int
    [0, True],          # bool is not an int
    [0, 0],             # non-positive rate: rejected by the message itself
    [0],                # too few fields
    [0, 16000, 1],      # too many
    {"samples": 0},     # not a list
])
def test_audio_fields_of_wrong_type_are_malformed(fields: Any) -> None:
    err = rejected([raw_header(audio_body(fields=fields)), ARRAY4])
    assert err.kind == "malformed"


@pytest.mark.parametrize(("fields", "needle"), [
    (["pause", ""], "'pause' is not one of"),
    ([["stop"], ""], "is not one of"),
    (["STOP", ""], "is not one of"),
    (["stop", 5], "Control.reason"),
])
def test_control_fields_not_allowed_are_malformed(fields: list[Any], needle: str) -> None:
    body = ["Control", ["mic", 0, -1, 0, "src"], fields, []]
    err = rejected([raw_header(body)])
    assert err.kind == "malformed"
    assert needle in str(err)


@pytest.mark.parametrize("fields", [
    ["speech_middle", 0, -1, 16000, 0.5],   # enum value not allowed
    ["speech_start", "0", -1, 16000, 0.5],  # start_sample as a string
    ["speech_start", 0, -1, 16000, "0.5"],  # probability as a string
    ["speech_start", 0, -1, 16000, 1.5],    # probability out of range
    ["speech_end", 100, 50, 16000, 0.5],    # end before start
    ["speech_start", 0, -1, -16000, 0.5],   # negative rate
])
def test_vad_fields_not_allowed_are_malformed(fields: list[Any]) -> None:
    body = ["VadEvent", ["mic", 0, 0, 0, "src"], fields, []]
    assert rejected([raw_header(body)]).kind == "malformed"


def test_video_fields_not_allowed_are_malformed() -> None:
    img = np.zeros((2, 2, 3), np.uint8).tobytes()
    base = ["VideoFrame", ["cam", 0, -1, 0, "src"]]
    assert rejected([raw_header([*base, [0, "yuv", 0], [["|u1", [2, 2, 3]]]]), img]).kind == "malformed"
    assert rejected([raw_header([*base, [0, "gray", 0], [["|u1", [2, 2, 3]]]]), img]).kind == "malformed"
    assert rejected([raw_header([*base, [0, "rgb24", "0"], [["|u1", [2, 2, 3]]]]), img]).kind == "malformed"
    wrong_dtype = raw_header([*base, [0, "rgb24", 0], [["<i2", [2, 2, 3]]]])
    assert rejected([wrong_dtype, img + img]).kind == "malformed"
    ok = wire.decode([raw_header([*base, [0, "rgb24", 0], [["|u1", [2, 2, 3]]]]), img])
    assert isinstance(ok, VideoFrame)


def test_wire_error_kinds_are_checked() -> None:
    with pytest.raises(ValueError, match="not one of"):
        WireError("bogus", "x")


# ------------------------------------------------------------------------------------------ fuzz
def decode_or_wire_error(frames: list[bytes]) -> None:
    """The contract for anything from the network: a valid message, or WireError. Nothing else."""
    try:
        msg = wire.decode(frames)
    except WireError as exc:
        assert exc.kind in WireError.KINDS
        return
    assert isinstance(msg, Message)
    again = wire.decode(as_bytes(wire.encode(msg)))  # whatever decodes re-encodes to the same thing
    assert again.header == msg.header and type(again) is type(msg)


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(st.binary(max_size=64), max_size=4))
def test_random_bytes_decode_or_raise_wire_error(frames: list[bytes]) -> None:
    decode_or_wire_error(frames)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=64), rest=st.lists(st.binary(max_size=32), max_size=3))
def test_random_bytes_after_a_valid_prefix(body: bytes, rest: list[bytes]) -> None:
    decode_or_wire_error([PREFIX + body, *rest])


_ints = st.one_of(st.integers(-3, 20), st.integers(-(2**63), 2**64 - 1))
_leaf = st.one_of(st.none(), st.booleans(), _ints, st.floats(allow_nan=True), st.text(max_size=8),
                  st.binary(max_size=8), st.sampled_from(["<i2", "<f4", "|u1", "|O", "speech_end", "stop",
                                                          "gray", "bgr24"]))
_any = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=5), max_leaves=20)
_names = st.sampled_from(["AudioChunk", "VideoFrame", "Control", "VadEvent", "Nope"])
_shape = st.lists(_ints, max_size=4)
_meta = st.lists(st.tuples(st.sampled_from(["<i2", "<f4", "|u1", "<f8", ">i2", "|O"]), _shape).map(list),
                 max_size=2)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=_names,
    header=st.one_of(
        _any, st.tuples(st.text(max_size=4), _ints, _ints, _ints, st.text(max_size=4)).map(list)
    ),
    fields=st.lists(_any, max_size=6),
    meta=st.one_of(_meta, _any),
    arrays=st.lists(st.binary(max_size=48), max_size=3),
)
@pytest.mark.slow
def test_structured_garbage_decodes_or_raises_wire_error(
    name: str, header: Any, fields: list[Any], meta: Any, arrays: list[bytes]
) -> None:
    decode_or_wire_error([raw_header([name, header, fields, meta]), *arrays])


_VALID = [
    as_bytes(wire.encode(m))
    for m in (audio(np.int16, 1, n=4), audio(np.float32, 2, n=3), video("gray"),
              Control(hdr(), ControlKind.FLUSH, "r"),
              VadEvent(hdr(), SpeechEventKind.SPEECH_END, 1, 9, 16000, 0.5))
]


@settings(max_examples=400, deadline=None)
@given(which=st.integers(0, len(_VALID) - 1), data=st.data())
def test_mutated_valid_messages_decode_or_raise_wire_error(which: int, data: st.DataObject) -> None:
    frames = [bytearray(f) for f in _VALID[which]]
    for _ in range(data.draw(st.integers(1, 4))):
        k = data.draw(st.integers(0, len(frames) - 1))
        f = frames[k]
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "insert" or not f:
            f.insert(data.draw(st.integers(0, len(f))), data.draw(st.integers(0, 255)))
        elif op == "flip":
            f[data.draw(st.integers(0, len(f) - 1))] = data.draw(st.integers(0, 255))
        else:
            del f[data.draw(st.integers(0, len(f) - 1))]
    decode_or_wire_error([bytes(f) for f in frames])
