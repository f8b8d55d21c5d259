"""The Node base class: ports, parameters, lifecycle hooks and ``emit``.

A node kind declares its input and output ports (with the message types they carry and, for inputs, a
default queue config), its parameters, and overrides the hooks it needs:

* ``on_start()`` once before the first message,
* ``on_message(port, msg)`` for each data message,
* ``on_control(port, ctrl)`` for START / STOP / FLUSH / END_OF_STREAM (default: nothing),
* ``on_tick(now_ns)`` every ``tick_interval_ns`` if that is > 0,
* ``on_stop()`` once after the last message (emit final results here).

Sources subclass :class:`Source` and implement ``produce(stop)``, called in a loop until it returns
False (end of input) or ``stop`` is set. A runner owns the thread; the node never sleeps on wall time
except through its clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kikimimi.engine.clock import Clock
from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import ALL_STREAMS, NO_SAMPLE, Control, ControlKind, Header, Message
from kikimimi.engine.metrics import NodeStats
from kikimimi.engine.params import Param, ParamValues, validate_params, validate_plugin_params
from kikimimi.engine.queues import QueueConfig

EmitFn = Callable[[str, Message], None]


@dataclass(frozen=True, slots=True)
class PortSpec:
    """A named port and the message types it carries; inputs also have a default queue config."""

    name: str
    types: tuple[type[Message], ...]
    queue: QueueConfig = field(default_factory=QueueConfig)
    help: str = ""
    rates: tuple[int, ...] = ()
    """Sample rates (Hz) this input accepts; () = any. Checked by :meth:`Node.accepts` on messages with a
    ``sample_rate``."""

    def accepts(self, types: tuple[type[Message], ...]) -> bool:
        """True if any of ``types`` is (a subclass of) a type this port carries."""
        return any(issubclass(t, self.types) for t in types)

    def type_names(self) -> str:
        return ", ".join(t.__name__ for t in self.types)


class ThrottledLog:
    """Logs a given key at most once per ``interval_s`` (real time), reporting how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval_s: float = 5.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, level: int, key: str, msg: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        n = self._suppressed.pop(key, 0)
        if n:
            msg += f" ({n} similar messages suppressed)"
        self.logger.log(level, msg, *args, exc_info=exc_info)


