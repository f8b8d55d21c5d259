"""AudioRing / RingReader: wrap-around, overrun accounting, zero-copy views, torn-write detection."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kikimimi.engine.ring import AudioRing, ReadResult, RingError


def ramp(start: int, n: int, channels: int = 1, dtype: type = np.int64) -> np.ndarray:
    """Samples whose value is their absolute index (times 10 plus the channel, when multi-channel)."""
    idx = np.arange(start, start + n, dtype=np.int64)
    if channels == 1:
        return idx.astype(dtype)
    return (idx[:, None] * 10 + np.arange(channels)[None, :]).astype(dtype)


def col(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, 1)


def assert_view(ring: AudioRing, res: ReadResult) -> None:
    """A zero-copy, contiguous view into the ring's storage."""
    if res.data.shape[0]:
        assert np.shares_memory(res.data, ring._buf)
    assert res.data.flags.c_contiguous
    assert res.data.base is ring._buf


# ------------------------------------------------------------------------------------------ basics
def test_constructor_rejects_bad_arguments() -> None:
    with pytest.raises(RingError, match="capacity"):
        AudioRing(0)
    with pytest.raises(RingError, match="capacity"):
        AudioRing(2.5)  # type: ignore[arg-type]
    with pytest.raises(RingError, match="channels"):
        AudioRing(8, channels=0)
    with pytest.raises(RingError, match="start_index"):
        AudioRing(8, start_index=-1)


def test_write_returns_start_index_and_advances() -> None:
    ring = AudioRing(10, dtype=np.int64)
    assert ring.write(ramp(0, 3)) == 0
    assert ring.write(ramp(3, 4)) == 3
    assert ring.write(ramp(7, 0)) == 7  # empty write: no-op
    assert ring.write_index == 7
    assert ring.oldest_index == 0
    np.testing.assert_array_equal(ring.view(0, 7), col(ramp(0, 7)))


def test_dtype_of_ring_is_kept() -> None:
    ring = AudioRing(4, dtype=np.int16)
    ring.write(np.array([1, 2, 3], dtype=np.int16))
    res = ring.reader(0).read()
    assert res.data.dtype == np.int16
    assert res.data.shape == (3, 1)


# ------------------------------------------------------------------------------------------ wrap-around
def test_write_and_read_crossing_the_end_of_storage() -> None:
    ring = AudioRing(10, dtype=np.int64)
    r = ring.reader(0)
    ring.write(ramp(0, 7))
    first = r.read()
    assert (first.start, first.lost, first.end) == (0, 0, 7)
    ring.write(ramp(7, 6))  # slots 7, 8, 9, 0, 1, 2: crosses the end
    res = r.read()
    assert (res.start, res.lost, res.end) == (7, 0, 13)
    np.testing.assert_array_equal(res.data, col(ramp(7, 6)))
    assert_view(ring, res)


def test_every_span_at_every_offset_is_a_correct_contiguous_view() -> None:
    cap = 7
    for offset in range(cap):
        for length in range(1, cap + 1):
            ring = AudioRing(cap, dtype=np.int64)
            # Fill past `offset` so the next samples start at slot `offset`, and the ring is full.
            ring.write(ramp(0, cap + offset))
            r = ring.reader(ring.write_index)
            ring.write(ramp(cap + offset, length))
            res = r.read()
            assert res.start == cap + offset and res.lost == 0
            np.testing.assert_array_equal(res.data, col(ramp(cap + offset, length)))
            assert_view(ring, res)
            # The whole held span is also one contiguous view.
            w = ring.write_index
            whole = ring.view(w - cap, w)
            np.testing.assert_array_equal(whole, col(ramp(w - cap, cap)))
            assert np.shares_memory(whole, ring._buf) and whole.flags.c_contiguous


def test_multi_channel_wrap_around() -> None:
    ring = AudioRing(8, channels=2, dtype=np.int64)
    r = ring.reader(0)
    ring.write(ramp(0, 5, channels=2))
    r.read()
    ring.write(ramp(5, 6, channels=2))  # crosses the end
    res = r.read()
    assert res.data.shape == (6, 2)
    np.testing.assert_array_equal(res.data, ramp(5, 6, channels=2))
    assert_view(ring, res)


