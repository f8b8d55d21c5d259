"""Small audio helpers shared by the built-in nodes: sample format conversion, downmix, rate checks, re-chunking.

Not a node kind. Conversions follow one convention everywhere: float32 audio is in [-1, 1] and maps
to int16 by ``x * 32768``, rounded to the nearest integer and clipped to [-32768, 32767].
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from kikimimi.engine.errors import ParamError

CHUNK_MS_CHOICES = (10, 20, 30, 40, 50, 100)
DTYPE_CHOICES = ("int16", "float32")


def float_to_int16(x: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] to int16: scale by 32768, round, clip (out-of-range samples saturate)."""
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


def int16_to_float(x: np.ndarray) -> np.ndarray:
    """int16 to float32 in [-1, 1): divide by 32768 (exact, so float_to_int16 undoes it)."""
    return x.astype(np.float32) * np.float32(1.0 / 32768.0)


def convert(x: np.ndarray, dtype: str) -> np.ndarray:
    """Samples in either audio dtype converted to ``dtype`` ("int16" or "float32")."""
    if dtype == "int16":
        return x if x.dtype == np.int16 else float_to_int16(x)
    if dtype == "float32":
        return x if x.dtype == np.float32 else int16_to_float(x)
    raise ParamError(f"audio dtype {dtype!r} is not allowed; allowed: {', '.join(DTYPE_CHOICES)}")


def downmix(x: np.ndarray) -> np.ndarray:
    """Shape (n, channels) to mono shape (n, 1): the mean over channels, in the input's scale.

    int16 input gives the rounded int16 mean; anything else gives a float32 mean.
    """
    if x.dtype == np.int16:
        if x.shape[1] == 1:
            return x
        return np.rint(x.mean(axis=1, dtype=np.float32, keepdims=True)).astype(np.int16)
    if x.shape[1] == 1:
        return x if x.dtype == np.float32 else x.astype(np.float32)
    return x.mean(axis=1, dtype=np.float32, keepdims=True)


def mono_float32(samples: np.ndarray) -> np.ndarray:
    """Shape (n, channels) int16 or float32 to mono float32 shape (n,) in [-1, 1] (mean over channels)."""
    x = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0].astype(np.float32)
    if samples.dtype == np.int16:
        x *= np.float32(1.0 / 32768.0)
    return x


def rate_ok(node: Any, msg: Any, want: int) -> bool:
    """True if AudioChunk ``msg`` is at ``want`` Hz; else count it as rejected (``sample_rate``) on ``node``, log
    (throttled, per stream) what was dropped and what is allowed, and return False."""
    if msg.sample_rate == want:
        return True
    sid = msg.header.stream_id
    node.stats.count_rejected("sample_rate")
    node.throttled(logging.WARNING, f"rate:{sid}", "%s %s: dropping audio of stream %r at %d Hz; the sample rate "
                   "must be %d Hz", node.kind, node.name, sid, msg.sample_rate, want)
    return False


def chunk_boundary(k: int, rate: int, chunk_ms: int) -> int:
    """Absolute sample index where chunk ``k`` of the stream's chunk grid begins.

    The grid is ``floor(k * chunk_ms * rate / 1000)``: constant chunk sizes when ``chunk_ms`` ms is a
    whole number of samples, and no drift when it is not (e.g. 11025 Hz at 10 ms).
    """
    return k * chunk_ms * rate // 1000


def next_boundary(index: int, rate: int, chunk_ms: int) -> int:
    """The first chunk-grid boundary strictly after ``index``."""
    k = index * 1000 // (chunk_ms * rate) + 1
    while chunk_boundary(k, rate, chunk_ms) <= index:
        k += 1
    return chunk_boundary(k, rate, chunk_ms)


class Rechunker:
    """Collects samples of one stream and cuts them at the chunk grid of its absolute sample clock.

    ``push`` appends contiguous samples; ``pop`` returns ``(start_index, samples)`` for the next whole
    chunk, or with ``final=True`` also the short remainder. ``reset`` starts over at a new index (the
    caller pops what is pending first).
    """

    def __init__(self, rate: int, chunk_ms: int, channels: int, dtype: np.dtype | type,
                 start: int = 0) -> None:
        self.rate = rate
        self.chunk_ms = chunk_ms
        self._empty = np.zeros((0, channels), dtype=dtype)
        self._buf = self._empty
        self.start = start

    @property
    def end(self) -> int:
        """Absolute index one past the newest pending sample."""
        return self.start + int(self._buf.shape[0])

    def reset(self, start: int) -> None:
        """Discard pending samples and continue at absolute index ``start``."""
        self._buf = self._empty
        self.start = start

    def push(self, x: np.ndarray) -> None:
        """Append samples of shape (n, channels) that follow the pending ones."""
        if x.shape[0]:
            self._buf = np.concatenate((self._buf, x)) if self._buf.shape[0] else x

    def next_end(self, final: bool = False) -> int | None:
        """End index of the chunk ``pop(final)`` would return, or None if none is ready."""
        if not self._buf.shape[0]:
            return None
        boundary = next_boundary(self.start, self.rate, self.chunk_ms)
        if boundary <= self.end:
            return boundary
        return self.end if final else None

    def pop(self, final: bool = False) -> tuple[int, np.ndarray] | None:
        """The next chunk as (start index, samples), or None if none is ready."""
        end = self.next_end(final)
        if end is None:
            return None
        n = end - self.start
        start, out = self.start, self._buf[:n].copy()  # own memory: messages outlive the buffer
        self._buf = self._buf[n:]
        self.start = end
        return start, out
