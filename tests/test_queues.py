"""Inbox / QueueConfig: policies, max age, control ordering, flush, counters, close."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from kikimimi.engine.clock import ManualClock
from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import Control, ControlKind, Header, Message
from kikimimi.engine.metrics import NodeStats, format_stats
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.queues import DEFAULT_CAPACITY, Inbox, Policy, QueueConfig

MS = 1_000_000


def chunk(seq: int, t_ns: int = 0, stream: str = "mic") -> AudioChunk:
    return AudioChunk(Header(stream, seq, seq * 160, t_ns, "src"), np.zeros((160, 1), np.int16), 16000)


def ctrl(kind: ControlKind, reason: str = "") -> Control:
    return Control(Header("mic", 0, -1, 0, "ctl"), kind, reason)


def make_inbox(*ports: tuple[str, QueueConfig], start_ns: int = 0,
               control_capacity: int = 1024) -> tuple[Inbox, ManualClock]:
    clock = ManualClock(start_ns)
    inbox = Inbox(NodeStats("node"), clock, control_capacity=control_capacity)
    for name, cfg in ports:
        inbox.add_port(name, cfg)
    return inbox, clock


def drain(inbox: Inbox) -> list[tuple[str, Message]]:
    out = []
    while (item := inbox.get(timeout=0)) is not None:
        out.append(item)
    return out


def tags(items: list[tuple[str, Message]]) -> list[str]:
    """'port:seq' for data, 'port:KIND' for controls."""
    return [
        f"{port}:{m.kind.name}" if isinstance(m, Control) else f"{port}:{m.header.seq}" for port, m in items
    ]


def wait_until_blocked(inbox: Inbox, n: int = 1, timeout_s: float = 5.0) -> None:
    """Spin (yielding) until ``n`` threads wait on the inbox's condition: a sync point, not a sleep."""
    deadline = time.monotonic() + timeout_s
    while len(inbox._cond._waiters) < n:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "thread never blocked"
        time.sleep(0)


# ------------------------------------------------------------------------------------------ config
def test_queue_config_make_defaults() -> None:
    cfg = QueueConfig.make()
    assert (cfg.policy, cfg.capacity, cfg.max_age_ns, cfg.age_from) == (
        Policy.DROP_OLDEST, DEFAULT_CAPACITY, None, "capture")
    assert QueueConfig.make("latest").capacity == 1
    assert QueueConfig.make("block", capacity=3).capacity == 3
    assert QueueConfig.make(max_age_ms=2.5).max_age_ns == 2_500_000
    assert QueueConfig.make(max_age_ms=40, age_from="arrival").age_from == "arrival"
    assert QueueConfig.make(Policy.BLOCK).policy is Policy.BLOCK


def test_queue_config_bad_policy_lists_allowed() -> None:
    with pytest.raises(ParamError, match=r"'fifo' is not allowed; allowed: latest, drop_oldest, block"):
        QueueConfig.make("fifo")
    with pytest.raises(ParamError, match="allowed: latest, drop_oldest, block"):
        QueueConfig(policy="latest")  # type: ignore[arg-type]


def test_queue_config_latest_needs_capacity_one() -> None:
    with pytest.raises(ParamError, match="capacity must be 1, got 4"):
        QueueConfig.make("latest", capacity=4)
    with pytest.raises(ParamError, match="capacity must be 1"):
        QueueConfig(Policy.LATEST, capacity=2)


@pytest.mark.parametrize("capacity", [0, -1, True, 2.5, "8"])
def test_queue_config_bad_capacity(capacity: object) -> None:
    with pytest.raises(ParamError, match="capacity must be an int >= 1"):
        QueueConfig.make("drop_oldest", capacity=capacity)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_age_ms", [0, -5, True, float("nan"), float("inf"), "10"])
def test_queue_config_bad_max_age(max_age_ms: object) -> None:
    with pytest.raises(ParamError, match="max_age_ms must be a positive number"):
        QueueConfig.make(max_age_ms=max_age_ms)  # type: ignore[arg-type]


