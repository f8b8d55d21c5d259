"""The base of nodes that keep state per stream.

Most nodes serve many streams at once (one per microphone, camera or client, told apart by
``header.stream_id``) and keep something for each: a model's stream state, a ring, a gate. The
bookkeeping is the same everywhere, so it lives here, once:

* the ``streams`` dict, and a stream's state made by :meth:`StreamNode.open_stream` on its first data
  message (after the port's rate check, :meth:`~kikimimi.engine.node.Node.accepts`);
* FLUSH for a stream, or for every stream (``ALL_STREAMS``): :meth:`StreamNode.flush_stream` (finish
  what is open, keep the stream);
* END_OF_STREAM for a stream or for all: :meth:`StreamNode.close_stream` (finish and forget it);
* ``on_stop``: every stream still open is closed.

A subclass implements ``open_stream`` and ``on_stream_message`` and overrides ``flush_stream`` /
``close_stream`` where it has something to finish. A node whose inputs end at different times (audio
and VAD events from two upstream nodes) overrides ``on_control`` and uses :meth:`StreamNode.targets`.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from kikimimi.engine.clock import Clock
from kikimimi.engine.messages import ALL_STREAMS, Control, ControlKind, Message
from kikimimi.engine.node import Node
from kikimimi.engine.params import ParamValues

S = TypeVar("S")


class StreamNode(Node, Generic[S]):
    """A node with per-stream state ``S``; see the module docstring for the hooks."""

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        self.streams: dict[str, S] = {}

    # ------------------------------------------------------------------ hooks for subclasses
    def open_stream(self, sid: str, msg: Message) -> S:
        """The state of a new stream ``sid``, whose first data message is ``msg``."""
        raise NotImplementedError

    def on_stream_message(self, port: str, msg: Message, st: S) -> None:
        """One data message of the stream whose state is ``st``."""

    def flush_stream(self, sid: str, st: S) -> None:
        """FLUSH: finish what is open in the stream (an utterance, a segment); the stream goes on."""

    def close_stream(self, sid: str, st: S) -> None:
        """END_OF_STREAM or stop: finish the stream; it is forgotten afterwards. Default: flush it."""
        self.flush_stream(sid, st)

    # ------------------------------------------------------------------ helpers
    def stream(self, msg: Message) -> S:
        """The state of ``msg``'s stream, made with :meth:`open_stream` if it is new."""
        sid = msg.header.stream_id
        st = self.streams.get(sid)
        if st is None:
            st = self.streams[sid] = self.open_stream(sid, msg)
        return st

    def targets(self, ctrl: Control) -> list[str]:
        """The known streams ``ctrl`` addresses: every one for ALL_STREAMS, else its own (if known)."""
        sid = ctrl.header.stream_id
        if sid == ALL_STREAMS:
            return list(self.streams)
        return [sid] if sid in self.streams else []

    # ------------------------------------------------------------------ Node hooks
    def on_message(self, port: str, msg: Message) -> None:
        """Check the port's sample rates, then hand the message to its stream."""
        if self.accepts(port, msg):
            self.on_stream_message(port, msg, self.stream(msg))

    def on_control(self, port: str, ctrl: Control) -> None:
        """FLUSH flushes the addressed streams; END_OF_STREAM closes and forgets them."""
        if ctrl.kind is ControlKind.FLUSH:
            for sid in self.targets(ctrl):
                self.flush_stream(sid, self.streams[sid])
        elif ctrl.kind is ControlKind.END_OF_STREAM:
            for sid in self.targets(ctrl):
                self.close_stream(sid, self.streams.pop(sid))

    def on_stop(self) -> None:
        """Close every stream still open, in the order they began."""
        for sid in list(self.streams):
            self.close_stream(sid, self.streams.pop(sid))
