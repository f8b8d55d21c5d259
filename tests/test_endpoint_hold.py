"""EndpointHold: a SPEECH_END waits until the silence after it lasted; speech resuming sooner continues the
utterance; decided on the VAD's own event order only."""

from __future__ import annotations

import pytest

from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import NO_SAMPLE, Header
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.nodes._endpoint_hold import EndpointHold

HOLD = 8000   # 500 ms at 16 kHz


def ev(kind: SpeechEventKind, start: int, end: int = NO_SAMPLE, p: float = 0.9) -> VadEvent:
    at = end if kind is SpeechEventKind.SPEECH_END else start
    return VadEvent(Header("s", 0, at, 0, "vad"), kind, start, end, 16000, p)


START, END, PROGRESS = SpeechEventKind.SPEECH_START, SpeechEventKind.SPEECH_END, SpeechEventKind.PROGRESS


def kinds(events: list[VadEvent]) -> list[str]:
    return [e.kind.value for e in events]


def test_a_short_pause_does_not_end_the_utterance() -> None:
    h = EndpointHold(HOLD)
    assert kinds(h.push(ev(START, 1000))) == ["speech_start"]
    assert h.push(ev(END, 1000, 20000)) == []                      # held
    assert kinds(h.push(ev(PROGRESS, 24000, p=0.0))) == ["progress"]
    assert h.push(ev(START, 26000)) == [] and h.merged == 1          # 6000 samples after the end: goes on
    out = h.push(ev(END, 26000, 40000))
    assert out == [] and h.held is not None and h.held.end_sample == 40000


def test_the_end_goes_on_once_the_silence_lasted() -> None:
    h = EndpointHold(HOLD)
    h.push(ev(START, 0))
    h.push(ev(END, 0, 20000))
    assert kinds(h.push(ev(PROGRESS, 27000, p=0.1))) == ["progress"]
    out = h.push(ev(PROGRESS, 28000, p=0.1))
    assert kinds(out) == ["speech_end", "progress"] and out[0].end_sample == 20000
    assert kinds(h.push(ev(START, 30000))) == ["speech_start"] and h.merged == 0


def test_a_later_start_releases_the_end_before_it() -> None:
    h = EndpointHold(HOLD)
    h.push(ev(END, 0, 20000))
    out = h.push(ev(START, 28000))                                  # no watermark came in between
    assert kinds(out) == ["speech_end", "speech_start"]


def test_speech_the_vad_has_not_confirmed_yet_keeps_the_end_waiting() -> None:
    h = EndpointHold(HOLD)
    h.push(ev(END, 0, 20000))
    h.push(ev(PROGRESS, 26000, p=0.8))                              # speech resuming
    assert kinds(h.push(ev(PROGRESS, 29000, p=0.2))) == ["progress"]   # past the hold, but speech was heard
    assert h.push(ev(START, 25500)) == [] and h.merged == 1          # its START: the utterance goes on
    h.push(ev(END, 25500, 30000))
    h.push(ev(PROGRESS, 31000, p=0.9))                              # a blip the VAD will drop
    assert kinds(h.push(ev(PROGRESS, 38000, p=0.0))) == ["progress"]
    assert kinds(h.push(ev(PROGRESS, 39000, p=0.0))) == ["speech_end", "progress"]   # 500 ms after the blip


def test_flush_releases_and_zero_passes_everything_through() -> None:
    h = EndpointHold(HOLD)
    h.push(ev(END, 0, 100))
    assert kinds(h.flush()) == ["speech_end"] and h.flush() == []
    off = EndpointHold(0)
    assert kinds(off.push(ev(END, 0, 100))) == ["speech_end"]
    with pytest.raises(ParamError, match="hold=-1"):
        EndpointHold(-1)
