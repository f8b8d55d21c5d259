"""Drive a single node without a runner: feed it scripted input, collect what it emits."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from kikimimi.engine.messages import Control, Message
from kikimimi.engine.node import Node, Source


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
