"""VadGate: VAD events wait for the data, the data waits for the VAD's watermark, both holds are bounded."""

from __future__ import annotations

import pytest

from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import NO_SAMPLE, Header
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.nodes._vad_sync import VadGate, event_position

RATE = 16000


def start(at: int) -> VadEvent:
    return VadEvent(Header("s", 0, at, 0, "vad"), SpeechEventKind.SPEECH_START, at, NO_SAMPLE, RATE, 0.9)


def end(a: int, b: int) -> VadEvent:
    return VadEvent(Header("s", 0, b, 0, "vad"), SpeechEventKind.SPEECH_END, a, b, RATE, 0.1)


def progress(at: int) -> VadEvent:
    return VadEvent(Header("s", 0, at, 0, "vad"), SpeechEventKind.PROGRESS, at, NO_SAMPLE, RATE, 0.0)


def test_event_position_is_the_start_of_a_start_and_the_end_of_an_end() -> None:
    assert event_position(start(100)) == 100
    assert event_position(end(100, 900)) == 900


def test_events_wait_until_the_data_reaches_them_in_order() -> None:
    gate = VadGate(lookahead=0)
    s, e = start(1000), end(1000, 5000)
    assert gate.on_event(s) is None and gate.on_event(e) is None
    assert gate.pop_due(999) is None                       # the data is not at the start yet
    assert gate.pop_due(1000) is s
    assert gate.pop_due(4999) is None
    assert gate.pop_due(10_000) is e                       # an end is due at its end sample
    assert gate.pop_due(10_000) is None
    assert not gate.pending and gate.forced == 0


def test_a_later_event_waits_behind_an_earlier_one() -> None:
    gate = VadGate(lookahead=0)
    gate.on_event(end(0, 8000))
    gate.on_event(start(100))                              # due by itself, but behind the end
    assert gate.pop_due(5000) is None
    assert [gate.pop_due(8000), gate.pop_due(8000)] == [end(0, 8000), start(100)]


def test_data_is_unlimited_without_a_watermark_and_stops_at_a_pending_end() -> None:
    gate = VadGate(lookahead=800)
    assert gate.mark is None
    assert gate.data_limit(50_000) == 50_000
    assert gate.mark_limit() is None
    gate.on_event(start(1000))
    assert gate.data_limit(50_000) == 50_000               # a pending start does not limit the data
    gate.pop_due(1000)
    gate.on_event(end(1000, 20_000))
    assert gate.data_limit(50_000) == 20_000               # never past a pending SPEECH_END ...
    assert gate.data_limit(50_000, force=True) == 20_000   # ... even when forced: force releases the event
    assert gate.data_limit(12_000) == 12_000
    assert gate.pop_due(20_000) is not None
    assert gate.data_limit(50_000) == 50_000


def test_data_is_limited_to_the_watermark_plus_the_lookahead() -> None:
    gate = VadGate(lookahead=800)
    gate.on_event(progress(4000))
    assert gate.mark == 4000
    assert gate.data_limit(50_000) == 4800
    assert gate.data_limit(3000) == 3000                   # the data itself is the tighter bound
    assert gate.mark_limit() == 4800
    assert gate.data_limit(50_000, force=True) == 50_000   # force: the watermark does not hold the data
    assert gate.mark_limit(force=True) is None
    gate.on_event(end(0, 4500))
    assert gate.data_limit(50_000) == 4500                 # the pending end is tighter than the watermark
    gate.on_event(progress(3000))                          # the watermark never goes back
    assert gate.mark == 4000
    gate.on_event(progress(9000))
    assert gate.mark == 9000 and gate.mark_limit() == 9800


def test_progress_is_never_queued() -> None:
    gate = VadGate(lookahead=0, max_pending=1)
    for at in range(0, 10_000, 1000):
        assert gate.on_event(progress(at)) is None
    assert not gate.pending and gate.forced == 0
    assert gate.pop_due(10**9, force=True) is None


def test_force_releases_every_event() -> None:
    gate = VadGate(lookahead=0)
    evs = [start(1000), end(1000, 2000), start(3000)]
    for ev in evs:
        gate.on_event(ev)
    assert gate.pop_due(0) is None
    got = []
    while (ev := gate.pop_due(0, force=True)) is not None:
        got.append(ev)
    assert got == evs
    assert gate.forced == 0                                # force is the caller's end, not an overflow


def test_max_pending_releases_the_oldest_and_counts_it() -> None:
    gate = VadGate(lookahead=0, max_pending=2)
    evs = [start(1000), end(1000, 2000), start(3000), end(3000, 4000)]
    assert gate.on_event(evs[0]) is None
    assert gate.on_event(evs[1]) is None
    assert gate.on_event(evs[2]) is evs[0]
    assert gate.on_event(evs[3]) is evs[1]
    assert gate.forced == 2
    assert list(gate.pending) == evs[2:]


def test_reset_forgets_the_events_and_the_watermark() -> None:
    gate = VadGate(lookahead=100, max_pending=1)
    gate.on_event(progress(5000))
    gate.on_event(start(1000))
    gate.on_event(end(1000, 2000))                         # forces the start out
    gate.reset()
    assert gate.mark is None and not gate.pending
    assert gate.data_limit(50_000) == 50_000
    assert gate.forced == 1                                # the count is kept


@pytest.mark.parametrize(("lookahead", "max_pending"), [(-1, 64), (0, 0), (10, -3)])
def test_bad_arguments_raise_param_error_naming_the_values(lookahead: int, max_pending: int) -> None:
    with pytest.raises(ParamError, match=rf"lookahead={lookahead}, max_pending={max_pending}; allowed"):
        VadGate(lookahead, max_pending)
