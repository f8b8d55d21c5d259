"""Clocks: where every node gets its time from.

Nodes never call ``time`` directly; they are handed a :class:`Clock`. Production code uses
:class:`MonotonicClock`; unit tests use :class:`ManualClock`, whose ``sleep_until`` advances time
instead of waiting; file playback uses :class:`ReplayClock`, which paces media time against a base
clock at a chosen speed (1.0 = real time, 0 = as fast as possible).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from kikimimi.engine.errors import ParamError

NS_PER_S = 1_000_000_000


class Clock(Protocol):
    """Integer monotonic nanoseconds, and a way to wait until a point in that time."""

    def now_ns(self) -> int: ...

    def sleep_until(self, t_ns: int, stop: threading.Event | None = None) -> bool:
        """Wait until ``now_ns() >= t_ns``. Returns False if ``stop`` was set first."""
        ...


class MonotonicClock:
    """The process's monotonic clock (CLOCK_MONOTONIC: shared by all processes of one machine)."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_until(self, t_ns: int, stop: threading.Event | None = None) -> bool:
        while True:
            left = t_ns - time.monotonic_ns()
            if left <= 0:
                return True
            if stop is None:
                time.sleep(left / NS_PER_S)
            elif stop.wait(left / NS_PER_S):
                return False


class ManualClock:
    """A clock that moves only when told to. ``sleep_until`` jumps forward instead of waiting."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = int(start_ns)
        self._lock = threading.Lock()

    def now_ns(self) -> int:
        return self._now

    def set(self, t_ns: int) -> None:
        with self._lock:
            if t_ns < self._now:
                raise ValueError(f"ManualClock cannot go backwards: {t_ns} < {self._now}")
            self._now = int(t_ns)

    def advance(self, dt_ns: int) -> None:
        if dt_ns < 0:
            raise ValueError(f"ManualClock.advance needs dt_ns >= 0, got {dt_ns}")
        with self._lock:
            self._now += int(dt_ns)

    def sleep_until(self, t_ns: int, stop: threading.Event | None = None) -> bool:
        if stop is not None and stop.is_set():
            return False
        with self._lock:
            self._now = max(self._now, int(t_ns))
        return True


class ReplayClock:
    """Paces playback of recorded media against a base clock.

    ``speed`` 1.0 plays in real time, 2.0 twice as fast, and 0 as fast as possible (never waits).
    ``now_ns`` is the base clock's time, so timestamps stay comparable with live sources;
    :meth:`capture_ns` maps a media offset to the base-clock instant the media "happened".
    """

    def __init__(self, speed: float = 1.0, base: Clock | None = None) -> None:
        if not speed >= 0:
            raise ParamError(f"ReplayClock speed must be >= 0 (0 = as fast as possible), got {speed!r}")
        self.speed = float(speed)
        self.base: Clock = base if base is not None else MonotonicClock()
        self._origin_ns: int | None = None

    @property
    def as_fast_as_possible(self) -> bool:
        return self.speed == 0.0

    def now_ns(self) -> int:
        return self.base.now_ns()

    def sleep_until(self, t_ns: int, stop: threading.Event | None = None) -> bool:
        return self.base.sleep_until(t_ns, stop)

    def start(self) -> None:
        """Pin media offset 0 to the base clock's current time."""
        self._origin_ns = self.base.now_ns()

    def capture_ns(self, media_ns: int) -> int:
        """Base-clock time at which media offset ``media_ns`` is due (now, when as fast as possible)."""
        if self._origin_ns is None:
            self.start()
        if self.speed == 0.0:
            return self.base.now_ns()
        origin = self._origin_ns if self._origin_ns is not None else 0
        return origin + int(media_ns / self.speed)

    def wait_for_media(self, media_ns: int, stop: threading.Event | None = None) -> bool:
        """Wait until media offset ``media_ns`` is due. Returns False if ``stop`` was set first."""
        if self.speed == 0.0:
            return not (stop is not None and stop.is_set())
        return self.base.sleep_until(self.capture_ns(media_ns), stop)