def test_queue_config_bad_max_age_ns_and_age_from() -> None:
    with pytest.raises(ParamError, match="max age must be a positive number of nanoseconds"):
        QueueConfig(max_age_ns=0)
    with pytest.raises(ParamError, match="max age"):
        QueueConfig(max_age_ns=1.5)  # type: ignore[arg-type]
    with pytest.raises(ParamError, match="max age"):
        QueueConfig.make(max_age_ms=1e-7)  # rounds to 0 ns
    with pytest.raises(ParamError, match="age_from 'wall' is not allowed; allowed: capture, arrival"):
        QueueConfig.make(age_from="wall")


def test_ports_are_checked() -> None:
    inbox, _ = make_inbox(("a", QueueConfig()), ("b", QueueConfig()))
    with pytest.raises(ParamError, match="added twice"):
        inbox.add_port("a", QueueConfig())
    with pytest.raises(ParamError, match="no input port 'c'; ports: a, b"):
        inbox.put("c", chunk(0))
    assert set(inbox.ports) == {"a", "b"}


# ------------------------------------------------------------------------------------------ policies
def test_drop_oldest_drops_the_oldest_and_counts_overflow() -> None:
    inbox, _ = make_inbox(("a", QueueConfig.make("drop_oldest", capacity=3)))
    for i in range(5):
        assert inbox.put("a", chunk(i)) is True
    assert inbox.depth("a") == 3
    assert tags(drain(inbox)) == ["a:2", "a:3", "a:4"]
    assert inbox.stats.dropped["overflow"] == 2
    assert inbox.stats.received == 5
    assert inbox.depth("a") == 0


def test_latest_keeps_only_the_newest_and_counts() -> None:
    inbox, _ = make_inbox(("a", QueueConfig.make("latest")))
    for i in range(4):
        assert inbox.put("a", chunk(i))
    assert inbox.depth("a") == 1
    assert tags(drain(inbox)) == ["a:3"]
    assert inbox.stats.dropped["overflow"] == 3
    inbox.put("a", chunk(9))
    assert tags(drain(inbox)) == ["a:9"]
    assert inbox.stats.dropped["overflow"] == 3


def test_block_put_times_out_when_full_and_counts_nothing() -> None:
    inbox, _ = make_inbox(("a", QueueConfig.make("block", capacity=2)))
    assert inbox.put("a", chunk(0)) and inbox.put("a", chunk(1))
    t0 = time.monotonic()
    assert inbox.put("a", chunk(2), timeout=0.05) is False
    assert time.monotonic() - t0 >= 0.04
    assert inbox.put("a", chunk(3), timeout=0) is False
    assert inbox.depth("a") == 2
    assert inbox.stats.received == 2
    assert inbox.stats.dropped_total == 0
    assert tags(drain(inbox)) == ["a:0", "a:1"]


def test_block_put_proceeds_once_the_consumer_gets() -> None:
    inbox, _ = make_inbox(("a", QueueConfig.make("block", capacity=1)))
    inbox.put("a", chunk(0))
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(inbox.put("a", chunk(1), timeout=10)), daemon=True)
    t.start()
    wait_until_blocked(inbox)
    assert result == []  # still blocked: the lane is full
    _, msg = inbox.get(timeout=0)  # type: ignore[misc]
    assert msg.header.seq == 0
    t.join(timeout=10)
    assert result == [True]
    assert tags(drain(inbox)) == ["a:1"]
    assert inbox.stats.dropped_total == 0


def test_stale_drop_wakes_a_blocked_producer_and_arrival_is_when_queued() -> None:
    """A stale drop at the head makes room: the blocked put must wake (not wait out its timeout), and
    the message it queues is aged from when it entered the queue, not from when put() began."""
    inbox, clock = make_inbox(("a", QueueConfig.make("block", capacity=1, max_age_ms=5, age_from="arrival")))
    inbox.put("a", chunk(0))
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(inbox.put("a", chunk(1), timeout=None)), daemon=True)
    t.start()
    wait_until_blocked(inbox)
    clock.advance(10 * MS)
    assert inbox.get(timeout=0) is None  # seq 0 is stale
    assert inbox.stats.dropped["stale"] == 1
    t.join(timeout=5)
    assert not t.is_alive(), "blocked put was never woken after the stale drop made room"
    assert result == [True]
    assert tags(drain(inbox)) == ["a:1"]  # queued at t=10 ms, read at t=10 ms: fresh
    assert inbox.stats.dropped["stale"] == 1


