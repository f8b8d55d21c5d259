"""Prosody (issue 15 item 2, part): the YIN pitch kernel against exact tones and librosa.yin on real speech,
loudness and the onset-rate proxy, and prosodic arousal on RAVDESS actors 17-20 with a per-actor baseline."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from asr_pipeline import load_audio

from kikimimi.engine.errors import ParamError
from kikimimi.models.affect import prosody
from kikimimi.models.affect.prosody import (
    TYPICAL,
    ProsodyBaseline,
    arousal_from,
    energy_db,
    n_frames,
    pitch,
    prosodic_arousal,
    prosody_features,
)

HIGH = ("angry", "happy", "surprised", "fearful")
LOW = ("sad", "calm", "neutral")


def tone(f0: float, rate: int, seconds: float = 1.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * f0 * t) + amp / 3 * np.sin(2 * np.pi * 2 * f0 * t)).astype(np.float32)


@pytest.mark.parametrize(("f0", "rate"), [(65.0, 16000), (110.0, 8000), (200.0, 16000), (330.0, 48000),
                                          (480.0, 16000)])
def test_the_pitch_of_a_tone_is_exact_within_two_percent_in_every_voiced_frame(f0: float, rate: int) -> None:
    p = pitch(tone(f0, rate), rate)
    assert p.f0.shape == (n_frames(rate, rate),) == p.voiced.shape
    inner = slice(5, -5)                                   # frames whose window lies inside the tone
    assert p.voiced[inner].all()
    err = np.abs(p.f0[inner] / f0 - 1.0)
    assert err.max() < 0.02                                # the bound
    assert np.median(err) < 0.002                          # interpolated between lags (measured: < 0.05 %)
    assert np.isnan(p.f0[~p.voiced]).all()


def test_silence_and_noise_are_unvoiced() -> None:
    rng = np.random.default_rng(0)
    assert not pitch(np.zeros(16000, np.float32), 16000).voiced.any()
    noise = pitch(rng.normal(0, 0.1, 16000).astype(np.float32), 16000)
    assert noise.voiced.mean() < 0.05
    f = prosody_features(np.zeros(16000, np.float32), 16000)
    assert np.isnan(f.f0_median_hz) and f.voiced_fraction == 0.0
    assert prosodic_arousal(np.zeros(16000, np.float32), 16000) == 0.0


def agreement_with_librosa(audio: np.ndarray) -> tuple[float, float]:
    """(voiced fraction, share of our voiced frames within 5 % of librosa.yin's f0)."""
    librosa = pytest.importorskip("librosa")
    ours = pitch(audio, 16000)
    ref = librosa.yin(audio, fmin=60, fmax=500, sr=16000, frame_length=1024, hop_length=160)
    assert ref.shape == ours.f0.shape                      # the same frame times (centred, every 10 ms)
    v = ours.voiced
    return float(v.mean()), float(np.mean(np.abs(ours.f0[v] / ref[v] - 1.0) < 0.05))


def test_pitch_on_real_speech_agrees_with_librosa_yin(data_dir: Path) -> None:
    voiced, agree = agreement_with_librosa(load_audio(data_dir / "en/jfk/jfk.flac"))
    assert 0.25 < voiced < 0.7 and agree > 0.93           # measured: 0.353 voiced, 0.985 agree
    clip = data_dir / "emotion/ravdess/Actor_18/03-01-05-02-01-01-18.flac"     # angry, strong, female
    voiced, agree = agreement_with_librosa(load_audio(clip))
    assert voiced > 0.2 and agree > 0.85                   # measured: 0.91 agree


def test_loudness_follows_gain_and_onsets_count_syllable_like_bursts() -> None:
    x = tone(150.0, 16000, 2.0)
    db = energy_db(x, 16000)
    np.testing.assert_allclose(energy_db(2 * x, 16000)[5:-5], db[5:-5] + 20 * np.log10(2), atol=1e-3)
    assert abs(float(np.median(db)) - 10 * np.log10(np.mean(x.astype(np.float64) ** 2))) < 0.1
    bursts = x * (np.arange(x.size) // 1600 % 2 == 0)      # 100 ms on, 100 ms off: 5 onsets a second
    f = prosody_features(bursts, 16000)
    assert 4.5 <= f.onset_rate <= 5.5 and 0.35 < f.voiced_fraction < 0.6
    assert abs(f.f0_median_hz - 150.0) < 3 and f.f0_range_st < 0.5


def test_arousal_rises_with_pitch_and_loudness_against_a_baseline() -> None:
    base = ProsodyBaseline()
    assert base.reference() == TYPICAL
    calm = tone(150.0, 16000, amp=0.1)
    base.add(prosody_features(calm, 16000))
    assert base.count == 1 and abs(base.reference().f0_median_hz - 150.0) < 3
    assert abs(prosodic_arousal(calm, 16000, base)) < 0.05
    louder = prosodic_arousal(calm * 4, 16000, base)
    higher = prosodic_arousal(tone(220.0, 16000, amp=0.1), 16000, base)
    lower = prosodic_arousal(tone(100.0, 16000, amp=0.05), 16000, base)
    assert louder > 0.3 and higher > 0.3 and lower < -0.3
    assert lower >= -1.0 and higher <= 1.0


def test_the_kernel_is_compiled_once_for_an_explicit_signature_and_cached() -> None:
    from numba.core.caching import FunctionCache

    assert len(prosody._yin.signatures) == 1
    assert isinstance(prosody._yin._cache, FunctionCache)
    assert not prosody._yin._can_compile                   # no silent recompilation for other dtypes


@pytest.mark.parametrize(("audio", "rate", "match"), [
    (np.zeros((2, 8000), np.float32), 16000, "shape"),
    (np.zeros(8000, np.int16), 16000, "dtype"),
    (np.full(8000, np.nan, np.float32), 16000, "NaN"),
    (np.zeros(100, np.float32), 16000, "at least 50 ms"),
    (np.zeros(8000, np.float32), 4000, "rate=4000"),
    (np.zeros(8000, np.float32), True, "rate=True"),
])
def test_bad_input_is_named(audio: np.ndarray, rate: int, match: str) -> None:
    with pytest.raises(ParamError, match=match):
        pitch(audio, rate)


def test_bad_search_range_and_baseline_are_named() -> None:
    with pytest.raises(ParamError, match="fmin=500"):
        pitch(np.zeros(8000, np.float32), 16000, fmin=500, fmax=100)
    with pytest.raises(ParamError, match="baseline is a dict"):
        prosodic_arousal(np.zeros(8000, np.float32), 16000, baseline={})  # type: ignore[arg-type]


@pytest.mark.slow
def test_high_arousal_emotions_sound_more_aroused_than_low_ones_on_unseen_ravdess_actors(data_dir: Path) -> None:
    rows = list(csv.DictReader((data_dir / "emotion/ravdess/labels.tsv").open(encoding="utf-8"), delimiter="\t"))
    scores: dict[str, list[float]] = {"high": [], "low": [], "high_typ": [], "low_typ": []}
    for actor in ("17", "18", "19", "20"):
        clips = [(r["emotion"], prosody_features(load_audio(data_dir / r["path"]), 16000))
                 for r in rows if r["actor"] == actor]
        base = ProsodyBaseline()
        for emotion, f in clips:
            if emotion == "neutral":
                base.add(f)
        assert base.count == 4
        for emotion, f in clips:
            group = "high" if emotion in HIGH else "low" if emotion in LOW else None
            if group:
                scores[group].append(arousal_from(f, base.reference()))
                scores[group + "_typ"].append(arousal_from(f, TYPICAL))
    assert len(scores["high"]) == 4 * 4 * 8 and len(scores["low"]) == 4 * (8 + 8 + 4)

    def auc(hi: list[float], lo: list[float]) -> float:
        h, lo_ = np.array(hi)[:, None], np.array(lo)[None, :]
        return float(np.mean(h > lo_) + 0.5 * np.mean(h == lo_))

    # measured: baseline AUC 0.855, mean difference 0.62; fixed typical values AUC 0.866
    assert np.mean(scores["high"]) - np.mean(scores["low"]) > 0.4
    assert auc(scores["high"], scores["low"]) > 0.8
    assert auc(scores["high_typ"], scores["low_typ"]) > 0.75
