"""Helpers shared by the benchmarks: summary statistics and the capture clock of a played file."""

from __future__ import annotations

import statistics

import numpy as np

from kikimimi.engine.msgs.audio import AudioChunk

NS_PER_S = 1_000_000_000


def med(x: list[float]) -> float:
    """Median, or NaN for no values."""
    return statistics.median(x) if x else float("nan")


def p90(x: list[float]) -> float:
    """90th percentile, or NaN for no values."""
    return float(np.percentile(x, 90)) if x else float("nan")


class CaptureClock:
    """When each sample of a stream was captured, from the audio chunks' headers (t_ns = capture of a chunk's
    end): ``observe`` every chunk, then ``captured(sample)`` gives that sample's capture time in ns."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.base_ns: int | None = None   # capture time of sample 0

    def observe(self, msg: AudioChunk) -> None:
        b = msg.header.t_ns - msg.end_index * NS_PER_S // msg.sample_rate
        self.base_ns = b if self.base_ns is None else min(self.base_ns, b)

    def captured(self, sample: int) -> int:
        return (self.base_ns or 0) + sample * NS_PER_S // self.rate
