"""Diarization error rate: hand-computed cases, a 10 ms frame-grid cross-check, the AMI references, pyannote."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kikimimi.models.evaluation import DerScore, Turn, der, merge_turns, read_rttm

TWO = [("A", 0.0, 10.0), ("B", 10.0, 20.0)]


def frame_der(reference: Sequence[Turn], hypothesis: Sequence[Turn], collar_s: float = 0.0,
              skip_overlap: bool = False, uem: tuple[float, float] | None = None,
              frame_s: float = 0.01) -> tuple[float, float]:
    """(error_s, total_s) counted on frame centres, with the speaker mapping found by brute force."""
    end = max([e for _, _, e in [*reference, *hypothesis]] + [0.0]) + collar_s + 1.0
    centres = (np.arange(int(np.ceil(end / frame_s))) + 0.5) * frame_s

    def talking(turns: Sequence[Turn]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for spk, s, e in turns:
            out[spk] = out.get(spk, np.zeros(centres.size, bool)) | ((centres >= s) & (centres < e))
        return out

    ref, hyp = talking(reference), talking(hypothesis)
    n_ref = sum((a.astype(int) for a in ref.values()), np.zeros(centres.size, int))
    n_hyp = sum((a.astype(int) for a in hyp.values()), np.zeros(centres.size, int))
    scored = np.ones(centres.size, bool)
    if uem is not None:
        scored &= (centres >= uem[0]) & (centres < uem[1])
    for _, s, e in reference:
        for t in (s, e):
            scored &= ~((centres > t - collar_s) & (centres < t + collar_s))
    if skip_overlap:
        scored &= n_ref < 2
    hyp_names, ref_names = list(hyp), list(ref)
    best = 0
    for targets in itertools.permutations(ref_names + [None] * len(hyp_names), len(hyp_names)):
        correct = sum(int(np.count_nonzero(hyp[h] & ref[r] & scored))
                      for h, r in zip(hyp_names, targets, strict=True) if r is not None)
        best = max(best, correct)
    error = int(np.maximum(n_ref, n_hyp)[scored].sum()) - best
    return error * frame_s, int(n_ref[scored].sum()) * frame_s


def test_a_perfect_hypothesis_scores_zero() -> None:
    score = der(TWO, TWO, collar_s=0.0)
    assert score == DerScore(20.0, 0.0, 0.0, 0.0, {"A": "A", "B": "B"})
    assert score.der == 0.0


def test_an_empty_hypothesis_misses_everything() -> None:
    score = der(TWO, [], collar_s=0.0)
    assert (score.total, score.missed, score.false_alarm, score.confusion) == (20.0, 20.0, 0.0, 0.0)
    assert score.der == 1.0
    assert score.mapping == {}


def test_permuted_labels_score_zero_through_the_mapping() -> None:
    hyp = [("spk1", 10.0, 20.0), ("spk0", 0.0, 10.0)]
    score = der(TWO, hyp, collar_s=0.0)
    assert score.der == 0.0
    assert score.mapping == {"spk0": "A", "spk1": "B"}


def test_one_hypothesis_speaker_for_two_reference_speakers_is_confusion() -> None:
    # x covers A (12 s) and B (8 s): it maps to A, and B's 8 s are confused
    score = der([("A", 0.0, 12.0), ("B", 12.0, 20.0)], [("x", 0.0, 20.0)], collar_s=0.0)
    assert score.mapping == {"x": "A"}
    assert score.confusion == pytest.approx(8.0)
    assert score.missed == score.false_alarm == 0.0
    assert score.der == pytest.approx(0.4)


def test_a_partly_confused_hypothesis() -> None:
    # x: A's 10 s and the first 5 s of B, y: the last 5 s of B -> x->A, y->B, 10..15 s confused
    hyp = [("x", 0.0, 15.0), ("y", 15.0, 20.0)]
    score = der(TWO, hyp, collar_s=0.0)
    assert score.mapping == {"x": "A", "y": "B"}
    assert (score.confusion, score.missed, score.false_alarm) == pytest.approx((5.0, 0.0, 0.0))
    assert score.der == pytest.approx(0.25)


def test_speech_outside_the_reference_is_false_alarm() -> None:
    score = der([("A", 0.0, 10.0)], [("x", 0.0, 10.0), ("x", 20.0, 25.0), ("y", 30.0, 31.0)], collar_s=0.0)
    assert score.false_alarm == pytest.approx(6.0)
    assert score.missed == score.confusion == 0.0
    assert score.der == pytest.approx(0.6)


def test_reference_overlap_counts_twice_and_one_hypothesis_speaker_misses_one() -> None:
    # A 0..10, B 5..12: total 17 s; x 0..12 maps to A; 5..10 one speaker missed, 10..12 B confused
    score = der([("A", 0.0, 10.0), ("B", 5.0, 12.0)], [("x", 0.0, 12.0)], collar_s=0.0)
    assert score.total == pytest.approx(17.0)
    assert (score.missed, score.confusion, score.false_alarm) == pytest.approx((5.0, 2.0, 0.0))
    assert score.der == pytest.approx(7.0 / 17.0)


def test_the_collar_is_excluded_on_each_side_of_every_reference_boundary() -> None:
    late = [("x", 0.2, 10.2), ("y", 10.2, 20.2)]
    no_collar = der(TWO, late, collar_s=0.0)
    # 0..0.2 missed, 10..10.2 confused, 20..20.2 false alarm
    assert (no_collar.missed, no_collar.confusion, no_collar.false_alarm) == pytest.approx((0.2, 0.2, 0.2))
    assert no_collar.der == pytest.approx(0.03)
    with_collar = der(TWO, late, collar_s=0.25)
    assert with_collar.der == 0.0
    # scored: 0.25..9.75 and 10.25..19.75 (the boundary at 10 s is both A's end and B's start)
    assert with_collar.total == pytest.approx(19.0)
    # 0.3 s late is 0.05 s past the collar at each of the three boundaries
    later = der(TWO, [("x", 0.3, 10.3), ("y", 10.3, 20.3)], collar_s=0.25)
    assert (later.missed, later.confusion, later.false_alarm) == pytest.approx((0.05, 0.05, 0.05))


def test_skip_overlap_leaves_overlapped_reference_speech_out() -> None:
    ref = [("A", 0.0, 10.0), ("B", 5.0, 15.0)]
    hyp = [("x", 0.0, 10.0), ("y", 10.0, 15.0)]
    kept = der(ref, hyp, collar_s=0.0)
    assert (kept.total, kept.missed) == pytest.approx((20.0, 5.0))
    skipped = der(ref, hyp, collar_s=0.0, skip_overlap=True)
    assert skipped.total == pytest.approx(10.0)
    assert skipped.der == 0.0
    assert skipped.mapping == {"x": "A", "y": "B"}


def test_uem_limits_the_scored_time() -> None:
    hyp = [("x", 0.0, 10.0), ("y", 10.0, 20.0)]
    assert der([("A", 0.0, 10.0)], hyp, collar_s=0.0).false_alarm == pytest.approx(10.0)
    assert der([("A", 0.0, 10.0)], hyp, collar_s=0.0, uem=(0.0, 10.0)).der == 0.0
    part = der([("A", 0.0, 10.0)], hyp, collar_s=0.0, uem=(5.0, 12.0))
    assert (part.total, part.false_alarm) == pytest.approx((5.0, 2.0))


def test_no_reference_speech() -> None:
    assert der([], [], collar_s=0.0) == DerScore(0.0, 0.0, 0.0, 0.0)
    assert der([], [], collar_s=0.0).der == 0.0
    only_hyp = der([], [("x", 1.0, 2.0)])
    assert (only_hyp.total, only_hyp.false_alarm, only_hyp.der) == (0.0, 1.0, 1.0)


def test_a_speaker_overlapping_itself_counts_once() -> None:
    ref = [("A", 0.0, 6.0), ("A", 4.0, 10.0)]
    score = der(ref, [("x", 0.0, 10.0)], collar_s=0.0)
    assert (score.total, score.der) == (10.0, 0.0)


def test_scores_add_to_pool_recordings() -> None:
    a = der(TWO, [("x", 0.0, 15.0), ("y", 15.0, 20.0)], collar_s=0.0)  # 5 s error of 20
    b = der([("A", 0.0, 10.0)], [], collar_s=0.0)  # 10 s error of 10
    pooled = a + b
    assert pooled == DerScore(30.0, 0.0, 10.0, 5.0)
    assert pooled.der == pytest.approx(0.5)
    assert pooled.mapping == {}


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="collar_s must be >= 0"):
        der(TWO, TWO, collar_s=-0.1)
    with pytest.raises(ValueError, match="ends before it starts"):
        der([("A", 2.0, 1.0)], TWO)
    with pytest.raises(ValueError, match="uem"):
        der(TWO, TWO, uem=(5.0, 1.0))
    with pytest.raises(ValueError, match="gap_s"):
        merge_turns(TWO, gap_s=-1.0)


def test_merge_turns_joins_each_speakers_close_turns() -> None:
    turns = [("A", 3.0, 4.0), ("A", 0.0, 1.0), ("B", 1.0, 1.5), ("A", 1.6, 2.0), ("B", 1.2, 1.4), ("C", 5.0, 5.0)]
    assert merge_turns(turns) == [("A", 0.0, 1.0), ("B", 1.0, 1.5), ("A", 1.6, 2.0), ("A", 3.0, 4.0)]
    assert merge_turns(turns, gap_s=0.75) == [("A", 0.0, 2.0), ("B", 1.0, 1.5), ("A", 3.0, 4.0)]
    assert merge_turns(turns, gap_s=1.5) == [("A", 0.0, 4.0), ("B", 1.0, 1.5)]
    assert merge_turns([("A", 0.0, 1.0), ("A", 1.0, 2.0)]) == [("A", 0.0, 2.0)]  # touching turns join


turn_lists = st.lists(
    st.tuples(st.sampled_from("ABC"), st.integers(0, 60), st.integers(1, 25)).map(
        lambda t: (t[0], t[1] / 10, (t[1] + t[2]) / 10)),
    max_size=6)


@settings(max_examples=150, deadline=None)
@given(reference=turn_lists, hypothesis=turn_lists.map(lambda ts: [(s.lower(), a, b) for s, a, b in ts]),
       collar_s=st.sampled_from([0.0, 0.1, 0.25]), skip_overlap=st.booleans(),
       uem=st.none() | st.tuples(st.integers(0, 40), st.integers(0, 50)).map(lambda u: (u[0] / 10, (u[0] + u[1]) / 10)))
def test_der_agrees_with_a_frame_grid_on_random_turns(reference: list[Turn], hypothesis: list[Turn], collar_s: float,
                                                     skip_overlap: bool, uem: tuple[float, float] | None) -> None:
    # every boundary lies on a 50 ms grid, 5 ms from the nearest 10 ms frame centre: the counts are exact
    score = der(reference, hypothesis, collar_s, skip_overlap, uem)
    error_s, total_s = frame_der(reference, hypothesis, collar_s, skip_overlap, uem)
    assert score.total == pytest.approx(total_s, abs=1e-6)
    assert score.error == pytest.approx(error_s, abs=1e-6)
    assert min(score.false_alarm, score.missed, score.confusion) >= -1e-9


@pytest.mark.parametrize("name", ["dev00", "dev01"])
def test_ami_reference_against_itself_and_one_speaker(data_dir: Path, name: str) -> None:
    reference = read_rttm(data_dir / f"diarization/ami/{name}.rttm")
    for collar_s in (0.0, 0.25):
        assert der(reference, reference, collar_s).der == 0.0
        shuffled = [({"MEE009": "b", "MEE012": "a"}[s], a, b) for s, a, b in reversed(reference)]
        assert der(reference, shuffled, collar_s, skip_overlap=True).der == 0.0
        one_speaker = [("x", 0.0, 30.0)]
        score = der(reference, one_speaker, collar_s)
        error_s, total_s = frame_der(reference, one_speaker, collar_s)
        assert score.total == pytest.approx(total_s, abs=0.05)
        assert score.der == pytest.approx(error_s / total_s, abs=0.01)
        assert score.der > 0.2  # DER is not bounded by 1: dev01 is half silence, all false alarm here
        assert score.missed > 0 and score.confusion > 0 and score.false_alarm > 0


def pyannote_der(reference: Sequence[Turn], hypothesis: Sequence[Turn], collar_s: float,
                 skip_overlap: bool) -> dict[str, float]:
    """pyannote.metrics' components, its ``collar`` being the total width (2 * collar_s)."""
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    def annotation(turns: Sequence[Turn]) -> Annotation:
        out = Annotation()
        for i, (spk, s, e) in enumerate(turns):
            out[Segment(s, e), i] = spk
        return out

    metric = DiarizationErrorRate(collar=2 * collar_s, skip_overlap=skip_overlap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric(annotation(reference), annotation(hypothesis), detailed=True)


@pytest.mark.parametrize("name", ["dev00", "dev01"])
def test_der_agrees_with_pyannote_metrics(data_dir: Path, name: str) -> None:
    pytest.importorskip("pyannote.metrics")
    reference = read_rttm(data_dir / f"diarization/ami/{name}.rttm")
    rng = np.random.default_rng(7)
    relabel = {"MEE009": "h1", "MEE012": "h2"}
    jittered = [(relabel[s] if rng.random() < 0.8 else "h3", a + rng.normal(0, 0.3), b + rng.normal(0, 0.3))
                for s, a, b in reference]
    hypotheses = [
        [("x", 0.0, 30.0)],
        [*merge_turns([(spk, a, b) for spk, a, b in jittered if b > a]), ("h4", 29.0, 31.0)],
        [("h1", a, b) for a, b in zip(np.arange(0, 30, 1.7), np.arange(0.9, 31, 1.7), strict=True)],
    ]
    for hypothesis, collar_s, skip_overlap in itertools.product(hypotheses, (0.0, 0.25), (False, True)):
        ours = der(reference, hypothesis, collar_s, skip_overlap)
        theirs = pyannote_der(reference, hypothesis, collar_s, skip_overlap)
        assert ours.total == pytest.approx(theirs["total"], abs=1e-6)
        assert ours.false_alarm == pytest.approx(theirs["false alarm"], abs=1e-6)
        assert ours.missed == pytest.approx(theirs["missed detection"], abs=1e-6)
        assert ours.confusion == pytest.approx(theirs["confusion"], abs=1e-6)
        assert ours.der == pytest.approx(theirs["diarization error rate"], abs=1e-9)
