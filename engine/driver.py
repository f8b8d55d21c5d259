"""Runs one node's loop on one thread: the part every runner and transport shares.

A source is driven by calling ``produce`` until it returns False or a graceful stop is requested. Any
other node drains its :class:`Inbox`: overtaking controls first, data in arrival order, ticks when due.
It ends when every upstream node has sent END_OF_STREAM on every input it feeds, so everything
accepted before that is processed. On the way out it calls ``on_stop`` (final results) and sends
END_OF_STREAM on all its outputs. An exception in a hook is logged (throttled), counted as an
``error`` drop, and the loop goes on; only ``on_start`` failing is fatal for the node.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kikimimi.engine.messages import Control, ControlKind
from kikimimi.engine.metrics import DROP_ERROR
from kikimimi.engine.node import Node, Source
from kikimimi.engine.queues import Inbox

log = logging.getLogger("kikimimi.driver")

POLL_S = 0.05


class NodeDriver:
    """Owns the loop of one node. ``stop`` asks a source to finish; ``abort`` ends any node at once."""

    def __init__(self, node: Node, inbox: Inbox | None, upstream: dict[str, set[str]]) -> None:
        self.node = node
        self.inbox = inbox
        self.pending_eos = {(port, src) for port, srcs in upstream.items() for src in srcs}
        node.connected_inputs = frozenset(port for port, srcs in upstream.items() if srcs)
        self.stop_event = threading.Event()    # graceful: sources stop producing
        self.abort_event = threading.Event()   # hard: leave the loop now
        self.error: BaseException | None = None
        # Set by a transport whose input arrives outside the inbox (ZeroMQ): called with a timeout in
        # seconds instead of waiting on the inbox, it moves whatever arrives into the inbox.
        self.wait_hook: Callable[[float], None] | None = None
        self.started = False
        self.finished = threading.Event()

    def start_node(self) -> None:
        """Call ``on_start``; raises whatever it raises (the runner decides what a failure means)."""
        self.node.on_start()
        self.started = True

    def run(self) -> None:
        """The loop; returns when the node is done. Always sends END_OF_STREAM downstream."""
        try:
            if not self.started:
                self.start_node()
            if isinstance(self.node, Source):
                self._run_source(self.node)
            else:
                self._run_inbox()
        except Exception as exc:
            self.error = exc
            log.exception("node %r failed", self.node.name)
        finally:
            self._finish()

    def _run_source(self, node: Source) -> None:
        while not self.stop_event.is_set() and not self.abort_event.is_set():
            if not node.produce(self.stop_event):
                break

    def _run_inbox(self) -> None:
        node, inbox = self.node, self.inbox
        if inbox is None:
            return
        clock = node.clock
        tick = node.tick_interval_ns
        next_tick = clock.now_ns() + tick if tick > 0 else None
        while self.pending_eos and not self.abort_event.is_set():
            timeout = POLL_S
            if next_tick is not None:
                timeout = min(POLL_S, max(0.0, (next_tick - clock.now_ns()) / 1e9))
            if self.wait_hook is None:
                item = inbox.get(timeout)
            else:
                item = inbox.get(0.0)
                if item is None:
                    self.wait_hook(timeout)
                    item = inbox.get(0.0)
            if next_tick is not None and clock.now_ns() >= next_tick:
                self._call(node.on_tick, clock.now_ns())
                next_tick += tick
                if next_tick <= clock.now_ns():  # fell behind: skip missed ticks rather than burst
                    next_tick = clock.now_ns() + tick
            if item is None:
                continue
            port, msg = item
            if isinstance(msg, Control):
                if msg.kind is ControlKind.END_OF_STREAM:
                    self.pending_eos.discard((port, msg.header.source))
                    log.debug("node %r: end of stream from %r on %r; still open: %s", node.name, msg.header.source,
                              port, sorted(self.pending_eos) or "none")
                self._call(node.on_control, port, msg)
                continue
            t0 = clock.now_ns()
            if self._call(node.on_message, port, msg):
                node.stats.count_processed(clock.now_ns() - t0)

    def _call(self, fn, *args) -> bool:  # type: ignore[no-untyped-def]
        try:
            fn(*args)
            return True
        except Exception as exc:
            self.node.stats.count_drop(DROP_ERROR)
            self.node.throttled(logging.ERROR, f"{fn.__name__}:{type(exc).__name__}",
                                "node %r: %s raised %s: %s", self.node.name, fn.__name__,
                                type(exc).__name__, exc, exc_info=True)
            return False

    def _finish(self) -> None:
        node = self.node
        try:
            if self.started:
                node.on_stop()
        except Exception:
            log.exception("node %r: on_stop failed", node.name)
        try:
            node.emit_control(ControlKind.END_OF_STREAM, reason="end of stream")
        except Exception:
            log.exception("node %r: could not send end of stream", node.name)
        self.finished.set()