def test_multi_channel_shape_checks() -> None:
    ring = AudioRing(8, channels=2)
    with pytest.raises(RingError, match="mono samples for a ring of 2 channels"):
        ring.write(np.zeros(4, dtype=np.float32))
    with pytest.raises(RingError, match=r"shape \(n, 2\)"):
        ring.write(np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(RingError, match=r"shape \(n, 2\)"):
        ring.write(np.zeros((2, 2, 2), dtype=np.float32))
    assert ring.write_index == 0
    mono = AudioRing(8)
    mono.write(np.zeros((3, 1), dtype=np.float32))  # (n, 1) is fine for mono
    mono.write(np.zeros(2, dtype=np.float32))  # and so is (n,)
    assert mono.write_index == 5


# ------------------------------------------------------------------------------------------ overrun
def test_overrun_reports_exact_loss_and_resumes_at_oldest() -> None:
    ring = AudioRing(10, dtype=np.int64)
    r = ring.reader(0)
    for i in range(5):
        ring.write(ramp(5 * i, 5))  # 25 samples written, only [15, 25) held
    assert r.available == 25
    res = r.read()
    assert res.overrun
    assert res.lost == 15
    assert res.start == 15 == ring.oldest_index
    np.testing.assert_array_equal(res.data, col(ramp(15, 10)))
    assert r.position == 25
    # Back in step: the next read is normal.
    ring.write(ramp(25, 3))
    res = r.read()
    assert (res.start, res.lost) == (25, 0)
    np.testing.assert_array_equal(res.data, col(ramp(25, 3)))


def test_overrun_with_small_max_samples_never_returns_stale_data() -> None:
    ring = AudioRing(8, dtype=np.int64)
    r = ring.reader(0)
    ring.write(ramp(0, 8))
    ring.write(ramp(8, 5))  # reader at 0 lost [0, 5)
    res = r.read(2)
    assert (res.start, res.lost) == (5, 5)
    np.testing.assert_array_equal(res.data, col(ramp(5, 2)))
    ring.write(ramp(13, 4))  # oldest is now 9; reader is at 7
    res = r.read(3)
    assert (res.start, res.lost) == (9, 2)
    np.testing.assert_array_equal(res.data, col(ramp(9, 3)))
    res = r.read()
    assert (res.start, res.lost, res.end) == (12, 0, 17)
    np.testing.assert_array_equal(res.data, col(ramp(12, 5)))


def test_several_readers_at_different_positions() -> None:
    ring = AudioRing(10, dtype=np.int64)
    early = ring.reader(0)
    ring.write(ramp(0, 6))
    late = ring.reader()  # at the write index
    assert late.position == 6
    ring.write(ramp(6, 3))
    a = early.read(4)
    b = late.read()
    assert (a.start, a.end, b.start, b.end) == (0, 4, 6, 9)
    np.testing.assert_array_equal(a.data, col(ramp(0, 4)))
    np.testing.assert_array_equal(b.data, col(ramp(6, 3)))
    ring.write(ramp(9, 8))  # w = 17, oldest 7: early (at 4) overran, late (at 9) did not
    a = early.read()
    b = late.read()
    assert (a.start, a.lost) == (7, 3)
    assert (b.start, b.lost) == (9, 0)
    np.testing.assert_array_equal(a.data, col(ramp(7, 10)))
    np.testing.assert_array_equal(b.data, col(ramp(9, 8)))
    assert early.position == late.position == 17


def test_read_max_samples_zero_and_negative_read_nothing() -> None:
    ring = AudioRing(10, dtype=np.int64)
    r = ring.reader(0)
    ring.write(ramp(0, 4))
    for m in (0, -3):
        res = r.read(m)
        assert res.data.shape == (0, 1) and res.start == 0 and res.lost == 0
    assert r.position == 0


# ------------------------------------------------------------------------------------------ read_exact
def test_read_exact() -> None:
    ring = AudioRing(10, dtype=np.int64)
    r = ring.reader(0)
    ring.write(ramp(0, 3))
    assert r.read_exact(4) is None
    assert r.position == 0  # stays put
    ring.write(ramp(3, 3))
    res = r.read_exact(4)
    assert res is not None and (res.start, res.end, res.lost) == (0, 4, 0)
    np.testing.assert_array_equal(res.data, col(ramp(0, 4)))
    assert r.read_exact(4) is None  # 2 left
    assert r.position == 4
    with pytest.raises(RingError, match="capacity 10"):
        r.read_exact(11)


def test_read_exact_after_overrun() -> None:
    ring = AudioRing(10, dtype=np.int64)
    r = ring.reader(0)
    ring.write(ramp(0, 23))  # oldest 13
    res = r.read_exact(10)
    assert res is not None and (res.start, res.lost) == (13, 13)
    np.testing.assert_array_equal(res.data, col(ramp(13, 10)))
    r2 = ring.reader(0)
    ring.write(ramp(23, 2))  # oldest 15, r2 behind by 15: 10 held, it wants 10
    res = r2.read_exact(10, copy=True)
    assert res is not None and (res.start, res.lost) == (15, 15)
    np.testing.assert_array_equal(res.data, col(ramp(15, 10)))
    assert r2.read_exact(1) is None


# ------------------------------------------------------------------------------------------ view
def test_view_returns_held_spans_and_rejects_others() -> None:
    ring = AudioRing(10, dtype=np.int64, start_index=100)
    ring.write(ramp(100, 15))  # held: [105, 115)
    v = ring.view(106, 113)
    np.testing.assert_array_equal(v, col(ramp(106, 7)))
    assert np.shares_memory(v, ring._buf)
    assert ring.view(110, 110).shape == (0, 1)
    with pytest.raises(RingError, match="before start"):
        ring.view(110, 109)
    with pytest.raises(RingError, match="exceeds the capacity"):
        ring.view(104, 115)
    with pytest.raises(RingError, match=r"not held; held: \[105, 115\)"):
        ring.view(104, 110)  # partly overwritten
    with pytest.raises(RingError, match="not held"):
        ring.view(110, 116)  # not yet written
    fresh = AudioRing(10, start_index=50)
    fresh.write(np.zeros(3, dtype=np.float32))
    with pytest.raises(RingError, match=r"held: \[50, 53\)"):
        fresh.view(48, 51)  # never written: nothing exists before the first sample


# ------------------------------------------------------------------------------------------ big writes
def test_write_larger_than_capacity_keeps_the_tail() -> None:
    ring = AudioRing(10, dtype=np.int64)
    r = ring.reader(0)
    ring.write(ramp(0, 3))
    assert ring.write(ramp(3, 27)) == 3  # 27 > capacity, starting mid-storage
    assert ring.write_index == 30 and ring.oldest_index == 20
    np.testing.assert_array_equal(ring.view(20, 30), col(ramp(20, 10)))
    res = r.read()
    assert (res.start, res.lost) == (20, 20)
    np.testing.assert_array_equal(res.data, col(ramp(20, 10)))
    assert_view(ring, res)
    ring.write(ramp(30, 10))  # exactly capacity
    res = r.read()
    assert (res.start, res.lost) == (30, 0)
    np.testing.assert_array_equal(res.data, col(ramp(30, 10)))
    # And the mirror is intact for spans crossing the end.
    np.testing.assert_array_equal(ring.view(33, 40), col(ramp(33, 7)))


# ------------------------------------------------------------------------------------------ still_valid
def test_still_valid_goes_false_exactly_when_the_writer_laps_the_view() -> None:
    ring = AudioRing(10, dtype=np.int64)
    r = ring.reader(0)
    ring.write(ramp(0, 4))
    ring.write(ramp(4, 4))
    res = r.read(4)  # view of [0, 4)
    r.read()
    assert res.still_valid()
    ring.write(ramp(8, 2))  # write index 10 == start + capacity: sample 0 still held
    assert res.still_valid()
    np.testing.assert_array_equal(res.data, col(ramp(0, 4)))
    ring.write(ramp(10, 1))  # overwrites sample 0's slot
    assert not res.still_valid()
    assert res.data[0, 0] == 10  # the view now shows other data, which is why it must be checked


def test_still_valid_is_false_while_a_write_is_in_progress() -> None:
    """The writer announces the span before copying: a view checked mid-write is already invalid."""
    ring = AudioRing(8, dtype=np.int64)
    r = ring.reader(0)
    ring.write(ramp(0, 8))
    res = r.read(3)  # [0, 3)
    seen: list[tuple[bool, int]] = []
    real_store = ring._store

    def spying_store(start: int, data: np.ndarray) -> None:
        seen.append((res.still_valid(), ring.write_index))  # before any byte moved
        real_store(start, data)

    ring._store = spying_store  # type: ignore[method-assign]
    ring.write(ramp(8, 1))  # will overwrite sample 0's slot
    assert seen == [(False, 8)]  # invalid already, though not yet published
    assert not res.still_valid()


# ------------------------------------------------------------------------------------------ copy=True
def test_read_copy_returns_private_data() -> None:
    ring = AudioRing(10, dtype=np.int64)
    r = ring.reader(0)
    ring.write(ramp(0, 8))
    res = r.read(6, copy=True)
    assert not np.shares_memory(res.data, ring._buf)
    ring.write(ramp(8, 20))  # laps everything
    np.testing.assert_array_equal(res.data, col(ramp(0, 6)))
    assert not res.still_valid()  # still_valid talks about the ring span; the copy itself is safe


def test_read_copy_drops_samples_a_racing_write_may_have_touched() -> None:
    """Emulate a write announced (reserved) but not yet published while the reader copies."""
    ring = AudioRing(10, dtype=np.int64)
    r = ring.reader(0)
    ring.write(ramp(0, 10))
    ring._reserved = 13  # writer is about to overwrite the slots of samples 0, 1, 2
    res = r.read(copy=True)
    assert (res.start, res.lost) == (3, 3)
    np.testing.assert_array_equal(res.data, col(ramp(3, 7)))
    assert r.position == 10
    # A copy that lies wholly inside the announced span comes back empty, all lost.
    r2 = ring.reader(0)
    res = r2.read(2, copy=True)
    assert res.data.shape == (0, 1) and (res.start, res.lost) == (3, 3)
    assert r2.position == 3
    # A zero-copy read in that state is flagged by still_valid().
    r3 = ring.reader(0)
    assert not r3.read(2).still_valid()


# ------------------------------------------------------------------------------------------ positions
def test_start_index_and_reader_positions_are_absolute() -> None:
    ring = AudioRing(10, dtype=np.int64, start_index=1_000_000)
    assert ring.write_index == ring.oldest_index == ring.first_index == 1_000_000
    r = ring.reader()
    ring.write(ramp(1_000_000, 4))
    res = r.read()
    assert (res.start, res.end) == (1_000_000, 1_000_004)
    np.testing.assert_array_equal(res.data, col(ramp(1_000_000, 4)))
    with pytest.raises(RingError, match="before the ring's first sample"):
        ring.reader(999_999)
    with pytest.raises(RingError, match="before the ring's first sample"):
        r.skip_to(5)
    r.skip_to(1_000_001)
    res = r.read()
    assert res.start == 1_000_001 and res.lost == 0
    ring.write(ramp(1_000_004, 20))
    assert ring.oldest_index == 1_000_014 and ring.first_index == 1_000_000


def test_reader_ahead_of_the_writer_waits_for_its_position() -> None:
    """A reader placed at a future index reads nothing (and does not move) until data reaches it."""
    ring = AudioRing(10, dtype=np.int64)
    ring.write(ramp(0, 5))
    r = ring.reader(0)
    r.skip_to(12)
    assert r.available == 0
    res = r.read()
    assert res.data.shape == (0, 1) and res.start == 12 and res.lost == 0
    assert r.position == 12
    assert r.read_exact(1) is None
    ring.write(ramp(5, 10))
    res = r.read()
    assert (res.start, res.end, res.lost) == (12, 15, 0)
    np.testing.assert_array_equal(res.data, col(ramp(12, 3)))


def test_skip_back_within_held_data_rereads() -> None:
    ring = AudioRing(10, dtype=np.int64)
    r = ring.reader(0)
    ring.write(ramp(0, 12))  # held [2, 12)
    r.read()
    r.skip_to(5)
    res = r.read(3)
    assert (res.start, res.lost) == (5, 0)
    np.testing.assert_array_equal(res.data, col(ramp(5, 3)))
    r.skip_to(0)  # seen but no longer held: counted as lost
    res = r.read(1)
    assert (res.start, res.lost) == (2, 2)


# ------------------------------------------------------------------------------------------ model check
@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, int, list[tuple]]:
    cap = draw(st.integers(1, 24))
    channels = draw(st.integers(1, 2))
    n_readers = draw(st.integers(1, 3))
    max_sizes = [draw(st.one_of(st.none(), st.integers(0, 2 * cap))) for _ in range(n_readers)]
    op = st.one_of(
        st.tuples(st.just("write"), st.integers(0, 3 * cap)),
        st.tuples(st.just("read"), st.integers(0, n_readers - 1), st.booleans(),
                  st.one_of(st.none(), st.integers(0, 2 * cap))),
        st.tuples(st.just("exact"), st.integers(0, n_readers - 1), st.booleans(), st.integers(0, cap)),
    )
    ops = draw(st.lists(op, max_size=40))
    return cap, channels, [("readers", max_sizes), *ops]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), seed=st.integers(0, 2**32 - 1))