# ------------------------------------------------------------------------------------------ max age
def test_max_age_from_capture_time() -> None:
    inbox, clock = make_inbox(("a", QueueConfig.make(max_age_ms=20)), start_ns=100 * MS)
    inbox.put("a", chunk(0, t_ns=70 * MS))  # 30 ms old: stale
    inbox.put("a", chunk(1, t_ns=80 * MS))  # exactly 20 ms old: kept (older than max age is dropped)
    inbox.put("a", chunk(2, t_ns=95 * MS))  # fresh now, stale after the clock moves
    port, msg = inbox.get(timeout=0)  # type: ignore[misc]
    assert (port, msg.header.seq) == ("a", 1)
    assert inbox.stats.dropped["stale"] == 1
    clock.advance(16 * MS)  # seq 2 is now 21 ms old
    assert inbox.get(timeout=0) is None
    assert inbox.stats.dropped["stale"] == 2
    assert inbox.stats.received == 3


def test_max_age_from_arrival_ignores_capture_time() -> None:
    cfg = QueueConfig.make(max_age_ms=20, age_from="arrival")
    inbox, clock = make_inbox(("a", cfg), start_ns=1_000 * MS)
    inbox.put("a", chunk(0, t_ns=0))  # captured long ago (other machine's clock): irrelevant
    clock.advance(10 * MS)
    inbox.put("a", chunk(1, t_ns=0))
    clock.advance(15 * MS)  # seq 0 arrived 25 ms ago, seq 1 15 ms ago
    assert tags(drain(inbox)) == ["a:1"]
    assert inbox.stats.dropped["stale"] == 1


def test_capture_age_drops_old_capture_times_that_arrival_age_keeps() -> None:
    inbox, _ = make_inbox(("cap", QueueConfig.make(max_age_ms=20)),
                          ("arr", QueueConfig.make(max_age_ms=20, age_from="arrival")), start_ns=1_000 * MS)
    inbox.put("cap", chunk(0, t_ns=0))
    inbox.put("arr", chunk(1, t_ns=0))
    assert tags(drain(inbox)) == ["arr:1"]
    assert inbox.stats.dropped["stale"] == 1


def test_controls_are_never_aged_out() -> None:
    inbox, clock = make_inbox(("a", QueueConfig.make(max_age_ms=1)), start_ns=0)
    inbox.put("a", chunk(0, t_ns=0))
    inbox.put("a", ctrl(ControlKind.END_OF_STREAM))
    inbox.put("a", ctrl(ControlKind.STOP))
    clock.advance(10_000 * MS)
    assert tags(drain(inbox)) == ["a:STOP", "a:END_OF_STREAM"]
    assert inbox.stats.dropped["stale"] == 1


# ------------------------------------------------------------------------------------------ controls
@pytest.mark.parametrize("kind", [ControlKind.START, ControlKind.STOP, ControlKind.FLUSH])
def test_start_stop_flush_overtake_queued_data(kind: ControlKind) -> None:
    inbox, _ = make_inbox(("a", QueueConfig()), ("b", QueueConfig()))
    inbox.put("a", chunk(0))
    inbox.put("b", chunk(1))
    inbox.put("b", ctrl(kind))
    assert tags(drain(inbox)) == [f"b:{kind.name}", "a:0", "b:1"]
    assert inbox.stats.received == 2  # data only


def test_overtaking_controls_keep_their_own_order() -> None:
    inbox, _ = make_inbox(("a", QueueConfig()), ("b", QueueConfig()))
    inbox.put("a", chunk(0))
    inbox.put("a", ctrl(ControlKind.STOP))
    inbox.put("b", ctrl(ControlKind.FLUSH))
    inbox.put("a", ctrl(ControlKind.START))
    assert tags(drain(inbox)) == ["a:STOP", "b:FLUSH", "a:START", "a:0"]


