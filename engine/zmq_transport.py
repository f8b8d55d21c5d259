"""ZeroMQ transport: one PULL socket bound per input port, one PUSH socket per connected input.

Each input port of a graph gets an endpoint: ``ipc://<run dir>/<node>.<port>`` on one machine, or
``tcp://<host>:<base port + k>`` across machines (the k-th input port of the graph, in graph order;
``host`` is the node's ``host:`` entry or ``zmq.tcp_host``). Senders connect PUSH sockets to those
endpoints; fan-out sends every message to each connected input, fan-in shares the bound PULL socket.

Freshness and bounds are not left to ZeroMQ's high-water marks: the receiver drains its sockets
into the node's :class:`Inbox`, whose policies and max ages decide what is dropped, and every drop is
counted there. A ``block`` port that is full is not read, so its socket fills to the HWM and the
sender's PUSH waits: backpressure end to end. The node's own thread reads its sockets
(:meth:`ZmqReceiver.pump`), so there is no thread hand-off between socket and node. Every received
message is validated (:func:`kikimimi.engine.wire.decode` and the port's message types); rejections
are counted by kind and logged once per kind, and the node keeps running.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence

import zmq

from kikimimi.engine.errors import GraphError, WireError
from kikimimi.engine.graph import GraphSpec
from kikimimi.engine.messages import Control, ControlKind, Message
from kikimimi.engine.metrics import NodeStats
from kikimimi.engine.node import PortSpec
from kikimimi.engine.queues import Inbox
from kikimimi.engine.wire import DEFAULT_MAX_MESSAGE_BYTES, decode, encode

log = logging.getLogger("kikimimi.zmq")

SCHEMES = ("ipc", "tcp")
HWM = 1000
LINGER_MS = 2000
POLL_MS = 50
ZERO_COPY_FROM = 64 * 1024


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
        # Small messages are cheaper to copy than to hand over by reference (pyzmq builds a Frame
        # object per zero-copy part); large ones (video) go zero-copy.
        copy = sum(len(f) for f in frames) < ZERO_COPY_FROM
        for sock in socks:
            while True:
                try:
                    sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=copy)
                    break
                except zmq.Again:
                    # The receiver is full (a 'block' port): wait for room, unless we are aborted.
                    if self.abort.is_set():
                        return
                    sock.poll(POLL_MS, zmq.POLLOUT)

    def close(self, linger_ms: int = LINGER_MS) -> None:
        """Close every socket; what is still queued is sent for up to ``linger_ms`` (-1: until delivered)."""
        for sock in self._sockets.values():
            sock.close(linger=linger_ms)
        self._sockets.clear()


class ZmqReceiver:
    """Moves messages from the bound PULL sockets of a node's input ports into its inbox.

    :meth:`pump` runs on the node's own thread (the driver calls it instead of waiting on the
    inbox), so a message goes from socket to ``on_message`` without a thread hand-off. A ``block``
    port whose queue is full is not read at all until there is room: its socket fills up to the HWM
    and the sender waits, which is the backpressure that policy promises.
    """

    def __init__(self, ctx: zmq.Context, inbox: Inbox, bindings: Mapping[str, str],
                 port_specs: Mapping[str, PortSpec], stats: NodeStats,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.inbox = inbox
        self.stats = stats
        self.max_message_bytes = max_message_bytes
        self.port_specs = dict(port_specs)
        self._logged_kinds: set[str] = set()
        self.ends_received: deque[tuple[str, str]] = deque()
        """(port, upstream node) of each END_OF_STREAM received, for the worker to acknowledge (thread-safe)."""
        self._sockets: dict[zmq.Socket, str] = {}
        for port, ep in bindings.items():
            sock = ctx.socket(zmq.PULL)
            sock.setsockopt(zmq.RCVHWM, HWM)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(ep)
            self._sockets[sock] = port
        self._poller = zmq.Poller()
        self._registered: set[zmq.Socket] = set()

    def reject(self, kind: str, port: str, detail: str) -> None:
        """Count a rejected message and log the first one of each kind."""
        self.stats.count_rejected(kind)
        if kind not in self._logged_kinds:
            self._logged_kinds.add(kind)
            log.warning("%s.%s: rejected a %s message: %s (further ones are counted, not logged)",
                        self.stats.node, port, kind, detail)

    def handle(self, port: str, frames: Sequence[zmq.Frame | bytes]) -> None:
        """Validate one received message and put it into the inbox (the caller made sure there is room)."""
        try:
            msg = decode(frames, self.max_message_bytes)
        except WireError as exc:
            self.reject(exc.kind, port, exc.detail)
            return
        spec = self.port_specs[port]
        if not msg.is_control and not isinstance(msg, spec.types):
            self.reject("malformed", port, f"a {msg.type_name} arrived on a port that accepts {spec.type_names()}")
            return
        self.inbox.put(port, msg, timeout=0)
        if isinstance(msg, Control) and msg.kind is ControlKind.END_OF_STREAM:
            self.ends_received.append((port, msg.header.source))

    def pump(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for input, then move what is there into the inbox (bounded batches)."""
        readable = set()
        for sock, port in self._sockets.items():
            room = self.inbox.room(port)
            if room > 0 and sock not in self._registered:
                self._poller.register(sock, zmq.POLLIN)
                self._registered.add(sock)
            elif room == 0 and sock in self._registered:
                self._poller.unregister(sock)
                self._registered.discard(sock)
        if not self._registered:
            # Every port is full: the node has work queued, so do not wait here.
            return
        for sock, _ in self._poller.poll(int(timeout_s * 1000)):
            readable.add(sock)
        for sock in readable:
            port = self._sockets[sock]
            # Drain a bounded batch, never more than the port has room for, so no port starves another.
            for _ in range(min(64, self.inbox.room(port))):
                try:
                    frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self.handle(port, frames)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close(linger=0)
        self._sockets.clear()
