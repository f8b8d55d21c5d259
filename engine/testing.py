"""Drive one node without a runner: feed it scripted input, collect what it emits.

For tests and benchmarks of node kinds, ours or another package's (in the manner of dora's
``MockNode`` and pipecat's ``run_test``)::

    from kikimimi.engine.testing import NodeHarness, run_node, header

    out = run_node(MyNode("n", {"threshold": 0.5}), [("audio", chunk0), ("audio", chunk1)])
    assert [m for port, m in out if port == "events"] == [...]

    h = NodeHarness(MyNode("n"))          # step by step, with a manual clock
    h.send("audio", chunk0)
    h.clock.advance(20_000_000); h.tick()
    h.end_of_stream("audio")               # END_OF_STREAM for every stream on port "audio"
    h.stop()
    h.emitted("events")                   # what went out of port "events", in order

The node runs on the calling thread; nothing sleeps on wall time. ``connected_inputs`` is left as
None (no runner says which inputs are wired) unless given.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from kikimimi.engine.clock import ManualClock
from kikimimi.engine.messages import ALL_STREAMS, NO_SAMPLE, Control, ControlKind, Header, Message
from kikimimi.engine.node import Node, Source


def header(stream_id: str = "s", sample_index: int = NO_SAMPLE, seq: int = 0, t_ns: int = 0,
           source: str = "test") -> Header:
    """A header for a hand-made message (integer time; ``source`` names the fake sender)."""
    return Header(stream_id, seq, sample_index, t_ns, source)


def control(kind: ControlKind, stream_id: str = ALL_STREAMS, source: str = "test", reason: str = "") -> Control:
    """A control message (END_OF_STREAM, FLUSH, ...) for ``stream_id`` (default: every stream)."""
    return Control(header(stream_id, source=source), kind, reason)


class NodeHarness:
    """One node, started, fed by hand; every emitted message is kept as (port, message)."""

    def __init__(self, node: Node, clock: ManualClock | None = None, start: bool = True,
                 connected: Iterable[str] | None = None) -> None:
        self.node = node
        self.clock = clock if clock is not None else (node.clock if isinstance(node.clock, ManualClock)
                                                      else ManualClock())
        node.clock = self.clock
        if connected is not None:
            node.connected_inputs = frozenset(connected)
        self.out: list[tuple[str, Message]] = []     # (port, message), in emission order
        self.messages: list[Message] = []            # the same messages without their ports
        node.bind(self._collect)
        self.started = False
        if start:
            self.start()

    def _collect(self, port: str, msg: Message) -> None:
        self.out.append((port, msg))
        self.messages.append(msg)

    def start(self) -> None:
        """Call the node's ``on_start``."""
        self.node.on_start()
        self.started = True

    def send(self, port: str, msg: Message) -> list[tuple[str, Message]]:
        """Deliver ``msg`` on ``port`` (controls to ``on_control``); returns what this call emitted."""
        n = len(self.out)
        if isinstance(msg, Control):
            self.node.on_control(port, msg)
        else:
            self.node.on_message(port, msg)
        return self.out[n:]

    def feed(self, inputs: Iterable[tuple[str, Message]]) -> list[tuple[str, Message]]:
        """Deliver each (port, message) in order; returns what they emitted."""
        n = len(self.out)
        for port, msg in inputs:
            self.send(port, msg)
        return self.out[n:]

    def end_of_stream(self, port: str, stream_id: str = ALL_STREAMS, source: str = "test") -> None:
        """END_OF_STREAM on ``port`` from ``source`` (for ``stream_id``, default every stream)."""
        self.send(port, control(ControlKind.END_OF_STREAM, stream_id, source))

    def flush(self, port: str, stream_id: str = ALL_STREAMS) -> None:
        """FLUSH on ``port`` for ``stream_id`` (default every stream)."""
        self.send(port, control(ControlKind.FLUSH, stream_id))

    def tick(self) -> None:
        """Call ``on_tick`` at the clock's time."""
        self.node.on_tick(self.clock.now_ns())

    def stop(self) -> list[tuple[str, Message]]:
        """Call ``on_stop`` (final results); returns what it emitted."""
        n = len(self.out)
        self.node.on_stop()
        return self.out[n:]

    def emitted(self, port: str | None = None) -> list[Message]:
        """The messages emitted so far (out of ``port`` only, when given), in order."""
        return [m for p, m in self.out if port is None or p == port]


def run_source(node: Source) -> list[tuple[str, Message]]:
    """Run a source to its end; returns (port, message) in emission order (end of stream excluded)."""
    out: list[tuple[str, Message]] = []
    node.bind(lambda port, msg: out.append((port, msg)))
    node.on_start()
    stop = threading.Event()
    while node.produce(stop):
        pass
    node.on_stop()
    return out


def run_node(node: Node, inputs: Iterable[tuple[str, Message]]) -> list[tuple[str, Message]]:
    """Start ``node``, deliver each (port, message) to on_message / on_control, stop it; returns its output."""
    out: list[tuple[str, Message]] = []
    node.bind(lambda port, msg: out.append((port, msg)))
    node.on_start()
    for port, msg in inputs:
        if isinstance(msg, Control):
            node.on_control(port, msg)
        else:
            node.on_message(port, msg)
    node.on_stop()
    return out