def test_end_of_stream_comes_after_the_data_before_it() -> None:
    inbox, _ = make_inbox(("a", QueueConfig()))
    inbox.put("a", chunk(0))
    inbox.put("a", chunk(1))
    inbox.put("a", ctrl(ControlKind.END_OF_STREAM))
    inbox.put("a", chunk(2))
    assert tags(drain(inbox)) == ["a:0", "a:1", "a:END_OF_STREAM", "a:2"]


@pytest.mark.parametrize("policy", ["drop_oldest", "latest"])
def test_end_of_stream_is_never_dropped_when_the_lane_is_full(policy: str) -> None:
    cap = 1 if policy == "latest" else 2
    inbox, _ = make_inbox(("a", QueueConfig.make(policy, capacity=cap)))
    for i in range(cap):
        inbox.put("a", chunk(i))
    assert inbox.put("a", ctrl(ControlKind.END_OF_STREAM)) is True
    for i in range(10, 10 + cap + 2):
        inbox.put("a", chunk(i))  # each one displaces the oldest data, never the EOS marker
    out = tags(drain(inbox))
    newest = [f"a:{i}" for i in range(10 + 2, 10 + cap + 2)]
    assert out == ["a:END_OF_STREAM", *newest]
    assert inbox.stats.dropped["overflow"] == cap + 2


def test_end_of_stream_is_accepted_on_a_full_block_lane_without_waiting() -> None:
    inbox, _ = make_inbox(("a", QueueConfig.make("block", capacity=1)))
    inbox.put("a", chunk(0))
    assert inbox.put("a", ctrl(ControlKind.END_OF_STREAM), timeout=0) is True
    assert tags(drain(inbox)) == ["a:0", "a:END_OF_STREAM"]


def test_overtaking_controls_are_bounded() -> None:
    inbox, _ = make_inbox(("a", QueueConfig()), control_capacity=2)
    assert inbox.put("a", ctrl(ControlKind.STOP)) and inbox.put("a", ctrl(ControlKind.START))
    assert inbox.put("a", ctrl(ControlKind.FLUSH), timeout=0) is False
    assert tags(drain(inbox)) == ["a:STOP", "a:START"]
    assert inbox.put("a", ctrl(ControlKind.FLUSH), timeout=0) is True


# ------------------------------------------------------------------------------------------ ordering
def test_arrival_order_across_ports_is_preserved() -> None:
    inbox, _ = make_inbox(("a", QueueConfig()), ("b", QueueConfig.make("block", capacity=8)))
    order = ["a", "b", "b", "a", "b", "a", "a"]
    for seq, port in enumerate(order):
        inbox.put(port, chunk(seq))
    inbox.put("b", ctrl(ControlKind.END_OF_STREAM))
    inbox.put("a", chunk(len(order)))
    expected = [f"{p}:{i}" for i, p in enumerate(order)] + ["b:END_OF_STREAM", f"a:{len(order)}"]
    assert tags(drain(inbox)) == expected


# ------------------------------------------------------------------------------------------ flush
def test_flush_discards_data_counts_flushed_and_keeps_end_of_stream() -> None:
    inbox, _ = make_inbox(("a", QueueConfig()), ("b", QueueConfig()))
    inbox.put("a", chunk(0))
    inbox.put("b", chunk(1))
    inbox.put("a", chunk(2))
    inbox.put("a", ctrl(ControlKind.END_OF_STREAM))
    inbox.put("a", chunk(3))
    assert inbox.flush("a") == 3
    assert inbox.depth("a") == 0 and inbox.depth("b") == 1
    assert inbox.stats.dropped["flushed"] == 3
    assert inbox.flush("a") == 0
    assert inbox.stats.dropped["flushed"] == 3
    assert tags(drain(inbox)) == ["b:1", "a:END_OF_STREAM"]
    inbox.put("a", chunk(4))  # the lane works normally afterwards
    assert tags(drain(inbox)) == ["a:4"]


