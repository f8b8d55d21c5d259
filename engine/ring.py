"""Audio ring buffer addressed by absolute sample index.

One writer appends samples; any number of readers, each with its own position, read them back. The
storage is mirrored (every sample is stored at ``i`` and ``i + capacity``), so any span of up to
``capacity`` samples is one contiguous slice: every read is a zero-copy view.

A view stays correct only until the writer laps it. Two guards make sure overwritten data is never
passed off as valid:

* a reader that fell more than ``capacity`` samples behind gets a :class:`ReadResult` whose
  ``lost`` says how many samples it missed, and resumes at the oldest sample still held;
* the writer announces the span it is about to overwrite before copying (a sequence lock), so
  :meth:`ReadResult.still_valid` (checked after using a view) and ``read(copy=True)`` detect a write
  that raced with the read.

Thread model: one writer thread, any number of reader threads. Index updates are single attribute
stores, which are atomic in CPython.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kikimimi.engine.errors import KikimimiError


class RingError(KikimimiError, ValueError):
    """A ring buffer was asked for something it cannot do (bad shape, span larger than capacity)."""


@dataclass(frozen=True, slots=True, eq=False)
class ReadResult:
    """Samples ``[start, start + len(data))`` and how many samples before ``start`` were lost.

    ``lost`` > 0 means the reader fell behind: samples ``[start - lost, start)`` were overwritten
    before it read them, and this result resumes at the oldest sample still held.
    """

    data: np.ndarray
    start: int
    lost: int
    ring: AudioRing

    @property
    def end(self) -> int:
        return self.start + int(self.data.shape[0])

    @property
    def overrun(self) -> bool:
        return self.lost > 0

    def still_valid(self) -> bool:
        """True while no write has touched this span. Check after using a zero-copy view."""
        return self.start >= self.ring._reserved - self.ring.capacity


class AudioRing:
    """Fixed-capacity ring of audio samples, shape (capacity, channels), addressed by absolute index."""

    def __init__(self, capacity: int, channels: int = 1, dtype: np.dtype | type = np.float32,
                 start_index: int = 0) -> None:
        if not isinstance(capacity, (int, np.integer)) or capacity <= 0:
            raise RingError(f"capacity must be a positive number of samples, got {capacity!r}")
        if not isinstance(channels, (int, np.integer)) or channels <= 0:
            raise RingError(f"channels must be a positive int, got {channels!r}")
        if start_index < 0:
            raise RingError(f"start_index must be >= 0, got {start_index}")
        self.capacity = int(capacity)
        self.channels = int(channels)
        self.dtype = np.dtype(dtype)
        self._buf = np.zeros((2 * self.capacity, self.channels), dtype=self.dtype)
        self._write = int(start_index)      # one past the last sample published
        self._reserved = int(start_index)   # one past the last sample being written
        self._first = int(start_index)      # first index ever written (nothing exists before it)

    # ----------------------------------------------------------------- writer
    @property
    def write_index(self) -> int:
        """Absolute index one past the newest sample."""
        return self._write

    @property
    def first_index(self) -> int:
        """Absolute index of the first sample ever written (nothing exists before it)."""
        return self._first

    @property
    def oldest_index(self) -> int:
        """Absolute index of the oldest sample still held."""
        return max(self._first, self._write - self.capacity)

    def write(self, samples: np.ndarray) -> int:
        """Append samples (shape (n,) for mono or (n, channels)); returns the index of the first one.

        Writes longer than the capacity keep only their last ``capacity`` samples (the rest would be
        overwritten at once); indices still advance by the full length.
        """
        data = samples
        if data.ndim == 1:
            if self.channels != 1:
                raise RingError(f"got mono samples for a ring of {self.channels} channels")
            data = data.reshape(-1, 1)
        elif data.ndim != 2 or data.shape[1] != self.channels:
            raise RingError(f"samples must have shape (n, {self.channels}), got {data.shape}")
        start = self._write
        n = int(data.shape[0])
        if n == 0:
            return start
        if n > self.capacity:
            skip = n - self.capacity
            data = data[skip:]
            self._reserved = start + n
            self._store(start + skip, data)
        else:
            self._reserved = start + n
            self._store(start, data)
        self._write = start + n
        return start

    def _store(self, start: int, data: np.ndarray) -> None:
        cap = self.capacity
        n = data.shape[0]
        p = start % cap
        buf = self._buf
        buf[p:p + n] = data
        if p + n <= cap:
            buf[p + cap:p + cap + n] = data
        else:
            head = cap - p
            buf[p + cap:] = data[:head]
            buf[:n - head] = data[head:]

    # ----------------------------------------------------------------- random access
    def view(self, start: int, end: int) -> np.ndarray:
        """Zero-copy view of samples ``[start, end)``. Raises RingError if any of them is not held."""
        if end < start:
            raise RingError(f"span end {end} is before start {start}")
        if end - start > self.capacity:
            raise RingError(f"span of {end - start} samples exceeds the capacity {self.capacity}")
        if start < self.oldest_index or end > self._write:
            raise RingError(
                f"samples [{start}, {end}) are not held; held: [{self.oldest_index}, {self._write})"
            )
        p = start % self.capacity
        return self._buf[p:p + (end - start)]

    def reader(self, start: int | None = None) -> RingReader:
        """A new reader positioned at ``start`` (default: the current write index)."""
        return RingReader(self, self._write if start is None else int(start))


class RingReader:
    """One consumer's position in an :class:`AudioRing`."""

    __slots__ = ("position", "ring")

    def __init__(self, ring: AudioRing, start: int) -> None:
        if start < ring._first:
            raise RingError(f"reader start {start} is before the ring's first sample {ring._first}")
        self.ring = ring
        self.position = start

    @property
    def available(self) -> int:
        """Samples ready to read (counting ones already lost to an overrun)."""
        return max(0, self.ring._write - self.position)

    def read(self, max_samples: int | None = None, copy: bool = False) -> ReadResult:
        """Read up to ``max_samples`` (default: all available, capped at capacity) and advance.

        With ``copy=False`` the data is a zero-copy view; call ``still_valid()`` after using it.
        With ``copy=True`` the data is a private copy that was verified after copying.
        """
        ring = self.ring
        w = ring._write
        lost = 0
        oldest = w - ring.capacity
        pos = self.position
        if pos < oldest:
            lost = oldest - pos
            pos = oldest
        n = max(0, w - pos)  # 0 while the reader waits ahead of the writer (skip_to / reader(start))
        if max_samples is not None and max_samples < n:
            n = max(0, int(max_samples))
        p = pos % ring.capacity
        data = ring._buf[p:p + n]
        if copy:
            data = data.copy()
            # Sequence-lock check: a write that began during the copy may have touched our span.
            limit = ring._reserved - ring.capacity
            if pos < limit:
                extra = limit - pos
                lost += extra
                pos = limit
                data = data[extra:] if extra < n else data[:0]
                n = data.shape[0]
        self.position = pos + n
        return ReadResult(data, pos, lost, ring)

    def read_exact(self, n: int, copy: bool = False) -> ReadResult | None:
        """Read exactly ``n`` samples, or return None (and stay put) if fewer are available.

        If the reader had fallen behind, the result resumes at the oldest held sample and reports
        ``lost``.
        """
        if n > self.ring.capacity:
            raise RingError(f"cannot read {n} samples at once from a ring of capacity {self.ring.capacity}")
        oldest = self.ring._write - self.ring.capacity
        pos = max(self.position, oldest)
        if self.ring._write - pos < n:
            return None
        return self.read(n, copy=copy)

    def skip_to(self, index: int) -> None:
        """Move the reader to absolute ``index`` (forward or back within what the ring has seen)."""
        if index < self.ring._first:
            raise RingError(f"index {index} is before the ring's first sample {self.ring._first}")
        self.position = int(index)
