"""Re-chunking audio on the sample clock: fixed chunks of ``chunk_ms`` on a stream's absolute sample grid.

Used by the media reader (:mod:`kikimimi.models.media`, what ``file_source`` plays) and ``mic_source``.
Sample format conversions live in :mod:`kikimimi.models.pcm`.
"""

from __future__ import annotations

import numpy as np

CHUNK_MS_CHOICES = (10, 20, 30, 40, 50, 100)


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