class Node:
    """Base of every node kind. See the module docstring for the hooks."""

    kind: ClassVar[str] = ""
    help: ClassVar[str] = ""
    inputs: ClassVar[tuple[PortSpec, ...]] = ()
    outputs: ClassVar[tuple[PortSpec, ...]] = ()
    params: ClassVar[tuple[Param, ...]] = ()
    tick_interval_ns: int = 0
    param_selector: ClassVar[str] = ""
    """For a kind with plug-ins that declare their own parameters (the asr node's backends): the parameter
    whose value names the plug-in in use (see :meth:`plugin_names`, :meth:`plugin_params`)."""
    lossless_params: ClassVar[Mapping[str, Any]] = {}
    """Set when the graph plays files as fast as possible (:meth:`GraphSpec.lossless`, ``--speed 0``): what
    this kind would decide by the wall clock (intervals adapted to decode time, waits, skipping to keep up)
    is made to depend on the data alone, so that a run repeats exactly."""
    batch_params: ClassVar[Mapping[str, Any]] = {}
    """Set on top of ``lossless_params`` for batch transcription (:meth:`GraphSpec.batch`, ``kikimimi
    transcribe``): no partial results, the most accurate settings. A plug-in's keys (``whisper.beam_size``)
    apply only while that plug-in is selected."""

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        from kikimimi.engine.clock import MonotonicClock

        self.name = name
        self.p = params if isinstance(params, ParamValues) else self.check_params(
            params, f"node {name!r} ({self.kind})"
        )
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.stats = NodeStats(name)
        self.log = logging.getLogger(f"kikimimi.node.{name}")
        self.throttled = ThrottledLog(self.log)
        self._emit: EmitFn | None = None
        # Input ports with at least one upstream, set by the driver; None when a test feeds the node by hand.
        self.connected_inputs: frozenset[str] | None = None
        self._outputs = {p.name for p in self.outputs}
        self._seq: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------ parameters
    @classmethod
    def check_params(cls, given: Mapping[str, Any] | None, where: str) -> ParamValues:
        """``given`` validated: this kind's ``params`` and, with a ``param_selector``, the parameters of the
        plug-in in use (:func:`~kikimimi.engine.params.validate_plugin_params`)."""
        if not cls.param_selector:
            return validate_params(cls.params, given, where)
        return validate_plugin_params(cls.params, given, where, cls.param_selector, cls.plugin_names(),
                                      cls.plugin_params)

    @classmethod
    def with_profile(cls, profile: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` with ``profile`` (``lossless_params`` or ``batch_params``) applied, leaving out the keys
        of a plug-in other than the one ``params`` select."""
        selected = None
        if cls.param_selector:
            default = next((p.default for p in cls.params if p.name == cls.param_selector), None)
            selected = params.get(cls.param_selector, default)
        out = dict(params)
        for key, value in profile.items():
            plugin, dot, _ = key.partition(".")
            if not dot or plugin == selected:
                out[key] = value
        return out

    @classmethod
    def plugin_names(cls) -> list[str]:
        """The plug-ins ``param_selector`` may name (none by default)."""
        return []

    @classmethod
    def plugin_params(cls, name: str) -> tuple[Param, ...]:
        """The parameters plug-in ``name`` declares (given as ``NAME`` or ``PLUGIN.NAME``); none by default."""
        return ()

    # ------------------------------------------------------------------ wiring (runner)
    def bind(self, emit: EmitFn) -> None:
        """Called by the runner: where ``emit`` sends messages."""
        self._emit = emit

    @classmethod
    def input_spec(cls, port: str) -> PortSpec | None:
        return next((p for p in cls.inputs if p.name == port), None)

    @classmethod
    def output_spec(cls, port: str) -> PortSpec | None:
        return next((p for p in cls.outputs if p.name == port), None)

    # ------------------------------------------------------------------ helpers for subclasses
    def header(self, port: str, stream_id: str, sample_index: int = NO_SAMPLE,
               t_ns: int | None = None) -> Header:
        """A header with the next sequence number for (port, stream) and ``t_ns`` (default: now)."""
        key = (port, stream_id)
        seq = self._seq.get(key, 0)
        self._seq[key] = seq + 1
        return Header(stream_id, seq, sample_index, self.clock.now_ns() if t_ns is None else t_ns, self.name)

    def emit(self, port: str, msg: Message) -> None:
        """Send ``msg`` out of output ``port`` to every connected input."""
        if port not in self._outputs:
            raise ParamError(f"node {self.name!r} has no output port {port!r}; outputs: {sorted(self._outputs)}")
        if self._emit is not None:
            self._emit(port, msg)
        self.stats.count_emitted()

    def emit_control(self, kind: ControlKind, stream_id: str = ALL_STREAMS, reason: str = "") -> None:
        """Send a control message out of every output port."""
        for port in self._outputs:
            self.emit(port, Control(self.header(port, stream_id), kind, reason))

    def accepts(self, port: str, msg: Message, rates: tuple[int, ...] | None = None) -> bool:
        """True if ``msg``'s ``sample_rate`` is one the input ``port`` declares (or one of ``rates``, for a
        node whose rates depend on its parameters; messages without a ``sample_rate`` always pass). Else
        count it as rejected (``sample_rate``), log (throttled, per stream) what was dropped and what is
        allowed, and return False: the stream goes on with its next message."""
        rate = getattr(msg, "sample_rate", None)
        if rates is None:
            spec = self.input_spec(port)
            rates = spec.rates if spec is not None else ()
        if rate is None or not rates or rate in rates:
            return True
        sid = msg.header.stream_id
        self.stats.count_rejected("sample_rate")
        self.throttled(logging.WARNING, f"rate:{sid}:{rate}", "%s %s: dropping %s of stream %r at %d Hz; allowed "
                       "sample rates: %s", self.kind, self.name, msg.type_name, sid, rate,
                       ", ".join(map(str, rates)))
        return False

    # ------------------------------------------------------------------ hooks
    def on_start(self) -> None:
        """Called once before any message."""

    def on_message(self, port: str, msg: Message) -> None:
        """Called for each data message arriving on ``port``."""

    def on_control(self, port: str, ctrl: Control) -> None:
        """Called for each control message (END_OF_STREAM included) arriving on ``port``."""

    def on_tick(self, now_ns: int) -> None:
        """Called every ``tick_interval_ns`` nanoseconds when that is > 0."""

    def on_stop(self) -> None:
        """Called once after the last message; emit final results here."""


def control_targets(ctrl: Control, streams: Iterable[str]) -> list[str]:
    """The streams (of ``streams``) that ``ctrl`` addresses: all of them for ALL_STREAMS, else its own."""
    sid = ctrl.header.stream_id
    known = list(streams)
    return known if sid == ALL_STREAMS else [sid] if sid in known else []


class Source(Node):
    """A node with no inputs that produces messages from the outside world (file, device, network)."""

    def produce(self, stop: threading.Event) -> bool:
        """Emit what is ready now (pacing through ``self.clock``). Return False at the end of input."""
        raise NotImplementedError