def test_ring_matches_a_model_of_everything_written(
    scenario: tuple[int, int, list[tuple]], seed: int
) -> None:
    cap, channels, ops = scenario
    rng = np.random.default_rng(seed)
    ring = AudioRing(cap, channels=channels, dtype=np.int32)
    model = np.zeros((0, channels), dtype=np.int32)  # every sample ever written, by absolute index
    max_sizes = ops[0][1]
    readers = [ring.reader(0) for _ in max_sizes]

    def check(i: int, res: ReadResult | None, prev: int, copy: bool, want: int | None) -> None:
        w = ring.write_index
        if res is None:  # read_exact said "not enough"
            assert want is not None and w - max(prev, w - cap) < want
            assert readers[i].position == prev
            return
        assert res.start == max(prev, w - cap)  # resumes at the oldest held sample, never earlier
        assert res.lost == res.start - prev
        expected_n = w - res.start
        if want is not None:
            expected_n = min(expected_n, max(0, want))
        assert res.data.shape == (expected_n, channels)
        np.testing.assert_array_equal(res.data, model[res.start:res.end])
        assert readers[i].position == res.end
        assert res.still_valid()
        if copy:
            assert not np.shares_memory(res.data, ring._buf)
        else:
            assert res.data.base is ring._buf and res.data.flags.c_contiguous

    for op in ops[1:]:
        if op[0] == "write":
            data = rng.integers(-(2**31), 2**31, size=(op[1], channels), dtype=np.int32)
            start = ring.write(data if channels > 1 or rng.random() < 0.5 else data[:, 0])
            assert start == model.shape[0]
            model = np.concatenate([model, data])
            w = model.shape[0]
            assert ring.write_index == w and ring.oldest_index == max(0, w - cap)
            np.testing.assert_array_equal(ring.view(ring.oldest_index, w), model[ring.oldest_index:])
        elif op[0] == "read":
            _, i, copy, per_read = op
            limit = per_read if per_read is not None else max_sizes[i]
            prev = readers[i].position
            check(i, readers[i].read(limit, copy=copy), prev, copy, limit)
        else:
            _, i, copy, n = op
            prev = readers[i].position
            check(i, readers[i].read_exact(n, copy=copy), prev, copy, n)