def test_flush_makes_room_for_a_blocked_producer() -> None:
    inbox, _ = make_inbox(("a", QueueConfig.make("block", capacity=1)))
    inbox.put("a", chunk(0))
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(inbox.put("a", chunk(1), timeout=10)), daemon=True)
    t.start()
    wait_until_blocked(inbox)
    assert inbox.flush("a") == 1
    t.join(timeout=10)
    assert result == [True]
    assert tags(drain(inbox)) == ["a:1"]


# ------------------------------------------------------------------------------------------ counters
def test_received_counts_match_accepted_data() -> None:
    inbox, clock = make_inbox(("a", QueueConfig.make("drop_oldest", capacity=2, max_age_ms=5)),
                              ("b", QueueConfig.make("block", capacity=1)), start_ns=0)
    for i in range(4):
        inbox.put("a", chunk(i, t_ns=0))
    inbox.put("b", chunk(10))
    assert inbox.put("b", chunk(11), timeout=0) is False  # refused: not received
    inbox.put("a", ctrl(ControlKind.STOP))  # controls are not data
    clock.advance(6 * MS)  # both of a's survivors are stale now
    out = drain(inbox)
    assert tags(out) == ["a:STOP", "b:10"]
    s = inbox.stats
    assert s.received == 5
    assert dict(s.dropped) == {"overflow": 2, "stale": 2}
    # Everything received is accounted for: delivered, or dropped for a reason.
    delivered = sum(1 for _, m in out if not m.is_control)
    assert s.received == delivered + s.dropped_total


def test_node_stats_snapshot_and_table() -> None:
    s = NodeStats("vad")
    s.count_received(3)
    s.count_processed(2_000_000)
    s.count_processed(5_000_000)
    s.count_emitted()
    s.count_drop("overflow")
    s.count_rejected("truncated")
    with pytest.raises(ValueError, match="drop reason 'bogus'"):
        s.count_drop("bogus")
    snap = s.snapshot()
    assert snap == {
        "node": "vad", "received": 3, "processed": 2, "emitted": 1,
        "dropped": {"overflow": 1, "rejected": 1}, "rejected_by_kind": {"truncated": 1},
        "busy_ns": 7_000_000, "max_busy_ns": 5_000_000,
    }
    table = format_stats([snap])
    assert "vad" in table and "overflow=1" in table and "(truncated=1)" in table
    assert "7.0" in table and "5.00" in table


# ------------------------------------------------------------------------------------------ close
def test_close_wakes_a_blocked_get() -> None:
    inbox, _ = make_inbox(("a", QueueConfig()))
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(inbox.get(timeout=None)), daemon=True)
    t.start()
    wait_until_blocked(inbox)
    inbox.close()
    t.join(timeout=5)
    assert not t.is_alive()
    assert result == [None]


def test_get_wakes_when_data_arrives() -> None:
    inbox, _ = make_inbox(("a", QueueConfig()))
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(inbox.get(timeout=None)), daemon=True)
    t.start()
    wait_until_blocked(inbox)
    inbox.put("a", chunk(7))
    t.join(timeout=5)
    assert len(result) == 1 and result[0][1].header.seq == 7  # type: ignore[index]


def test_close_wakes_a_blocked_put_and_refuses_new_ones() -> None:
    inbox, _ = make_inbox(("a", QueueConfig.make("block", capacity=1)))
    inbox.put("a", chunk(0))
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(inbox.put("a", chunk(1), timeout=None)), daemon=True)
    t.start()
    wait_until_blocked(inbox)
    inbox.close()
    t.join(timeout=5)
    assert not t.is_alive()
    assert result == [False]
    assert inbox.put("a", chunk(2)) is False
    assert inbox.put("a", ctrl(ControlKind.STOP)) is False
    assert inbox.put("a", ctrl(ControlKind.END_OF_STREAM)) is False
    assert inbox.stats.received == 1
    # What was queued before close can still be drained.
    assert tags(drain(inbox)) == ["a:0"]
    assert inbox.get(timeout=None) is None  # closed and empty: returns at once
