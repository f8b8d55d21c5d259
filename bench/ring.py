"""Cost of AudioRing writes and reads for live audio, against the naive buffers a user might write.

Scenario: 16 kHz mono int16, 20 ms chunks (320 samples), a 60 s ring (960,000 samples), one reader
that keeps up. Each timed batch does BATCH operations between two ``time.perf_counter_ns`` calls;
the per-operation cost is the batch time / BATCH, and the median and p99 are over all batches.

Target: median <= 5 µs per write and per read (zero-copy and copy=True).
"read unaligned" reads 320 samples starting mid-chunk (each read spans two written chunks).

Naive references, measured in the same run on the same data:
  * concat: ``buf = np.concatenate([buf, chunk])[-capacity:]`` on write, slicing by absolute index
    on read (what a first attempt usually looks like);
  * deque: ``collections.deque(maxlen=...)`` of chunk arrays, reads found by chunk index (fast
    only because reads here are chunk-aligned; unaligned spans would need a concatenate).

Run:  .venv/bin/python bench/ring.py  [--batches N] [--batch B]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from kikimimi.engine.ring import AudioRing

RATE = 16_000
CHUNK = 320  # 20 ms
SECONDS = 60
CAPACITY = RATE * SECONDS
HALF = CHUNK // 2  # offset of the "unaligned" reads: each one spans two written chunks
TARGET_US = 5.0


class ConcatBuffer:
    """Growing numpy buffer trimmed to the newest ``capacity`` samples; absolute-index reads."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.buf = np.zeros((0, 1), np.int16)
        self.base = 0  # absolute index of buf[0]
        self.write_index = 0

    def write(self, chunk: np.ndarray) -> None:
        buf = np.concatenate([self.buf, chunk])
        if buf.shape[0] > self.capacity:
            drop = buf.shape[0] - self.capacity
            buf = buf[drop:]
            self.base += drop
        self.buf = buf
        self.write_index += chunk.shape[0]

    def read(self, pos: int, n: int) -> np.ndarray:
        pos = max(pos, self.base)
        return self.buf[pos - self.base: pos - self.base + n]


