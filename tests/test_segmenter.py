"""SpeechSegmenter: hysteresis, hangover, minimum speech, padding and closing, on scripted probabilities."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kikimimi.engine.messages import NO_SAMPLE
from kikimimi.engine.msgs.speech import SpeechEventKind
from kikimimi.models.segmenter import SegmentDecision, SpeechSegmenter

START, END = SpeechEventKind.SPEECH_START, SpeechEventKind.SPEECH_END
U = 100  # samples per unit


def feed(seg: SpeechSegmenter, probs: list[float], first: int = 0) -> list[SegmentDecision]:
    out = []
    for i, p in enumerate(probs):
        out += seg.push(first + i * U, first + (i + 1) * U, p)
    return out


def make(**kw: int | float) -> SpeechSegmenter:
    args = {"threshold": 0.5, "neg_threshold": 0.35, "min_speech": 0, "min_silence": 2 * U, "pad": 0}
    args.update(kw)
    return SpeechSegmenter(**args)  # type: ignore[arg-type]


def test_start_and_end_with_hangover() -> None:
    d = feed(make(), [0.1, 0.9, 0.8, 0.1, 0.1, 0.1])
    assert d == [SegmentDecision(START, U, NO_SAMPLE, 2 * U, 0.9),
                 SegmentDecision(END, U, 3 * U, 5 * U, pytest.approx(0.85))]


def test_hysteresis() -> None:
    # out of speech, 0.4 does not start; in speech, 0.4 keeps it going
    d = feed(make(), [0.4, 0.4, 0.9, 0.4, 0.4, 0.4, 0.1, 0.1])
    assert [(e.kind, e.start, e.end) for e in d] == [(START, 2 * U, NO_SAMPLE), (END, 2 * U, 6 * U)]
    # a pending silence is cancelled only by a unit back at >= threshold, not by one in between
    d = feed(make(min_silence=3 * U), [0.9, 0.1, 0.4, 0.4, 0.9, 0.1, 0.9, 0.0, 0.0, 0.0])
    assert [(e.kind, e.start, e.end, e.decision) for e in d] == [
        (START, 0, NO_SAMPLE, U), (END, 0, U, 4 * U),  # 0.4, 0.4 did not cancel the silence begun at U
        (START, 4 * U, NO_SAMPLE, 5 * U), (END, 4 * U, 7 * U, 10 * U)]  # 0.9 at 6U cancelled the one at 5U
    d = feed(make(min_silence=3 * U), [0.9, 0.1, 0.6, 0.9, 0.1, 0.9, 0.0, 0.0, 0.0])
    assert [(e.kind, e.end, e.decision) for e in d] == [(START, NO_SAMPLE, U), (END, 6 * U, 9 * U)]


def test_min_speech_delays_start_and_drops_short_segments() -> None:
    d = feed(make(min_speech=3 * U), [0.9, 0.9, 0.1, 0.1, 0.9, 0.9, 0.9, 0.1, 0.1])
    assert [(e.kind, e.start, e.end, e.decision) for e in d] == [(START, 4 * U, NO_SAMPLE, 7 * U),
                                                                 (END, 4 * U, 7 * U, 9 * U)]


def test_padding_is_clipped_to_previous_end_origin_and_samples_seen() -> None:
    seg = make(pad=50, min_silence=U, origin=1000)
    d = feed(seg, [0.9, 0.1, 0.9, 0.1], first=1000)
    assert [(e.kind, e.start, e.end) for e in d] == [(START, 1000, NO_SAMPLE), (END, 1000, 1150),
                                                     (START, 1150, NO_SAMPLE), (END, 1150, 1350)]
    seg = make(pad=500)
    d = feed(seg, [0.9, 0.9]) + seg.close(250)
    assert [(e.kind, e.start, e.end, e.decision) for e in d] == [(START, 0, NO_SAMPLE, U), (END, 0, 2 * U, 250)]


def test_close_and_decision_point() -> None:
    seg = make()
    d = seg.push(0, U, 0.9, decision=U + 7)
    assert d[0].decision == U + 7 and seg.in_speech
    d = seg.close(5 * U)
    assert [(e.kind, e.start, e.end, e.decision) for e in d] == [(END, 0, U, 5 * U)]
    assert not seg.in_speech and seg.close(6 * U) == []


def test_bad_arguments_name_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="need 0 <= neg_threshold <= threshold <= 1"):
        make(neg_threshold=0.6)
    with pytest.raises(ValueError, match="must be >= 0 samples"):
        make(min_silence=-1)


@given(st.lists(st.floats(0.0, 1.0), max_size=300), st.integers(0, 5), st.integers(0, 5), st.integers(0, 2))
def test_events_are_well_formed(probs: list[float], min_speech: int, min_silence: int, pad: int) -> None:
    seg = make(min_speech=min_speech * U, min_silence=min_silence * U, pad=pad * U)
    d = feed(seg, probs) + seg.close(len(probs) * U)
    assert [e.kind for e in d] == [START, END] * (len(d) // 2)
    prev_end, decisions = 0, [e.decision for e in d]
    assert decisions == sorted(decisions)
    for s, e in zip(d[::2], d[1::2], strict=True):
        assert s.start == e.start >= prev_end
        assert e.end - e.start >= min_speech * U
        assert e.end <= e.decision <= len(probs) * U
        assert 0.0 <= e.probability <= 1.0
        prev_end = e.end
