"""RTTM reading, frame labellings and speech/non-speech precision, recall and F1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kikimimi.engine.messages import NO_SAMPLE, Header
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.models.evaluation import (
    SpeechScores,
    events_to_segments,
    n_frames_for,
    pooled,
    read_rttm,
    rttm_frames,
    segments_to_frames,
    speech_scores,
    vad_frames,
)


def event(kind: SpeechEventKind, start: int, end: int, sid: str = "s", rate: int = 16000) -> VadEvent:
    return VadEvent(Header(sid, 0, max(start, end), 0, "vad"), kind, start, end, rate, 0.9)


def test_read_rttm_of_the_ami_mix(data_dir: Path) -> None:
    turns = read_rttm(data_dir / "diarization/ami/dev00.rttm")
    assert len(turns) == 9
    assert turns[0] == ("MEE009", 1.44, pytest.approx(1.44 + 11.872))
    assert {s for s, _, _ in turns} == {"MEE009", "MEE012"}
    assert all(0 <= a < b <= 30.0 + 1e-9 for _, a, b in turns)


def test_read_rttm_skips_other_lines_and_names_bad_ones(tmp_path: Path) -> None:
    good = tmp_path / "a.rttm"
    good.write_text("# comment\n\nSPKR-INFO x 1 <NA> <NA> <NA> unknown A <NA>\n"
                    "SPEAKER x 1 0.50 1.25 <NA> <NA> A <NA> <NA>\nSPEAKER x 1 2 0 <NA> <NA> B <NA> <NA>\n")
    assert read_rttm(good) == [("A", 0.5, 1.75), ("B", 2.0, 2.0)]
    bad = tmp_path / "b.rttm"
    bad.write_text("SPEAKER x 1 zero 1.0 <NA> <NA> A <NA> <NA>\n")
    with pytest.raises(ValueError, match=r"b.rttm:1: onset 'zero' / duration '1.0' are not numbers"):
        read_rttm(bad)
    bad.write_text("SPEAKER x 1 0.5\n")
    with pytest.raises(ValueError, match="has 4 fields, expected at least 8"):
        read_rttm(bad)
    bad.write_text("SPEAKER x 1 0.5 -1 <NA> <NA> A <NA> <NA>\n")
    with pytest.raises(ValueError, match="must be >= 0"):
        read_rttm(bad)


def test_frames_are_speech_when_their_centre_is_inside() -> None:
    # frames of 10 ms: centres 5, 15, 25, ... ms
    labels = segments_to_frames([(0.012, 0.035)], 6)
    assert labels.tolist() == [False, True, True, False, False, False]  # centres 15 and 25 ms
    assert segments_to_frames([(0.015, 0.025)], 4).tolist() == [False, True, False, False]  # [start, end)
    assert segments_to_frames([(0.0, 0.02), (0.01, 0.04), (0.055, 9.0)], 7).tolist() == \
        [True, True, True, True, False, True, True]  # union, clipped at the end
    assert not segments_to_frames([], 3).any()
    assert n_frames_for(30.0) == 3000 and n_frames_for(0.015) == 2


def test_rttm_reference_is_the_union_of_speakers(data_dir: Path) -> None:
    turns = read_rttm(data_dir / "diarization/ami/dev00.rttm")
    ref = rttm_frames(turns, n_frames_for(30.0))
    assert not ref[:144].any() and ref[144:150].all()  # first turn starts at 1.44 s
    for _, a, b in turns:
        assert ref[int(np.ceil(a / 0.01 - 0.5)):int(np.ceil(b / 0.01 - 0.5))].all()
    assert 0.85 < ref.mean() < 0.95


def test_vad_frames_use_speech_end_events_of_one_stream() -> None:
    START, END = SpeechEventKind.SPEECH_START, SpeechEventKind.SPEECH_END
    events = [event(START, 160, NO_SAMPLE), event(END, 160, 480), event(END, 0, 800, sid="other"),
              event(START, 640, NO_SAMPLE)]  # an open segment is not counted
    assert events_to_segments(events, "s") == [(0.01, 0.03)]
    assert len(events_to_segments(events)) == 2
    assert vad_frames(events, 5, "s").tolist() == [False, True, True, False, False]


def test_scores_count_frames() -> None:
    ref = np.array([1, 1, 1, 0, 0, 1, 0, 0], bool)
    hyp = np.array([1, 1, 0, 1, 0, 1, 0, 0], bool)
    s = speech_scores(ref, hyp)
    assert s == SpeechScores(tp=3, fp=1, fn=1, tn=3)
    assert s.precision == 0.75 and s.recall == 0.75 and s.f1 == 0.75
    assert pooled([s, s]) == SpeechScores(6, 2, 2, 6) and pooled([s, s]).f1 == 0.75
    assert speech_scores(np.zeros(3, bool), np.zeros(3, bool)).f1 == 1.0
    assert speech_scores(ref, np.zeros(8, bool)).recall == 0.0
    with pytest.raises(ValueError, match="same length"):
        speech_scores(ref, hyp[:4])


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=200))
def test_score_properties(pairs: list[tuple[bool, bool]]) -> None:
    ref = np.array([a for a, _ in pairs])
    hyp = np.array([b for _, b in pairs])
    s, t = speech_scores(ref, hyp), speech_scores(hyp, ref)
    assert s.tp + s.fp + s.fn + s.tn == len(pairs)
    assert (s.precision, s.recall) == (t.recall, t.precision) and s.f1 == t.f1
    assert 0.0 <= s.f1 <= 1.0
    assert speech_scores(ref, ref).f1 == 1.0
    if s.tp:
        assert s.f1 == pytest.approx(2 * s.precision * s.recall / (s.precision + s.recall))