class DequeBuffer:
    """A deque of chunks with a maximum length; reads located by chunk index."""

    def __init__(self, capacity: int, chunk: int) -> None:
        self.chunk = chunk
        self.chunks: deque[np.ndarray] = deque(maxlen=capacity // chunk)
        self.first_chunk = 0  # absolute chunk number of chunks[0]

    def write(self, chunk: np.ndarray) -> None:
        if len(self.chunks) == self.chunks.maxlen:
            self.first_chunk += 1
        self.chunks.append(chunk)

    def read(self, pos: int, n: int) -> np.ndarray:
        i, off = divmod(pos, self.chunk)
        k = i - self.first_chunk
        if off == 0 and n == self.chunk:
            return self.chunks[k]
        parts = [self.chunks[j] for j in range(k, k + (off + n + self.chunk - 1) // self.chunk)]
        return np.concatenate(parts)[off:off + n]


def timed(batches: int, batch: int, setup: Callable[[], None], op: Callable[[], object]) -> np.ndarray:
    """Per-operation µs of each batch: ``setup`` (untimed), then ``batch`` calls of ``op`` (timed)."""
    out = np.empty(batches)
    clock = time.perf_counter_ns
    for b in range(batches):
        setup()
        t0 = clock()
        for _ in range(batch):
            op()
        out[b] = (clock() - t0) / batch / 1000.0
    return out


def steady_chunks(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(-3000, 3000, size=(CHUNK, 1), dtype=np.int16) for _ in range(n)]


def bench_ring(batches: int, batch: int, chunks: list[np.ndarray]) -> dict[str, np.ndarray]:
    ring = AudioRing(CAPACITY, channels=1, dtype=np.int16)
    reader = ring.reader(0)
    nchunks = len(chunks)
    state = {"i": 0}

    def next_chunk() -> np.ndarray:
        state["i"] += 1
        return chunks[state["i"] % nchunks]

    # Fill to steady state: the ring is full and wraps, the reader keeps up.
    for _ in range(CAPACITY // CHUNK + 7):
        ring.write(next_chunk())
    reader.skip_to(ring.write_index)

    def write() -> None:
        ring.write(next_chunk())

    def catch_up() -> None:
        reader.skip_to(ring.write_index)

    def fill() -> None:
        reader.skip_to(ring.write_index)
        for _ in range(batch):
            ring.write(next_chunk())

    def fill_unaligned() -> None:
        start = ring.write_index + HALF
        for _ in range(batch + 1):
            ring.write(next_chunk())
        reader.skip_to(start)

    results = {"write": timed(batches, batch, catch_up, write)}
    results["read"] = timed(batches, batch, fill, lambda: reader.read(CHUNK))
    results["read copy=True"] = timed(batches, batch, fill, lambda: reader.read(CHUNK, copy=True))
    results["read unaligned"] = timed(batches, batch, fill_unaligned, lambda: reader.read(CHUNK))
    # Sanity: what the reader got last is what was written last.
    reader.skip_to(ring.write_index - CHUNK)
    res = reader.read(CHUNK)
    assert res.lost == 0 and np.array_equal(res.data, chunks[state["i"] % nchunks])
    return results


def bench_naive(buf: ConcatBuffer | DequeBuffer, batches: int, batch: int,
                chunks: list[np.ndarray]) -> dict[str, np.ndarray]:
    nchunks = len(chunks)
    state = {"i": 0, "pos": 0, "w": 0}

    def write() -> None:
        state["i"] += 1
        buf.write(chunks[state["i"] % nchunks])
        state["w"] += CHUNK

    for _ in range(CAPACITY // CHUNK + 7):
        write()

    def fill() -> None:
        state["pos"] = state["w"]
        for _ in range(batch):
            write()

    def fill_unaligned() -> None:
        state["pos"] = state["w"] + HALF
        for _ in range(batch + 1):
            write()

    def read() -> np.ndarray:
        data = buf.read(state["pos"], CHUNK)
        state["pos"] += CHUNK
        return data

    def nothing() -> None:
        pass

    results = {"write": timed(batches, batch, nothing, write)}
    results["read"] = timed(batches, batch, fill, read)
    results["read unaligned"] = timed(batches, batch, fill_unaligned, read)
    state["pos"] = state["w"] - CHUNK
    assert np.array_equal(read(), chunks[state["i"] % nchunks])
    return results


def stats(x: np.ndarray) -> tuple[float, float]:
    return float(np.median(x)), float(np.percentile(x, 99))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=3000, help="timed batches per measurement")
    ap.add_argument("--batch", type=int, default=10, help="operations per timed batch")
    ap.add_argument("--naive-batches", type=int, default=300,
                    help="timed batches for the slow concat reference")
    args = ap.parse_args()

    chunks = steady_chunks(64)
    print(f"AudioRing: {RATE} Hz int16 mono, {CHUNK}-sample (20 ms) chunks, {SECONDS} s ring "
          f"({CAPACITY:,} samples), one reader")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}; "
          f"{args.batches} batches x {args.batch} ops (concat: {args.naive_batches} batches)\n")

    ring = bench_ring(args.batches, args.batch, chunks)
    concat = bench_naive(ConcatBuffer(CAPACITY), args.naive_batches, args.batch, chunks)
    dq = bench_naive(DequeBuffer(CAPACITY, CHUNK), args.batches, args.batch, chunks)

    head = f"{'operation':<22} {'median µs':>10} {'p99 µs':>9}  {'target':>8}  result"
    print(head)
    print("-" * len(head))
    ok = True
    for name, x in ring.items():
        med, p99 = stats(x)
        verdict = "PASS" if med <= TARGET_US else "MISS"
        ok &= verdict == "PASS"
        print(f"{'ring ' + name:<22} {med:>10.2f} {p99:>9.2f}  {'<= ' + str(TARGET_US):>8}  {verdict}")
    for label, res in (("concat", concat), ("deque", dq)):
        for name, x in res.items():
            med, p99 = stats(x)
            print(f"{label + ' ' + name:<22} {med:>10.2f} {p99:>9.2f}")

    print("\nnaive / ring (median; > 1 means the ring is faster)")
    for label, res in (("concat", concat), ("deque", dq)):
        for name in ("write", "read", "read unaligned"):
            ratio = stats(res[name])[0] / stats(ring[name])[0]
            print(f"  {label + ' ' + name:<22} {ratio:8.2f}x")
    print("\n(aligned reads are the deque's best case; unaligned ones need a concatenate. The ring gives "
          "any span as one\n contiguous view, with absolute indices and overrun accounting.)")
    print(f"\noverall: {'PASS' if ok else 'MISS'} (target: median <= {TARGET_US} µs per write and per read)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
