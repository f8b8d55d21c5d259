"""ZeroMQ transport: one PULL socket bound per input port, one PUSH socket per connected input.

Each input port of a graph gets an endpoint: ``ipc://<run dir>/<node>.<port>`` on one machine, or
``tcp://<host>:<base port + k>`` across machines (the k-th input port of the graph, in graph order;
``host`` is the node's ``host:`` entry or ``zmq.tcp_host``). Senders connect PUSH sockets to those
endpoints; fan-out sends every message to each connected input, fan-in shares the bound PULL socket.

Freshness and bounds are not left to ZeroMQ's high-water marks: the receiver thread drains its
sockets into the node's :class:`Inbox`, whose policies and max ages decide what is dropped, and every
drop is counted there. A ``block`` port that is full stops the receiver, so its socket fills to the
HWM and the sender's PUSH waits: backpressure end to end. Every received message is validated
(:func:`kikimimi.engine.wire.decode` and the port's message types); rejections are counted by kind
and logged once per kind, and the node keeps running.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

import zmq

from kikimimi.engine.errors import GraphError, WireError
from kikimimi.engine.graph import GraphSpec
from kikimimi.engine.messages import Message
from kikimimi.engine.metrics import NodeStats
from kikimimi.engine.node import PortSpec
from kikimimi.engine.queues import Inbox
from kikimimi.engine.wire import DEFAULT_MAX_MESSAGE_BYTES, decode, encode

log = logging.getLogger("kikimimi.zmq")

SCHEMES = ("ipc", "tcp")
HWM = 1000
LINGER_MS = 2000
POLL_MS = 50


def input_endpoints(spec: GraphSpec, scheme: str, ipc_dir: str | None = None) -> dict[tuple[str, str], str]:
    """Endpoint of every input port of the graph, keyed by (node, port)."""
    if scheme not in SCHEMES:
        raise GraphError("transport", f"ZeroMQ scheme {scheme!r} is not allowed; allowed: {', '.join(SCHEMES)}")
    if scheme == "ipc" and not ipc_dir:
        raise GraphError("transport", "ipc endpoints need a run directory")
    out: dict[tuple[str, str], str] = {}
    k = 0
    for ns in spec.nodes:
        for inp in ns.inputs:
            if scheme == "ipc":
                out[(ns.name, inp.port)] = f"ipc://{ipc_dir}/{ns.name}.{inp.port}"
            else:
                host = ns.host or spec.zmq.tcp_host
                out[(ns.name, inp.port)] = f"tcp://{host}:{spec.zmq.tcp_base_port + k}"
            k += 1
    return out


class ZmqSender:
    """Sends a node's output messages. Use from the node's thread only (ZeroMQ sockets are not thread-safe)."""

    def __init__(self, ctx: zmq.Context, routes: Mapping[str, Sequence[str]], abort: threading.Event) -> None:
        self.abort = abort
        self._sockets: dict[str, zmq.Socket] = {}
        self._routes: dict[str, list[zmq.Socket]] = {}
        for port, endpoints in routes.items():
            socks = []
            for ep in endpoints:
                sock = self._sockets.get(ep)
                if sock is None:
                    sock = ctx.socket(zmq.PUSH)
                    sock.setsockopt(zmq.SNDHWM, HWM)
                    sock.setsockopt(zmq.LINGER, LINGER_MS)
                    sock.connect(ep)
                    self._sockets[ep] = sock
                socks.append(sock)
            self._routes[port] = socks

    def emit(self, port: str, msg: Message) -> None:
        socks = self._routes.get(port)
        if not socks:
            return
        frames = encode(msg)
        for sock in socks:
            while True:
                try:
                    sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                    break
                except zmq.Again:
                    # The receiver is full (a 'block' port): wait for room, unless we are aborted.
                    if self.abort.is_set():
                        return
                    sock.poll(POLL_MS, zmq.POLLOUT)

    def close(self, linger_ms: int = LINGER_MS) -> None:
        for sock in self._sockets.values():
            sock.close(linger=linger_ms)
        self._sockets.clear()


class ZmqReceiver:
    """A thread that drains the bound PULL sockets of a node's input ports into its inbox."""

    def __init__(self, ctx: zmq.Context, inbox: Inbox, bindings: Mapping[str, str],
                 port_specs: Mapping[str, PortSpec], stats: NodeStats, done: threading.Event,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.inbox = inbox
        self.stats = stats
        self.done = done
        self.max_message_bytes = max_message_bytes
        self.port_specs = dict(port_specs)
        self._logged_kinds: set[str] = set()
        self._sockets: dict[zmq.Socket, str] = {}
        for port, ep in bindings.items():
            sock = ctx.socket(zmq.PULL)
            sock.setsockopt(zmq.RCVHWM, HWM)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(ep)
            self._sockets[sock] = port
        self._thread = threading.Thread(target=self._loop, name="zmq-receiver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def reject(self, kind: str, port: str, detail: str) -> None:
        """Count a rejected message and log the first one of each kind."""
        self.stats.count_rejected(kind)
        if kind not in self._logged_kinds:
            self._logged_kinds.add(kind)
            log.warning("%s.%s: rejected a %s message: %s (further ones are counted, not logged)",
                        self.stats.node, port, kind, detail)

    def handle(self, port: str, frames: Sequence[zmq.Frame | bytes]) -> None:
        """Validate one received message and put it into the inbox (waiting if the port blocks)."""
        try:
            msg = decode(frames, self.max_message_bytes)
        except WireError as exc:
            self.reject(exc.kind, port, exc.detail)
            return
        spec = self.port_specs[port]
        if not msg.is_control and not isinstance(msg, spec.types):
            self.reject("malformed", port, f"a {msg.type_name} arrived on a port that accepts {spec.type_names()}")
            return
        while not self.inbox.put(port, msg, timeout=0.1):
            if self.done.is_set():
                return

    def _loop(self) -> None:
        poller = zmq.Poller()
        for sock in self._sockets:
            poller.register(sock, zmq.POLLIN)
        try:
            while not self.done.is_set():
                for sock, _ in poller.poll(POLL_MS):
                    port = self._sockets[sock]
                    # Drain what is there, a bounded batch at a time, so no port starves another.
                    for _ in range(64):
                        try:
                            frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self.handle(port, frames)
        finally:
            for sock in self._sockets:
                sock.close(linger=0)
