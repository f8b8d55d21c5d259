"""console_sink and jsonl_sink (and engine.jsonio): readable lines, JSON that parses and round-trips."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from kikimimi.engine.clock import ManualClock
from kikimimi.engine.errors import MessageError, ParamError
from kikimimi.engine.jsonio import message_from_json, message_to_json
from kikimimi.engine.messages import Control, ControlKind, Header, Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.engine.msgs.vision import VideoFrame
from kikimimi.nodes.console_sink import ConsoleSink
from kikimimi.nodes.file_source import FileSource
from kikimimi.nodes.jsonl_sink import JsonlSink
from kikimimi.nodes.webrtc_vad import WebrtcVad

START = VadEvent(Header("file", 0, 8640, 11, "vad"), SpeechEventKind.SPEECH_START, 8320, -1, 16000, 0.0)
END = VadEvent(Header("file", 1, 59200, 12, "vad"), SpeechEventKind.SPEECH_END, 8320, 49600, 16000, 0.93)
CHUNK = AudioChunk(Header("file", 7, 2240, 13, "src"), np.arange(-3, 3, dtype=np.int16).reshape(3, 2), 16000)
FRAME = VideoFrame(Header("cam", 4, 640, 14, "src"), np.zeros((2, 3, 3), np.uint8), "bgr24", 4)


def feed(node: ConsoleSink | JsonlSink, msgs: list[Message]) -> None:
    node.on_start()
    for m in msgs:
        if isinstance(m, Control):
            node.on_control("in", m)
        else:
            node.on_message("in", m)
    node.on_stop()


# ---------------------------------------------------------------------- console_sink
def test_console_prints_speech_events_readably(capsys: pytest.CaptureFixture[str]) -> None:
    feed(ConsoleSink("out", {"vad_events": "all"}), [START, CHUNK, END])
    assert capsys.readouterr().out.splitlines() == [
        "[file] speech start 0.52 s",
        "[file] speech 0.52 s - 3.10 s (2.58 s, p=0.93)",
    ]


def test_console_audio_other_messages_and_end_of_stream_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    eos = Control(Header("file", 9, -1, 0, "src"), ControlKind.END_OF_STREAM)
    feed(ConsoleSink("out", {"stream": "stderr", "show_audio": True, "end_of_stream": True}), [CHUNK, FRAME, eos])
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "[file] audio #7 0.14 s +3 samples (16000 Hz, 2 ch, int16)",
        "[cam] VideoFrame #4 sample 640 from src",
        "[file] end of stream from src",
    ]


def test_console_bad_stream_param() -> None:
    with pytest.raises(ParamError, match="stream='file' is not allowed; allowed: 'stdout', 'stderr'"):
        ConsoleSink("out", {"stream": "file"})


# ---------------------------------------------------------------------- engine.jsonio
def test_message_to_json_shapes_enums_and_numpy_scalars() -> None:
    ev = VadEvent(Header("s", np.int64(2), np.int64(10), 5, "vad"), SpeechEventKind.SPEECH_END,
                  np.int64(0), np.int64(320), 16000, np.float32(0.5))
    obj = message_to_json(ev)
    assert obj == {"type": "VadEvent",
                   "header": {"stream_id": "s", "seq": 2, "sample_index": 10, "t_ns": 5, "source": "vad"},
                   "kind": "speech_end", "start_sample": 0, "end_sample": 320, "sample_rate": 16000,
                   "probability": 0.5}
    assert type(obj["start_sample"]) is int and type(obj["probability"]) is float
    assert message_to_json(CHUNK)["samples"] == {"dtype": "int16", "shape": [3, 2]}
    assert message_to_json(CHUNK, include_arrays=True)["samples"]["data"] == [[-3, -2], [-1, 0], [1, 2]]
    assert "t_ns" not in message_to_json(CHUNK, include_timing=False)["header"]


def test_message_from_json_round_trips_and_names_problems() -> None:
    for msg in (START, END):
        assert message_from_json(json.loads(json.dumps(message_to_json(msg)))) == msg
    back = message_from_json(json.loads(json.dumps(message_to_json(CHUNK, include_arrays=True))))
    assert isinstance(back, AudioChunk) and back.header == CHUNK.header
    np.testing.assert_array_equal(back.samples, CHUNK.samples)
    with pytest.raises(MessageError, match="array data was not included"):
        message_from_json(message_to_json(CHUNK))
    with pytest.raises(MessageError, match=r"unknown message type 'Nope'; known: .*VadEvent"):
        message_from_json({"type": "Nope", "header": {}})
    msg = "'speech_middle' is not allowed; allowed: 'speech_start', 'speech_end'"
    with pytest.raises(MessageError, match=msg):
        message_from_json({**message_to_json(END), "kind": "speech_middle"})


# ---------------------------------------------------------------------- jsonl_sink
def test_jsonl_file_parses_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = JsonlSink("out", {"path": str(path)})
    feed(sink, [START, CHUNK, FRAME, END])
    lines = path.read_text(encoding="utf-8").splitlines()
    objs = [json.loads(line) for line in lines]
    assert [o["type"] for o in objs] == ["VadEvent", "AudioChunk", "VideoFrame", "VadEvent"]
    assert objs[1]["samples"] == {"dtype": "int16", "shape": [3, 2]} and objs[1]["sample_rate"] == 16000
    assert objs[2]["image"] == {"dtype": "uint8", "shape": [2, 3, 3]} and objs[2]["frame_index"] == 4
    assert message_from_json(objs[0]) == START and message_from_json(objs[3]) == END
    assert sink._out is None  # closed in on_stop


def test_jsonl_include_arrays_and_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    feed(JsonlSink("out", {"path": "-", "include_arrays": True, "include_timing": False}), [CHUNK])
    obj = json.loads(capsys.readouterr().out)
    assert obj["samples"]["data"] == CHUNK.samples.tolist() and "t_ns" not in obj["header"]


def test_jsonl_missing_folder_names_the_path(tmp_path: Path) -> None:
    sink = JsonlSink("out", {"path": str(tmp_path / "no" / "such" / "dir.jsonl")})
    with pytest.raises(FileNotFoundError, match=r"dir\.jsonl"):
        sink.on_start()


def run_pipeline(data_dir: Path, out: Path, clock_start: int) -> None:
    """file_source -> webrtc_vad -> jsonl_sink, wired by hand (no runner)."""
    clip = data_dir / "en/librispeech/2414/2414-128291-0005.flac"
    src = FileSource("src", {"path": str(clip), "speed": 0}, clock=ManualClock(clock_start))
    vad = WebrtcVad("vad", {}, clock=ManualClock(clock_start))
    sink = JsonlSink("sink", {"path": str(out), "include_timing": False})
    src.bind(lambda port, msg: vad.on_message("audio", msg))
    vad.bind(lambda port, msg: sink.on_message("in", msg))
    for node in (sink, vad, src):
        node.on_start()
    stop = threading.Event()
    while src.produce(stop):
        pass
    for node in (src, vad, sink):
        node.on_stop()


def test_pipeline_output_is_deterministic_without_timing(data_dir: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    run_pipeline(data_dir, a, 0)
    run_pipeline(data_dir, b, 123_456_789)
    assert a.read_bytes() == b.read_bytes()
    events = [message_from_json(json.loads(line)) for line in a.read_text().splitlines()]
    assert events and all(isinstance(e, VadEvent) for e in events)
    kinds = [SpeechEventKind.SPEECH_START, SpeechEventKind.SPEECH_END] * (len(events) // 2)
    assert [e.kind for e in events] == kinds
