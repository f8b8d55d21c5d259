"""Bounded input queues with a declared policy and a max age.

Each input port of a node has a :class:`QueueConfig`. A node's ports share one :class:`Inbox`, which
the node's thread drains in arrival order. Rules:

* ``drop_oldest``: at capacity, the oldest queued data message is dropped (counted as ``overflow``).
* ``latest``: only the newest data message is kept (capacity 1); the one it replaces is counted.
* ``block``: at capacity, ``put`` waits for room (backpressure up to the producer).
* max age: a data message older than ``max_age_ns`` when it reaches the head is dropped (``stale``).
  Age is measured from the message's capture time (``header.t_ns``, comparable on one machine) or,
  with ``age_from="arrival"`` (for edges between machines), from when it entered this queue.
* Control messages are never dropped or aged. START, STOP and FLUSH overtake queued data;
  END_OF_STREAM keeps its place behind the data it follows.

Nothing here grows without bound: data is capped by capacity, overtaking controls by
``control_capacity`` (a producer of too many controls blocks like a ``block`` port).
"""

from __future__ import annotations

import enum
import itertools
import threading
from collections import deque
from dataclasses import dataclass

from kikimimi.engine.clock import Clock
from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import Control, ControlKind, Message
from kikimimi.engine.metrics import DROP_ABORTED, DROP_FLUSHED, DROP_OVERFLOW, DROP_STALE, NodeStats


class Policy(enum.Enum):
    LATEST = "latest"
    DROP_OLDEST = "drop_oldest"
    BLOCK = "block"


POLICY_NAMES = tuple(p.value for p in Policy)
AGE_FROM = ("capture", "arrival")
DEFAULT_CAPACITY = 64


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """How one input port queues: policy, capacity (data messages) and max age (None: no limit)."""

    policy: Policy = Policy.DROP_OLDEST
    capacity: int = DEFAULT_CAPACITY
    max_age_ns: int | None = None
    age_from: str = "capture"

    def __post_init__(self) -> None:
        if not isinstance(self.policy, Policy):
            raise ParamError(f"queue policy {self.policy!r} is not allowed; allowed: {', '.join(POLICY_NAMES)}")
        if not isinstance(self.capacity, int) or isinstance(self.capacity, bool) or self.capacity < 1:
            raise ParamError(f"queue capacity must be an int >= 1, got {self.capacity!r}")
        if self.policy is Policy.LATEST and self.capacity != 1:
            raise ParamError(f"policy 'latest' keeps exactly one message; capacity must be 1, got {self.capacity}")
        if self.max_age_ns is not None and (not isinstance(self.max_age_ns, int) or self.max_age_ns <= 0):
            raise ParamError(f"max age must be a positive number of nanoseconds or None, got {self.max_age_ns!r}")
        if self.age_from not in AGE_FROM:
            raise ParamError(f"age_from {self.age_from!r} is not allowed; allowed: {', '.join(AGE_FROM)}")

    @classmethod
    def make(cls, policy: str | Policy = "drop_oldest", capacity: int | None = None,
             max_age_ms: float | None = None, age_from: str = "capture") -> QueueConfig:
        """Build from plain values (as in graph files); capacity defaults by policy."""
        if not isinstance(policy, Policy):
            try:
                policy = Policy(policy)
            except ValueError:
                raise ParamError(
                    f"queue policy {policy!r} is not allowed; allowed: {', '.join(POLICY_NAMES)}"
                ) from None
        if capacity is None:
            capacity = 1 if policy is Policy.LATEST else DEFAULT_CAPACITY
        if max_age_ms is not None and (
            isinstance(max_age_ms, bool) or not isinstance(max_age_ms, (int, float))
            or not 0 < max_age_ms < float("inf")
        ):
            raise ParamError(f"max_age_ms must be a positive number, got {max_age_ms!r}")
        age = None if max_age_ms is None else int(max_age_ms * 1_000_000)
        return cls(policy, capacity, age, age_from)


class _Lane:
    """The data lane of one port: data messages plus END_OF_STREAM markers, in arrival order."""

    __slots__ = ("config", "entries", "n_data", "name")

    def __init__(self, name: str, config: QueueConfig) -> None:
        self.name = name
        self.config = config
        self.entries: deque[tuple[int, int, Message]] = deque()  # (order, arrival_ns, message)
        self.n_data = 0

    def drop_oldest_data(self) -> None:
        for i, (_, _, m) in enumerate(self.entries):
            if not m.is_control:
                del self.entries[i]
                self.n_data -= 1
                return


