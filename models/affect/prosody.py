"""Prosody of a clip: pitch (a YIN numba kernel), loudness and a speaking-rate proxy; arousal from them.

* :func:`pitch`: f0 every 10 ms over 60-500 Hz with a voicing decision. The audio is resampled to 8 kHz
  (enough for 500 Hz, and 4x less work at 16 kHz) and each frame, centred on its time, is judged by YIN
  (de Cheveigne & Kawahara 2002): the difference function over a window of three longest periods (50 ms), its
  cumulative mean normalised form (CMND), the first local minimum of the CMND whose parabola-refined value is under 0.1
  (else the lowest such minimum; refining matters at 8 kHz, where a high voice's period falls between lags),
  and parabolic interpolation of the difference function around it. A frame is voiced when that minimum is under
  0.25 and the frame is no more than 40 dB below the clip's loudest frame and above -60 dBFS (quieter frames are
  not analysed).
* :func:`energy_db`: RMS in dB (re full scale 1.0) of 25 ms frames every 10 ms, on the same frame times.
* :func:`prosody_features`: median f0, f0 range (10th to 90th percentile, semitones), mean loudness of voiced
  frames, voiced fraction, and voiced onsets per second of speech (runs of >= 30 ms voicing; a syllable-rate
  proxy).
* :func:`prosodic_arousal`: arousal in [-1, 1] from pitch level, pitch range and loudness relative to a
  reference: a :class:`ProsodyBaseline` of the same speaker (a running mean over their clips) where given,
  else fixed typical values (:data:`TYPICAL`), which know neither the speaker's voice nor the recording level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import soxr
from numba import boolean, float32, float64, int64, jit, void

from kikimimi.engine.errors import ParamError

PITCH_RATE = 8000
HOP_S = 0.010
FMIN = 60.0
FMAX = 500.0
YIN_THRESHOLD = 0.1
VOICING_THRESHOLD = 0.25
FLOOR_DB = -60.0
RANGE_DB = 40.0
MIN_RUN = 3
ENERGY_WIN_S = 0.025
WIN_FACTOR = 3.0

_SIG = void(float32[::1], boolean[::1], int64, int64, int64, int64, float64, float64[::1], float64[::1], float64[::1],
            float64[::1])


@jit(_SIG, nopython=True, cache=True)
def _yin(x, active, hop, win, tau_min, tau_max, threshold, diff, cmnd, period, aperiodicity):  # pragma: no cover
    """Per frame f (samples ``x[f*hop : f*hop + win + tau_max]``): YIN period in samples and its CMND value.
    ``diff`` and ``cmnd`` are scratch of tau_max + 2; ``period`` and ``aperiodicity`` are the outputs. A frame
    not ``active`` (too quiet to be voiced) is skipped: period 0, aperiodicity 1."""
    for f in range(period.shape[0]):
        if not active[f]:
            period[f] = 0.0
            aperiodicity[f] = 1.0
            continue
        s0 = f * hop
        diff[0] = 0.0
        cmnd[0] = 1.0
        running = 0.0
        for tau in range(1, tau_max + 2):
            acc = 0.0
            for j in range(win):
                d = np.float64(x[s0 + j]) - np.float64(x[s0 + j + tau])
                acc += d * d
            diff[tau] = acc
            running += acc
            cmnd[tau] = acc * tau / running if running > 0.0 else 1.0
        best = -1
        best_v = 1e30
        best_shift = 0.0
        first = -1
        for t in range(tau_min, tau_max + 1):      # local minima of CMND, each refined by a parabola
            if cmnd[t] <= cmnd[t - 1] and cmnd[t] < cmnd[t + 1]:
                a, b, c = cmnd[t - 1], cmnd[t], cmnd[t + 1]
                den = a - 2.0 * b + c
                v = b - (a - c) * (a - c) / (8.0 * den) if den > 0.0 else b
                if v < threshold:
                    first = t
                    best_v = v
                    break
                if v < best_v:
                    best, best_v = t, v
        if first >= 0:
            best = first
        if best < 0:                               # no local minimum: the smallest value
            best = tau_min
            for t in range(tau_min + 1, tau_max + 1):
                if cmnd[t] < cmnd[best]:
                    best = t
            best_v = cmnd[best]
        a, b, c = diff[best - 1], diff[best], diff[best + 1]
        den = a - 2.0 * b + c
        if den > 0.0:
            best_shift = 0.5 * (a - c) / den
            if best_shift > 0.5:
                best_shift = 0.5
            elif best_shift < -0.5:
                best_shift = -0.5
        shift = best_shift
        aperiodicity[f] = max(best_v, 0.0)
        period[f] = best + shift


def _check_audio(audio: np.ndarray, rate: int) -> np.ndarray:
    """``audio`` as 1-D contiguous float32 if it and ``rate`` are usable; ParamError naming the bad value."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or not 8000 <= rate <= 192000:
        raise ParamError(f"rate={rate!r} is not allowed; allowed: an integer sample rate in [8000, 192000]")
    a = np.asarray(audio)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.floating):
        raise ParamError(f"audio has shape {a.shape} and dtype {a.dtype}; allowed: 1-D float mono samples")
    if a.size < int(0.05 * rate):
        raise ParamError(f"audio has {a.size} samples; allowed: at least 50 ms ({int(0.05 * rate)} at {rate} Hz)")
    if not np.isfinite(a).all():
        raise ParamError("audio holds NaN or infinite samples; allowed: finite samples")
    return np.ascontiguousarray(a, np.float32)


