"""Place host-clock instants on a stream's audio sample clock.

A camera frame carries its capture time (``header.t_ns``) but no audio sample index. The audio chunks
of the same stream carry both: the index of their first sample and the capture time of their end (the
time the chunk's last sample arrived, as ``mic_source`` and ``file_source`` stamp it), so one past the
chunk's last sample pairs with ``t_ns``. :class:`ClockMap` keeps the newest such pair and the nominal
sample rate, and maps a time to a sample index by linear
extrapolation from it. Between chunks the map moves in steps of at most the chunk's jitter; it
assumes the microphone and the camera are read on the same host clock (the monotonic clock of one
machine).
"""

from __future__ import annotations

from kikimimi.engine.errors import ParamError

NS_PER_S = 1_000_000_000


class ClockMap:
    """Maps host-clock nanoseconds to audio sample indices of one stream (see the module docstring)."""

    def __init__(self, sample_rate: int) -> None:
        if sample_rate <= 0:
            raise ParamError(f"ClockMap sample_rate={sample_rate}; allowed: > 0")
        self.sample_rate = sample_rate
        self._ref: tuple[int, int] | None = None      # (sample index, t_ns) of the same instant

    @property
    def ready(self) -> bool:
        """True once an audio chunk was seen."""
        return self._ref is not None

    def observe(self, end_sample: int, t_ns: int) -> None:
        """An audio chunk whose last sample (index ``end_sample - 1``) was captured at ``t_ns``."""
        self._ref = (end_sample, t_ns)

    def sample_at(self, t_ns: int) -> int | None:
        """The audio sample index at host time ``t_ns`` (may be negative or in the future), or None."""
        if self._ref is None:
            return None
        idx, ref_t = self._ref
        return idx + (t_ns - ref_t) * self.sample_rate // NS_PER_S