class Inbox:
    """All input ports of one node, drained by the node's thread in arrival order."""

    def __init__(self, stats: NodeStats, clock: Clock, control_capacity: int = 1024) -> None:
        self.stats = stats
        self.clock = clock
        self.control_capacity = control_capacity
        self._cond = threading.Condition()
        self._lanes: dict[str, _Lane] = {}
        self._controls: deque[tuple[str, Control]] = deque()
        self._order = itertools.count()
        self._closed = False

    def add_port(self, name: str, config: QueueConfig) -> None:
        if name in self._lanes:
            raise ParamError(f"input port {name!r} was added twice")
        self._lanes[name] = _Lane(name, config)

    @property
    def ports(self) -> dict[str, QueueConfig]:
        return {n: lane.config for n, lane in self._lanes.items()}

    def close(self, discard: bool = False) -> None:
        """Wake every waiter; blocked puts give up (returning False) and new puts are refused.

        With ``discard`` (a hard stop), queued data is thrown away and counted as ``aborted``.
        """
        with self._cond:
            self._closed = True
            if discard:
                for lane in self._lanes.values():
                    if lane.n_data:
                        self.stats.count_drop(DROP_ABORTED, lane.n_data)
                    lane.entries.clear()
                    lane.n_data = 0
            self._cond.notify_all()

    def room(self, port: str) -> int:
        """How many more data messages ``port`` takes without waiting (a large number unless it blocks)."""
        lane = self._lanes[port]
        if lane.config.policy is not Policy.BLOCK:
            return 1 << 30
        return max(0, lane.config.capacity - lane.n_data)

    def depth(self, port: str) -> int:
        """Data messages queued on ``port``."""
        return self._lanes[port].n_data

    # ------------------------------------------------------------------ producer side
    def put(self, port: str, msg: Message, timeout: float | None = None) -> bool:
        """Offer ``msg`` to ``port``. Returns True if it was queued (possibly displacing an older one).

        Returns False only when the inbox is closed or a ``block`` port stayed full for ``timeout``
        seconds; the message is then not queued and the caller still owns it (nothing is counted).
        """
        lane = self._lanes.get(port)
        if lane is None:
            raise ParamError(f"no input port {port!r}; ports: {', '.join(self._lanes) or '(none)'}")
        now = self.clock.now_ns()
        with self._cond:
            if self._closed:
                return False
            if msg.is_control:
                return self._put_control(lane, msg, now, timeout)  # type: ignore[arg-type]
            cfg = lane.config
            if lane.n_data >= cfg.capacity:
                if cfg.policy is Policy.BLOCK:
                    if not self._cond.wait_for(lambda: self._closed or lane.n_data < cfg.capacity, timeout):
                        return False
                    if self._closed:
                        return False
                else:
                    while lane.n_data >= cfg.capacity:
                        lane.drop_oldest_data()
                        self.stats.count_drop(DROP_OVERFLOW)
            if cfg.policy is Policy.BLOCK:
                now = self.clock.now_ns()  # arrival is when it entered the queue, not when put began waiting
            lane.entries.append((next(self._order), now, msg))
            lane.n_data += 1
            self.stats.count_received()
            self._cond.notify_all()
            return True

    def _put_control(self, lane: _Lane, msg: Control, now: int, timeout: float | None) -> bool:
        if msg.kind is ControlKind.END_OF_STREAM:
            lane.entries.append((next(self._order), now, msg))
        else:
            if len(self._controls) >= self.control_capacity and not self._cond.wait_for(
                lambda: self._closed or len(self._controls) < self.control_capacity, timeout
            ):
                return False
            if self._closed:
                return False
            self._controls.append((lane.name, msg))
        self._cond.notify_all()
        return True

    # ------------------------------------------------------------------ consumer side
    def get(self, timeout: float | None = 0.0) -> tuple[str, Message] | None:
        """Next (port, message): overtaking controls first, then the oldest arrival over all ports.

        Waits up to ``timeout`` real seconds (None: until something arrives or the inbox closes;
        0: never waits). Stale data found at the head is dropped and counted on the way.
        """
        with self._cond:
            while True:
                item = self._pop()
                if item is not None:
                    self._cond.notify_all()
                    return item
                if self._closed or timeout == 0.0:
                    return None
                if not self._cond.wait(timeout):
                    item = self._pop()
                    if item is not None:
                        self._cond.notify_all()
                    return item

    def _pop(self) -> tuple[str, Message] | None:
        if self._controls:
            return self._controls.popleft()
        while True:
            best: _Lane | None = None
            for lane in self._lanes.values():
                if lane.entries and (best is None or lane.entries[0][0] < best.entries[0][0]):
                    best = lane
            if best is None:
                return None
            _, arrival, msg = best.entries.popleft()
            if msg.is_control:
                return best.name, msg
            best.n_data -= 1
            max_age = best.config.max_age_ns
            if max_age is not None:
                ref = arrival if best.config.age_from == "arrival" else msg.header.t_ns
                if self.clock.now_ns() - ref > max_age:
                    self.stats.count_drop(DROP_STALE)
                    self._cond.notify_all()  # room was made: wake a producer blocked on this lane
                    continue
            return best.name, msg

    def flush(self, port: str) -> int:
        """Discard the data queued on ``port`` (END_OF_STREAM markers stay). Returns how many."""
        with self._cond:
            lane = self._lanes[port]
            kept = deque(e for e in lane.entries if e[2].is_control)
            n = lane.n_data
            lane.entries = kept
            lane.n_data = 0
            if n:
                self.stats.count_drop(DROP_FLUSHED, n)
            self._cond.notify_all()
            return n
