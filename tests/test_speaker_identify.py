"""Speaker identification logic on synthetic embeddings: gallery, open set, online clustering, identifier,
speaker-change detection, EER calibration.

Synthetic speakers are unit directions with an exact pairwise cosine ``rho`` (a shared component plus
orthonormal private ones); an embedding of a speaker is its direction plus noise orthogonal to it, with
an exact cosine ``sim`` to the direction, so two embeddings of one speaker have a cosine near sim**2.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kikimimi.engine.errors import ParamError
from kikimimi.models.speaker.calibrate import eer, threshold_at_far
from kikimimi.models.speaker.identify import (
    ChangeDetector,
    Gallery,
    Identifier,
    Identity,
    OnlineClusterer,
    split_points,
)

DIM = 256
THRESHOLD = 0.72
HOP, WINDOW = 12800, 25600          # 0.8 s hop, 1.6 s windows at 16 kHz


def speakers(rng: np.random.Generator, m: int, rho: float = 0.55) -> list[np.ndarray]:
    """``m`` unit directions with pairwise cosine exactly ``rho``."""
    q, _ = np.linalg.qr(rng.standard_normal((DIM, m + 1)))
    return [np.sqrt(rho) * q[:, 0] + np.sqrt(1 - rho) * q[:, i + 1] for i in range(m)]


def sample(rng: np.random.Generator, direction: np.ndarray, sim: float, n: int) -> np.ndarray:
    """(n, DIM) float32 unit embeddings with cosine exactly ``sim`` to ``direction``."""
    noise = rng.standard_normal((n, DIM))
    noise -= np.outer(noise @ direction, direction)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return (sim * direction + np.sqrt(1 - sim**2) * noise).astype(np.float32)


def spans(n: int, first: int = 0) -> list[tuple[int, int]]:
    return [(first + i * HOP, first + i * HOP + WINDOW) for i in range(n)]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# ---- Gallery ---------------------------------------------------------------------------------------------

def test_gallery_best_scores_and_threshold(rng: np.random.Generator) -> None:
    dirs = speakers(rng, 4)
    gallery = Gallery.from_vectors({name: sample(rng, d, 0.9, 5) for name, d in zip("abc", dirs, strict=False)})
    assert gallery.names == ("a", "b", "c") and len(gallery) == 3 and gallery.count("a") == 5
    for name, d in zip("abc", dirs, strict=False):
        for vec in sample(rng, d, 0.95, 5):
            best, score = gallery.best(vec)
            scores = gallery.scores(vec)
            assert best == name and score >= THRESHOLD
            assert list(scores) == ["a", "b", "c"] and scores[name] == pytest.approx(score)
            assert all(s < THRESHOLD for other, s in scores.items() if other != name)
    # An unenrolled speaker is closest to someone, but below the threshold (open set).
    for vec in sample(rng, dirs[3], 0.95, 5):
        assert gallery.best(vec)[1] < THRESHOLD


def test_gallery_incremental_add_equals_batch(rng: np.random.Generator) -> None:
    (d,) = speakers(rng, 1)
    vecs = sample(rng, d, 0.9, 7)
    once = Gallery.from_vectors({"a": vecs})
    twice = Gallery()
    twice.add("a", vecs[:3])
    twice.add("a", vecs[3:])
    twice.add("b", vecs[0])                       # a single (dim,) vector enrolls too
    assert twice.count("a") == 7 and twice.count("b") == 1 and twice.count("zed") == 0
    np.testing.assert_allclose(once.centroid("a"), twice.centroid("a"), atol=1e-6)
    expected = vecs.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(once.centroid("a"), expected / np.linalg.norm(expected), atol=1e-6)
    assert once.centroid("a").dtype == np.float32 and np.linalg.norm(once.centroid("a")) == pytest.approx(1, abs=1e-6)
    twice.remove("b")
    assert twice.names == ("a",) and twice.best(vecs[0])[0] == "a"
    twice.remove("a")
    assert twice.best(vecs[0]) == (None, -1.0) and twice.scores(vecs[0]) == {}


def test_gallery_renormalises_inputs(rng: np.random.Generator) -> None:
    (d,) = speakers(rng, 1)
    vecs = sample(rng, d, 0.9, 4)
    scaled = Gallery.from_vectors({"a": vecs * 3.0})
    assert scaled.best(vecs[0] * 0.01)[1] == pytest.approx(Gallery.from_vectors({"a": vecs}).best(vecs[0])[1])


def test_gallery_rejects_bad_input(rng: np.random.Generator) -> None:
    gallery = Gallery.from_vectors({"a": sample(rng, speakers(rng, 1)[0], 0.9, 3)}, max_speakers=2)
    bad = [
        ("b", np.ones(DIM + 1)),                   # wrong dimension
        ("b", np.full(DIM, np.nan)),
        ("b", np.zeros(DIM)),
        ("b", np.zeros((0, DIM))),
        ("b", np.ones((2, 2, DIM))),
        ("", np.ones(DIM)),
        ("unknown", np.ones(DIM)),
        ("voice_3", np.ones(DIM)),
    ]
    for name, vec in bad:
        with pytest.raises(ParamError):
            gallery.add(name, vec)
    gallery.add("b", np.ones(DIM))
    with pytest.raises(ParamError, match="max_speakers=2"):
        gallery.add("c", np.ones(DIM))
    with pytest.raises(ParamError, match="not enrolled"):
        gallery.remove("zed")
    with pytest.raises(ParamError, match="dimension"):
        gallery.best(np.ones(3))
    assert gallery.names == ("a", "b")


# ---- OnlineClusterer -------------------------------------------------------------------------------------

def test_clusterer_stable_ids_and_new_voice(rng: np.random.Generator) -> None:
    d, e = speakers(rng, 2)
    clusterer = OnlineClusterer(THRESHOLD)
    for vd, ve in zip(sample(rng, d, 0.95, 8), sample(rng, e, 0.95, 8), strict=True):
        assert clusterer.assign(vd)[0] == "voice_1"
        voice, sim = clusterer.assign(ve)
        assert voice == "voice_2"
    assert sim >= THRESHOLD and clusterer.ids == ("voice_1", "voice_2") and len(clusterer) == 2
    assert clusterer.forgotten == 0 and clusterer.merged == 0 and clusterer.issued == 2
    # peek finds the cluster and changes nothing.
    probe = sample(rng, d, 0.95, 1)[0]
    assert clusterer.peek(probe)[0] == "voice_1"
    assert clusterer.ids == ("voice_1", "voice_2")
    assert clusterer.peek(probe) == clusterer.peek(probe)
    assert OnlineClusterer(THRESHOLD).peek(probe) == (None, -1.0)


def test_clusterer_new_cluster_reports_one_and_match_reports_prior_similarity() -> None:
    p = np.zeros(DIM)
    p[0] = 1.0
    q = np.zeros(DIM)
    q[:2] = [0.8, 0.6]                                # cos(p, q) = 0.8
    clusterer = OnlineClusterer(0.7, merge_threshold=1.0)
    assert clusterer.assign(p) == ("voice_1", 1.0)
    voice, sim = clusterer.assign(q)
    assert voice == "voice_1" and sim == pytest.approx(0.8)


def test_clusterer_lru_cap_forgets_and_never_reuses_ids(rng: np.random.Generator) -> None:
    a, b, c = speakers(rng, 3)
    clusterer = OnlineClusterer(THRESHOLD, max_clusters=2)
    assert clusterer.assign(sample(rng, a, 0.95, 1)[0])[0] == "voice_1"
    assert clusterer.assign(sample(rng, b, 0.95, 1)[0])[0] == "voice_2"
    assert clusterer.assign(sample(rng, a, 0.95, 1)[0])[0] == "voice_1"    # voice_2 is now the LRU
    assert clusterer.assign(sample(rng, c, 0.95, 1)[0])[0] == "voice_3"
    assert clusterer.forgotten == 1 and set(clusterer.ids) == {"voice_1", "voice_3"}
    assert clusterer.resolve("voice_2") is None
    assert clusterer.assign(sample(rng, b, 0.95, 1)[0])[0] == "voice_4"   # b comes back under a new id
    assert clusterer.forgotten == 2 and set(clusterer.ids) == {"voice_3", "voice_4"}
    clusterer.reset()
    assert len(clusterer) == 0 and clusterer.forgotten == 0
    assert clusterer.assign(sample(rng, a, 0.95, 1)[0])[0] == "voice_1"   # a new session starts over


def test_clusterer_merges_into_older_id_with_alias() -> None:
    p = np.zeros(DIM)
    p[0] = 1.0
    q = np.zeros(DIM)
    q[:2] = [0.7, np.sqrt(1 - 0.49)]                  # cos(p, q) = 0.7 < new_threshold: two clusters
    clusterer = OnlineClusterer(0.72, merge_threshold=0.8)
    assert clusterer.assign(p)[0] == "voice_1"
    assert clusterer.assign(q)[0] == "voice_2"
    # Between the two, a bit closer to q: joins voice_2, whose centroid moves to cos ~0.82 with voice_1.
    between = 0.9 * p + q
    voice, sim = clusterer.assign(between)
    assert sim == pytest.approx((0.9 * 0.7 + 1) / np.linalg.norm(between))   # to voice_2 before the update
    assert voice == "voice_1"                                              # the older id survives
    assert clusterer.merged == 1 and clusterer.ids == ("voice_1",)
    assert clusterer.aliases == {"voice_2": "voice_1"}
    assert clusterer.resolve("voice_2") == "voice_1" and clusterer.resolve("voice_1") == "voice_1"
    assert clusterer.resolve("voice_9") is None
    # The survivor's centroid is the mean of all three members.
    mean = p + q + between / np.linalg.norm(between)
    assert clusterer.peek(mean)[1] == pytest.approx(1.0)


def at(degrees: float) -> np.ndarray:
    """A unit vector in the plane of the first two axes, at ``degrees`` from the first."""
    v = np.zeros(DIM)
    v[:2] = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return v


@pytest.mark.parametrize("max_aliases", [2, 1])
def test_clusterer_aliases_follow_chained_merges_and_are_capped(max_aliases: int) -> None:
    clusterer = OnlineClusterer(0.72, merge_threshold=0.8, max_aliases=max_aliases)
    for i, degrees in enumerate((0, 46, 92)):                          # cos 0.69 apart: three clusters
        assert clusterer.assign(at(degrees)) == (f"voice_{i + 1}", 1.0)
    # 70 degrees joins voice_3 (92), whose centroid (81) is then within 35 degrees (cos > 0.8) of voice_2.
    assert clusterer.assign(at(70))[0] == "voice_2"
    assert clusterer.aliases == {"voice_3": "voice_2"} and clusterer.ids == ("voice_1", "voice_2")
    # A heavy 36-degree window joins voice_2 (at 69) and drags it within cos 0.8 of voice_1: merge again.
    assert clusterer.assign(at(36), weight=1000.0)[0] == "voice_1"
    assert clusterer.ids == ("voice_1",) and clusterer.merged == 2
    if max_aliases == 2:
        assert clusterer.aliases == {"voice_3": "voice_1", "voice_2": "voice_1"}   # voice_3 follows its survivor
    else:
        assert clusterer.aliases == {"voice_2": "voice_1"}                          # the oldest alias dropped
        assert clusterer.resolve("voice_3") is None


def test_clusterer_rejects_bad_params() -> None:
    for kwargs in ({"new_threshold": 1.5}, {"new_threshold": float("nan")}, {"new_threshold": True},
                   {"new_threshold": 0.8, "merge_threshold": 0.7}, {"new_threshold": 0.7, "max_clusters": 0},
                   {"new_threshold": 0.7, "max_aliases": -1}):
        with pytest.raises(ParamError):
            OnlineClusterer(**kwargs)  # type: ignore[arg-type]
    clusterer = OnlineClusterer(0.7)
    assert clusterer.merge_threshold == pytest.approx(0.8)
    for weight in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ParamError, match="weight"):
            clusterer.assign(np.ones(DIM), weight=weight)
    clusterer.assign(np.ones(DIM))
    with pytest.raises(ParamError, match="dimension"):
        clusterer.assign(np.ones(DIM - 1))


# ---- Identifier ------------------------------------------------------------------------------------------

def test_identifier_enrolled_unknown_and_voices(rng: np.random.Generator) -> None:
    dirs = speakers(rng, 5)
    gallery = Gallery.from_vectors({name: sample(rng, d, 0.9, 5) for name, d in zip("abc", dirs, strict=False)})
    ident = Identifier(gallery, THRESHOLD)
    for name, d in zip("abc", dirs, strict=False):
        result = ident.identify(sample(rng, d, 0.95, 1)[0], n_windows=4)
        assert result.speaker == name and result.enrolled and result.score >= THRESHOLD
    for _ in range(4):                                # unenrolled d and e: stable anonymous voices
        vd = ident.identify(sample(rng, dirs[3], 0.95, 1)[0], 3)
        ve = ident.identify(sample(rng, dirs[4], 0.95, 1)[0], 3)
        assert (vd.speaker, vd.enrolled, ve.speaker, ve.enrolled) == ("voice_1", False, "voice_2", False)
    closed = Identifier(gallery, THRESHOLD, cluster_unknown=False)
    vec = sample(rng, dirs[3], 0.95, 1)[0]
    result = closed.identify(vec, 3)
    assert result == Identity("unknown", gallery.best(vec)[1], False) and result.score < THRESHOLD
    assert len(closed.clusterer) == 0
    ident.reset()
    assert len(ident.clusterer) == 0 and ident.gallery is gallery


def test_identifier_min_windows_leaves_clusters_alone(rng: np.random.Generator) -> None:
    (d, e) = speakers(rng, 2)
    ident = Identifier(Gallery.from_vectors({"a": sample(rng, d, 0.9, 3)}), THRESHOLD, min_windows=2)
    assert ident.identify(None, 0) == Identity("unknown", -1.0, False)
    assert ident.identify(sample(rng, d, 0.95, 1)[0], 1) == Identity("unknown", -1.0, False)   # enrolled, too short
    assert ident.identify(sample(rng, e, 0.95, 1)[0], 1).speaker == "unknown"
    assert len(ident.clusterer) == 0
    assert ident.identify(sample(rng, e, 0.95, 1)[0], 2).speaker == "voice_1"
    assert ident.identify(sample(rng, d, 0.95, 1)[0], 2).speaker == "a"
    default = Identifier(None, THRESHOLD)
    assert default.identify(None, 0).speaker == "unknown"
    assert default.identify(sample(rng, e, 0.95, 1)[0], 1).speaker == "voice_1"   # empty gallery: voices only


def test_identifier_threshold_defaults_and_validation() -> None:
    ident = Identifier(None, 0.72)
    assert ident.clusterer.new_threshold == 0.72 and ident.clusterer.merge_threshold == pytest.approx(0.82)
    assert Identifier(None, 0.9).clusterer.merge_threshold == 0.95
    assert Identifier(None, 0.9, new_threshold=0.97).clusterer.merge_threshold == 0.97
    assert Identifier(None, 0.7, new_threshold=0.6, merge_threshold=0.65).clusterer.merge_threshold == 0.65
    for kwargs in ({"threshold": 2.0}, {"threshold": 0.7, "min_windows": -1}, {"threshold": 0.7, "new_threshold": -3}):
        with pytest.raises(ParamError):
            Identifier(None, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ParamError, match="n_windows"):
        ident.identify(np.ones(DIM), -1)
    with pytest.raises(ParamError):
        ident.identify(None, 3)
    with pytest.raises(ParamError, match="NaN"):
        ident.identify(np.full(DIM, np.nan), 3)


# ---- ChangeDetector --------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_change_found_at_the_first_window_of_the_new_speaker(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = speakers(rng, 2)
    vecs = np.concatenate([sample(rng, a, 0.9, 6), sample(rng, b, 0.9, 6)])
    points = split_points(vecs, spans(12, first=1000), THRESHOLD)
    assert len(points) == 1 and abs(points[0] - (1000 + 6 * HOP)) <= HOP
    detector = ChangeDetector(THRESHOLD)
    results = [detector.push(v, s, e) for v, (s, e) in zip(vecs, spans(12, first=1000), strict=True)]
    assert [r for r in results if r is not None] == points
    assert results.index(points[0]) <= 8                   # decided by the third window of speaker b
    segments = detector.segments()
    assert [(s.start, s.end) for s in segments] == [(1000, points[0]), (points[0], 1000 + 11 * HOP + WINDOW)]
    assert segments[0].vector @ a > 0.95 and segments[1].vector @ b > 0.95


@pytest.mark.parametrize("seed", range(5))
def test_change_with_a_mixed_window_at_the_boundary(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    a, b = speakers(rng, 2)
    mixed = sample(rng, a, 0.9, 1)[0] + sample(rng, b, 0.9, 1)[0]      # a window straddling the change
    vecs = np.concatenate([sample(rng, a, 0.9, 6), mixed[None], sample(rng, b, 0.9, 6)])
    points = split_points(vecs, spans(13), THRESHOLD)
    assert len(points) == 1 and points[0] in (6 * HOP, 7 * HOP)


@pytest.mark.parametrize("seed", range(5))
def test_no_change_on_one_speaker(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    (a,) = speakers(rng, 1)
    vecs = sample(rng, a, 0.87, 40)                        # pairwise cosine ~0.76, the low end of one speaker
    assert split_points(vecs, spans(40), THRESHOLD) == []
    detector = ChangeDetector(THRESHOLD)
    for v, (s, e) in zip(vecs, spans(40), strict=True):
        detector.push(v, s, e)
    (segment,) = detector.segments()
    assert (segment.start, segment.end) == (0, 39 * HOP + WINDOW) and segment.vector @ a > 0.99


def test_change_back_and_forth_and_reset(rng: np.random.Generator) -> None:
    a, b = speakers(rng, 2)
    vecs = np.concatenate([sample(rng, a, 0.9, 6), sample(rng, b, 0.9, 6), sample(rng, a, 0.9, 6)])
    points = split_points(vecs, spans(18), THRESHOLD)
    assert len(points) == 2 and abs(points[0] - 6 * HOP) <= HOP and abs(points[1] - 12 * HOP) <= HOP
    detector = ChangeDetector(THRESHOLD, max_segments=1)
    for v, (s, e) in zip(vecs, spans(18), strict=True):
        detector.push(v, s, e)
    assert detector.dropped == 1 and len(detector.segments()) == 2        # one closed (capped) + the open one
    detector.reset()
    assert detector.segments() == [] and detector.dropped == 0
    assert detector.push(vecs[0], 0, WINDOW) is None                    # starts may go back after a reset
    with pytest.raises(ParamError, match="window span"):
        detector.push(vecs[1], 0, WINDOW)                                # but must increase within an utterance


def test_change_detector_parameters_and_validation() -> None:
    assert ChangeDetector(0.72).change_threshold == pytest.approx(0.67)
    assert ChangeDetector(0.72, change_threshold=0.5, k=3, patience=1).k == 3
    for kwargs in ({"k": 0}, {"patience": 0}, {"change_threshold": 1.2}, {"max_segments": 0}):
        with pytest.raises(ParamError):
            ChangeDetector(0.72, **kwargs)  # type: ignore[arg-type]
    detector = ChangeDetector(0.72)
    detector.push(np.ones(DIM), 100, 200)
    for start, end in ((50, 300), (300, 300)):
        with pytest.raises(ParamError, match="window span"):
            detector.push(np.ones(DIM), start, end)
    for start in (-1, 1.5):
        with pytest.raises(ParamError, match="start_sample"):
            detector.push(np.ones(DIM), start, 300)  # type: ignore[arg-type]
    with pytest.raises(ParamError, match="dimension"):
        detector.push(np.ones(DIM + 1), 200, 300)
    with pytest.raises(ParamError, match="one span per embedding"):
        split_points(np.ones((3, DIM)), spans(2), 0.72)


def test_patience_one_and_larger_k(rng: np.random.Generator) -> None:
    a, b = speakers(rng, 2)
    vecs = np.concatenate([sample(rng, a, 0.9, 8), sample(rng, b, 0.9, 8)])
    for k, patience in ((1, 1), (3, 2), (2, 3)):
        points = split_points(vecs, spans(16), THRESHOLD, k=k, patience=patience)
        assert len(points) == 1 and abs(points[0] - 8 * HOP) <= HOP, (k, patience, points)


# ---- calibration -----------------------------------------------------------------------------------------

def test_eer_separable_sets() -> None:
    rate, threshold = eer(np.array([0.8, 0.9, 0.95]), np.array([0.3, 0.4, 0.1]))
    assert rate == 0.0 and 0.4 < threshold < 0.8 and threshold == pytest.approx(0.6)


def test_eer_tie_computed_by_hand() -> None:
    # At any threshold in (0.6, 0.7]: different 0.7 accepted (FAR 1/4), same 0.6 rejected (FRR 1/4).
    rate, threshold = eer([0.6, 0.8, 0.9, 1.0], [0.1, 0.2, 0.3, 0.7])
    assert rate == pytest.approx(0.25) and threshold == pytest.approx(0.65)


def test_eer_interpolated_crossing_computed_by_hand() -> None:
    # Unique scores .4 .5 .6 .7 .9; at .6: FAR 2/3, FRR 1/2; at .7: FAR 1/3, FRR 1/2. FAR - FRR goes from
    # +1/6 to -1/6, so the lines meet halfway: FAR = FRR = 1/2 at threshold .65.
    rate, threshold = eer(np.array([0.5, 0.9], np.float32), np.array([0.4, 0.6, 0.7], np.float32))
    assert rate == pytest.approx(0.5) and threshold == pytest.approx(0.65, abs=1e-6)


def test_eer_on_synthetic_embeddings(rng: np.random.Generator) -> None:
    dirs = speakers(rng, 6)
    embs = [sample(rng, d, 0.9, 10) for d in dirs]
    same = np.concatenate([(e @ e.T)[np.triu_indices(10, 1)] for e in embs])
    different = np.concatenate([(embs[i] @ embs[j].T).ravel() for i in range(6) for j in range(i + 1, 6)])
    rate, threshold = eer(same, different)
    assert rate == 0.0 and different.max() < threshold < same.min()


GRID = st.integers(-100, 100).map(lambda i: i / 100)      # scores on a grid, so a shift keeps their order and ties


@given(st.lists(GRID, min_size=1, max_size=30), st.lists(GRID, min_size=1, max_size=30), GRID)
def test_eer_bounds_and_shift(same: list[float], different: list[float], shift: float) -> None:
    rate, threshold = eer(np.array(same), np.array(different))
    assert 0.0 <= rate <= 1.0 and min(same + different) <= threshold <= max(same + different) + 1e-9
    moved = eer(np.array(same) + shift, np.array(different) + shift)
    assert moved[0] == pytest.approx(rate, abs=1e-6)


def test_threshold_at_far() -> None:
    scores = np.arange(1, 11, dtype=np.float32) / 10              # 0.1 .. 1.0
    for far, accepted in ((0.0, 0), (0.05, 0), (0.1, 1), (0.29, 2), (0.3, 3), (0.5, 5), (0.99, 9)):
        threshold = threshold_at_far(scores, far)
        assert int(np.sum(scores >= threshold)) == accepted, (far, threshold)
        assert int(np.sum(scores >= np.float32(threshold))) == accepted      # survives float32 rounding
    assert threshold_at_far(scores, 0.3) == pytest.approx(0.75)
    assert threshold_at_far(np.array([0.5, 0.5, 0.5]), 0.5) > 0.5        # ties above the cut are all rejected


def test_calibration_rejects_bad_input() -> None:
    for same, different in (([], [0.1]), ([0.1], []), ([[0.1]], [0.1]), ([np.nan], [0.1]), ([0.1], [np.inf])):
        with pytest.raises(ParamError):
            eer(np.array(same), np.array(different))
    for far in (-0.1, 1.0, float("nan"), True):
        with pytest.raises(ParamError, match="far"):
            threshold_at_far(np.array([0.1, 0.2]), far)