def n_frames(n_samples: int, rate: int) -> int:
    """Frames of a clip of ``n_samples``: one every 10 ms, the first centred on sample 0."""
    return 1 + n_samples // round(HOP_S * rate)


def energy_db(audio: np.ndarray, rate: int) -> np.ndarray:
    """RMS in dB (re 1.0) of 25 ms frames centred every 10 ms (:func:`n_frames` of them), floor -120 dB."""
    x = _check_audio(audio, rate).astype(np.float64)
    hop, win = round(HOP_S * rate), round(ENERGY_WIN_S * rate)
    n = n_frames(x.size, rate)
    padded = np.concatenate([np.zeros(win // 2), x, np.zeros(win)])
    c = np.concatenate([[0.0], np.cumsum(padded * padded)])
    starts = np.arange(n) * hop
    ms = (c[starts + win] - c[starts]) / win
    return (10.0 * np.log10(np.maximum(ms, 1e-12))).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Pitch:
    """f0 in Hz per 10 ms frame (NaN where unvoiced), the voicing decision, and YIN's aperiodicity (0..1+)."""

    f0: np.ndarray
    voiced: np.ndarray
    aperiodicity: np.ndarray


def pitch(audio: np.ndarray, rate: int, fmin: float = FMIN, fmax: float = FMAX) -> Pitch:
    """f0 every 10 ms of 1-D float ``audio`` at ``rate`` Hz, between ``fmin`` and ``fmax`` (see the module)."""
    x = _check_audio(audio, rate)
    if not (isinstance(fmin, (int, float)) and isinstance(fmax, (int, float)) and 30.0 <= fmin < fmax <= 1000.0):
        raise ParamError(f"fmin={fmin!r}, fmax={fmax!r} are not allowed; allowed: 30 <= fmin < fmax <= 1000 Hz")
    n = n_frames(x.size, rate)
    y = x if rate == PITCH_RATE else soxr.resample(x, rate, PITCH_RATE).astype(np.float32)
    hop = round(HOP_S * PITCH_RATE)
    tau_min, tau_max = max(2, int(PITCH_RATE / fmax)), math.ceil(PITCH_RATE / fmin)
    win = int(WIN_FACTOR * tau_max)
    half = (win + tau_max) // 2
    padded = np.zeros(half + n * hop + win + tau_max + 2, np.float32)
    m = min(y.size, padded.size - half)
    padded[half:half + m] = y[:m]
    db = energy_db(x, rate)
    active = (db > FLOOR_DB) & (db > db.max() - RANGE_DB)
    period = np.empty(n, np.float64)
    aper = np.empty(n, np.float64)
    _yin(padded, active, hop, win, tau_min, tau_max, YIN_THRESHOLD, np.empty(tau_max + 2), np.empty(tau_max + 2),
         period, aper)
    f0 = PITCH_RATE / np.maximum(period, 1.0)
    voiced = active & (aper < VOICING_THRESHOLD) & (f0 >= fmin) & (f0 <= fmax)
    return Pitch(np.where(voiced, f0, np.nan).astype(np.float32), voiced, aper.astype(np.float32))


@dataclass(frozen=True, slots=True)
class ProsodyFeatures:
    """One clip's prosody (NaN pitch fields and loudness when nothing is voiced)."""

    f0_median_hz: float
    f0_range_st: float
    loudness_db: float
    voiced_fraction: float
    onset_rate: float


def prosody_features(audio: np.ndarray, rate: int) -> ProsodyFeatures:
    """Pitch level and range, voiced loudness, voicing and voiced onsets per second of ``audio``."""
    p = pitch(audio, rate)
    db = energy_db(audio, rate)
    v = p.voiced
    if not v.any():
        return ProsodyFeatures(math.nan, math.nan, math.nan, 0.0, 0.0)
    st = 12.0 * np.log2(p.f0[v].astype(np.float64))
    lo, hi = np.percentile(st, [10.0, 90.0])
    runs, start, onsets = np.flatnonzero(v), -1, 0
    for i in range(v.size):                       # voiced runs of at least MIN_RUN frames
        if v[i] and start < 0:
            start = i
        if start >= 0 and (not v[i] or i == v.size - 1):
            end = i + 1 if v[i] else i
            onsets += end - start >= MIN_RUN
            start = -1
    span_s = max((runs[-1] - runs[0] + 1) * HOP_S, 0.1)
    return ProsodyFeatures(float(2.0 ** (np.median(st) / 12.0)), float(hi - lo), float(db[v].mean()),
                           float(v.mean()), onsets / span_s)


TYPICAL = ProsodyFeatures(f0_median_hz=165.0, f0_range_st=6.0, loudness_db=-26.0, voiced_fraction=0.5,
                          onset_rate=4.0)
"""Reference values without a baseline: an adult voice between typical male and female pitch."""


class ProsodyBaseline:
    """A speaker's reference prosody: the running mean of pitch (in semitones), range and loudness of the
    clips :meth:`add`-ed (those with voiced frames); :data:`TYPICAL` until one is added."""

    def __init__(self) -> None:
        self.count = 0
        self._sums = np.zeros(3, np.float64)

    def add(self, features: ProsodyFeatures) -> None:
        if math.isnan(features.f0_median_hz):
            return
        self.count += 1
        self._sums += (12.0 * math.log2(features.f0_median_hz), features.f0_range_st, features.loudness_db)

    def reference(self) -> ProsodyFeatures:
        """The mean of the added clips (voicing and rate from :data:`TYPICAL`)."""
        if self.count == 0:
            return TYPICAL
        st, rng, db = self._sums / self.count
        return ProsodyFeatures(float(2.0 ** (st / 12.0)), float(rng), float(db), TYPICAL.voiced_fraction,
                               TYPICAL.onset_rate)


PITCH_ST_SCALE = 3.0
RANGE_ST_SCALE = 4.0
LOUDNESS_DB_SCALE = 6.0


def arousal_from(features: ProsodyFeatures, reference: ProsodyFeatures) -> float:
    """tanh of the summed scaled differences: pitch in semitones / 3, range / 4 semitones, loudness / 6 dB,
    over 3 (each cue saturates at about a few steps of its scale); 0.0 when nothing is voiced."""
    if math.isnan(features.f0_median_hz):
        return 0.0
    d_pitch = 12.0 * math.log2(features.f0_median_hz / reference.f0_median_hz)
    d_range = features.f0_range_st - reference.f0_range_st
    d_loud = features.loudness_db - reference.loudness_db
    score = d_pitch / PITCH_ST_SCALE + d_range / RANGE_ST_SCALE + d_loud / LOUDNESS_DB_SCALE
    return float(np.clip(math.tanh(score / 3.0), -1.0, 1.0))


def prosodic_arousal(audio: np.ndarray, rate: int, baseline: ProsodyBaseline | None = None) -> float:
    """Arousal in [-1, 1] of ``audio`` from its prosody, relative to ``baseline`` (else :data:`TYPICAL`)."""
    if baseline is not None and not isinstance(baseline, ProsodyBaseline):
        raise ParamError(f"baseline is a {type(baseline).__name__}; allowed: a ProsodyBaseline or None")
    ref = baseline.reference() if baseline is not None else TYPICAL
    return arousal_from(prosody_features(audio, rate), ref)