# ------------------------------------------------------------------------------------------ threads
@pytest.mark.parametrize("copy", [True, False])
def test_threaded_writer_and_reader_never_see_torn_data(copy: bool) -> None:
    """One writer thread laps the ring while one reader reads: every sample is right or reported lost.

    Blocks are large enough (> 500 samples) for numpy to copy them with the GIL released, so the
    writer's and the reader's copies really overlap; the writer stays about two capacities ahead of
    the reader (yielding, not sleeping) so that it keeps lapping the span being read.
    """
    cap = 4096
    total = 6_000_000
    ring = AudioRing(cap, dtype=np.int64)
    reader = ring.reader(0)
    errors: list[str] = []
    got = lost = reads = 0
    old_interval = sys.getswitchinterval()
    stop = threading.Event()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to provoke races

    def write() -> None:
        rng = np.random.default_rng(1)
        pos = 0
        while pos < total:
            while pos - reader.position > 2 * cap:
                if stop.is_set():
                    return
                time.sleep(0)  # yield to the reader
            n = min(int(rng.integers(1, 2 * cap)), total - pos)
            ring.write(ramp(pos, n))
            pos += n

    writer = threading.Thread(target=write, daemon=True)
    try:
        writer.start()
        rng = np.random.default_rng(2)
        while reader.position < total:
            prev = reader.position
            res = reader.read(int(rng.integers(1, cap + 1)), copy=copy)
            reads += 1
            if res.start - prev != res.lost:
                errors.append(f"start {res.start} - prev {prev} != lost {res.lost}")
            data = res.data[:, 0] if copy else res.data[:, 0].copy()
            if not copy and not res.still_valid():
                continue  # checked after use, as documented: this view may be torn
            if not np.array_equal(data, np.arange(res.start, res.end)):
                errors.append(f"wrong samples in [{res.start}, {res.end})")
            got += data.shape[0]
            lost += res.lost
            if len(errors) > 5:
                break
    finally:
        stop.set()
        writer.join(timeout=30)
        sys.setswitchinterval(old_interval)
    assert not writer.is_alive()
    assert not errors, errors[:5]
    assert reads > 100
    if copy:
        # Every sample was either delivered correctly or reported lost, exactly once.
        assert got + lost == total
