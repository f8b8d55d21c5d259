"""The in-process runner: every node on its own thread, edges are :class:`Inbox` queues.

This is the embedded default: ``Runner(spec).run()`` returns when every node has finished. ``stop()``
(also called on SIGINT/SIGTERM by :func:`run_graph`) asks the sources to stop; END_OF_STREAM then
travels down the graph and every message already accepted is still processed. If that takes longer
than ``shutdown_timeout_s``, the remaining nodes are aborted.

``tap("node.port", fn)`` lets the code that runs the graph see what an output port emits without a node
of its own (``kikimimi transcribe`` keeps the final transcripts of the graph's ``transcripts`` output).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from kikimimi.engine.clock import Clock, MonotonicClock
from kikimimi.engine.driver import NodeDriver
from kikimimi.engine.errors import GraphError, KikimimiError
from kikimimi.engine.graph import GraphSpec
from kikimimi.engine.messages import Message
from kikimimi.engine.node import Node, Source
from kikimimi.engine.queues import Inbox

log = logging.getLogger("kikimimi.runner")


class GraphFailed(KikimimiError, RuntimeError):
    """A node could not start, or failed while running; the message names it and the cause."""


def build_node(spec: GraphSpec, name: str, clock: Clock) -> tuple[Node, Inbox | None, dict[str, set[str]]]:
    """Instantiate node ``name`` with its inbox (None for sources) and its upstream map."""
    ns = spec.node(name)
    node = ns.cls(name, dict(ns.params), clock=clock)
    inbox = None
    upstream: dict[str, set[str]] = {}
    if ns.inputs:
        inbox = Inbox(node.stats, clock)
        for inp in ns.inputs:
            inbox.add_port(inp.port, inp.queue)
            upstream[inp.port] = {src for src, _ in inp.sources}
    return node, inbox, upstream


class Runner:
    """Runs a whole graph in this process."""

    def __init__(self, spec: GraphSpec, clock: Clock | None = None, shutdown_timeout_s: float = 5.0) -> None:
        self.spec = spec
        self.clock = clock if clock is not None else MonotonicClock()
        self.shutdown_timeout_s = shutdown_timeout_s
        self.drivers: dict[str, NodeDriver] = {}
        self._threads: list[threading.Thread] = []
        self._stop_requested: float | None = None
        self.aborted = False
        """True once the run was aborted (abort(), or a stop that outlived the shutdown timeout)."""
        self._taps: dict[str, dict[str, list[Callable[[Message], None]]]] = {ns.name: {} for ns in spec.nodes}
        for ns in spec.nodes:
            node, inbox, upstream = build_node(spec, ns.name, self.clock)
            self.drivers[ns.name] = NodeDriver(node, inbox, upstream)
        for ns in spec.nodes:
            self.drivers[ns.name].node.bind(self._make_emit(ns.name))

    def _make_emit(self, name: str) -> Callable[[str, Message], None]:
        targets: dict[str, list[tuple[NodeDriver, str]]] = {
            port: [(self.drivers[n], p) for n, p in dests] for port, dests in self.spec.routes(name).items()
        }
        source = self.drivers[name]
        taps = self._taps[name]

        def emit(port: str, msg: Message) -> None:
            for fn in taps.get(port, ()):
                fn(msg)
            for driver, in_port in targets.get(port, ()):
                inbox = driver.inbox
                if inbox is None:
                    continue
                # A 'block' port waits for room; give up only if the target or this node is aborted.
                while not inbox.put(in_port, msg, timeout=0.1):
                    if driver.abort_event.is_set() or driver.finished.is_set() or source.abort_event.is_set():
                        break

        return emit

    def tap(self, ref: str, fn: Callable[[Message], None]) -> None:
        """Call ``fn(msg)`` with every message (data and control) that output ``ref`` ("node.port") emits, on
        the emitting node's thread, before the message is queued to the inputs it feeds. ``fn`` must be quick
        and thread-safe; what it raises fails the emitting node. Call before :meth:`start`."""
        node, _, port = ref.partition(".")
        if node not in self._taps:
            raise GraphError("", f"cannot tap {ref!r}: no node {node!r}; nodes: {', '.join(self._taps)}")
        if self.spec.node(node).cls.output_spec(port) is None:
            outs = ", ".join(p.name for p in self.spec.node(node).cls.outputs) or "(none)"
            raise GraphError("", f"cannot tap {ref!r}: node {node!r} has no output port {port!r}; its outputs: {outs}")
        self._taps[node].setdefault(port, []).append(fn)

    @property
    def nodes(self) -> dict[str, Node]:
        return {n: d.node for n, d in self.drivers.items()}

    def start(self) -> None:
        """Start every node (sinks first) and then their threads. A failing on_start stops the rest."""
        started: list[NodeDriver] = []
        for ns in reversed(self.spec.nodes):
            driver = self.drivers[ns.name]
            try:
                driver.start_node()
            except Exception as exc:
                for d in started:
                    try:
                        d.node.on_stop()
                    except Exception:
                        log.exception("node %r: on_stop failed", d.node.name)
                raise GraphFailed(f"node {ns.name!r} ({ns.kind}) could not start: {exc}") from exc
            started.append(driver)
        for ns in self.spec.nodes:
            t = threading.Thread(target=self.drivers[ns.name].run, name=f"node-{ns.name}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self) -> None:
        """Graceful: sources stop producing; what was accepted is still delivered."""
        if self._stop_requested is None:
            self._stop_requested = time.monotonic()
        for d in self.drivers.values():
            if isinstance(d.node, Source):
                d.stop_event.set()

    @property
    def stop_requested(self) -> bool:
        """Whether stop() (or abort()) was called: the run ended early, not at the end of its input."""
        return self._stop_requested is not None or self.aborted

    def abort(self) -> None:
        """Hard: every node leaves its loop now; what was queued is discarded (counted) and ``aborted`` is set."""
        self.aborted = True
        for d in self.drivers.values():
            d.abort_event.set()
            d.stop_event.set()
            if d.inbox is not None:
                d.inbox.close(discard=True)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for every node to finish; True if they did. Aborts after the shutdown timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for t in self._threads:
            while t.is_alive():
                t.join(0.05)
                now = time.monotonic()
                if self._stop_requested is not None and now - self._stop_requested > self.shutdown_timeout_s:
                    log.warning("shutdown took longer than %.1f s: aborting", self.shutdown_timeout_s)
                    self.abort()
                    self._stop_requested = float("inf")
                if deadline is not None and now > deadline:
                    return False
        return True

    def run(self) -> None:
        """Start, wait for the end of stream, and raise GraphFailed if a node failed."""
        self.start()
        self.wait()
        failed = [(n, d.error) for n, d in self.drivers.items() if d.error is not None]
        if failed:
            name, err = failed[0]
            raise GraphFailed(f"node {name!r} failed: {type(err).__name__}: {err}") from err

    def stats(self) -> list[dict[str, object]]:
        return [self.drivers[ns.name].node.stats.snapshot() for ns in self.spec.nodes]


def install_stop_signals(stop: Callable[[], None], abort: Callable[[], None],
                         poll_s: float = 0.05) -> Callable[[], None]:
    """SIGINT/SIGTERM ask for ``stop``; a second one for ``abort``. Returns a function that restores the old
    handlers and ends the watcher.

    The handler only records the signal (a list append, no lock): stop and abort take locks (events, queues),
    and a handler that took one could deadlock against the very code it interrupted, as a second Ctrl-C
    during the first one's stop did. A watcher thread calls ``stop``/``abort`` within ``poll_s``."""
    received: list[int] = []
    done = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    def watch() -> None:
        handled = 0
        while not done.wait(poll_s):
            while handled < len(received):
                handled += 1
                log.info("signal %d: %s", received[handled - 1], "stopping" if handled == 1 else "aborting")
                (stop if handled == 1 else abort)()

    watcher = threading.Thread(target=watch, name="kikimimi-signals", daemon=True)
    watcher.start()
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)
        done.set()
        watcher.join(5)

    return restore
