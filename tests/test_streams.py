"""StreamNode: per-stream state made on first use, FLUSH / END_OF_STREAM for one stream or all, closing on stop,
and sample rates declared on the input port; driven with kikimimi.engine.testing."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from kikimimi.engine.messages import ControlKind, Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.node import PortSpec
from kikimimi.engine.streams import StreamNode
from kikimimi.engine.testing import NodeHarness, control, header


class Counter(StreamNode[list[int]]):
    """Counts samples per stream; says what it did to each stream on its 'log' output."""

    kind = "test_counter"
    inputs = (PortSpec("audio", (AudioChunk,), rates=(16000, 8000)),)
    outputs = (PortSpec("log", (AudioChunk,)),)

    def __init__(self) -> None:
        super().__init__("counter")
        self.events: list[tuple[str, str, int]] = []

    def open_stream(self, sid: str, msg: Message) -> list[int]:
        self.events.append(("open", sid, 0))
        return [0]

    def on_stream_message(self, port: str, msg: Message, st: list[int]) -> None:
        assert isinstance(msg, AudioChunk)
        st[0] += msg.n_samples
        self.emit("log", msg)

    def flush_stream(self, sid: str, st: list[int]) -> None:
        self.events.append(("flush", sid, st[0]))

    def close_stream(self, sid: str, st: list[int]) -> None:
        self.events.append(("close", sid, st[0]))


def chunk(sid: str, n: int = 160, rate: int = 16000) -> AudioChunk:
    return AudioChunk(header(sid, 0), np.zeros((n, 1), np.int16), rate)


def test_streams_open_on_first_message_and_flush_close_as_addressed() -> None:
    h = NodeHarness(node := Counter())
    h.feed([("audio", chunk("a")), ("audio", chunk("b", 80)), ("audio", chunk("a"))])
    assert node.streams == {"a": [320], "b": [80]}
    h.flush("audio", "b")
    assert node.events[-1] == ("flush", "b", 80) and set(node.streams) == {"a", "b"}
    h.end_of_stream("audio", "a")
    assert node.events[-1] == ("close", "a", 320) and set(node.streams) == {"b"}
    h.send("audio", control(ControlKind.FLUSH, "nobody"))         # unknown stream: nothing happens
    h.send("audio", chunk("c", 8, rate=8000))
    h.stop()
    assert node.events[-2:] == [("close", "b", 80), ("close", "c", 8)] and node.streams == {}
    assert len(h.emitted("log")) == 4


def test_end_of_stream_for_all_closes_every_stream() -> None:
    h = NodeHarness(node := Counter())
    h.feed([("audio", chunk("a")), ("audio", chunk("b"))])
    h.end_of_stream("audio")
    assert [e[:2] for e in node.events if e[0] == "close"] == [("close", "a"), ("close", "b")]
    assert node.streams == {}


def test_a_rate_the_port_does_not_declare_is_counted_logged_and_the_stream_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    h = NodeHarness(node := Counter())
    with caplog.at_level(logging.WARNING):
        h.feed([("audio", chunk("a")), ("audio", chunk("a", rate=44100)), ("audio", chunk("a"))])
    assert node.streams == {"a": [320]} and node.stats.dropped["rejected"] == 1
    assert node.stats.rejected_by_kind["sample_rate"] == 1
    assert "dropping AudioChunk of stream 'a' at 44100 Hz; allowed sample rates: 16000, 8000" in caplog.text
