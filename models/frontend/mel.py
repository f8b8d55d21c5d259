"""Mel filterbanks in numpy: Whisper's (Slaney-style, librosa's defaults) and Kaldi's (HTK mel).

Both are dense ``(n_mels, n_fft // 2 + 1)`` float32 matrices that map a power spectrum to mel
energies. :class:`SparseBank` keeps only each filter's non-zero span (a triangle touches a few FFT
bins), which is what the kernels use.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from kikimimi.engine.errors import ParamError

WHISPER_N_MELS = (40, 80, 128)   # 40: the GE2E speaker encoder's input (as mel power)
KALDI_MAX_MELS = 256   # the upper bound of the type check; the real limit is kaldi_max_mels(...) (126 at 16 kHz)

# Slaney's mel scale (librosa's htk=False): linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def slaney_hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Frequencies in Hz to Slaney mels (float64)."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = hz >= _MIN_LOG_HZ
    return np.where(log_part, _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Slaney mels to frequencies in Hz (float64); inverse of :func:`slaney_hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * _F_SP
    return np.where(mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), hz)


def whisper_mel_filters(n_mels: int, sample_rate: int = 16000, n_fft: int = 400) -> np.ndarray:
    """Whisper's mel filterbank, shape (n_mels, n_fft // 2 + 1) float32.

    Triangles evenly spaced on the Slaney mel scale from 0 Hz to Nyquist, each scaled by
    2 / (its bandwidth in Hz) so that every filter has about the same area ("slaney" norm). This is
    what ``librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels)`` returns and what Whisper ships.
    """
    if n_mels not in WHISPER_N_MELS:
        raise ParamError(f"Whisper n_mels={n_mels!r} is not allowed; allowed: {', '.join(map(str, WHISPER_N_MELS))}")
    fft_hz = np.arange(n_fft // 2 + 1, dtype=np.float64) * (sample_rate / n_fft)
    edges_mel = np.linspace(slaney_hz_to_mel(0.0), slaney_hz_to_mel(sample_rate / 2.0), n_mels + 2)
    edges_hz = slaney_mel_to_hz(edges_mel)
    left, centre, right = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (fft_hz[None, :] - left) / (centre - left)
    falling = (right - fft_hz[None, :]) / (right - centre)
    tri = np.maximum(0.0, np.minimum(rising, falling))
    area_norm = 2.0 / (right - left)
    return (tri * area_norm).astype(np.float32)


def kaldi_mel_scale(hz: np.ndarray | float) -> np.ndarray:
    """Kaldi's (HTK) mel scale: 1127 ln(1 + f / 700), float64."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def kaldi_mel_banks(n_mels: int, n_fft: int = 512, sample_rate: int = 16000, low_freq: float = 20.0,
                    high_freq: float = 0.0) -> np.ndarray:
    """Kaldi's triangular mel banks, shape (n_mels, n_fft // 2 + 1) float32 (last column, Nyquist, is 0).

    As in Kaldi's ``MelBanks`` and torchaudio's ``get_mel_banks`` without VTLN warping: bins are
    evenly spaced on the HTK mel scale between ``low_freq`` and ``high_freq`` (<= 0 means Nyquist
    plus that offset), triangles with unit peak, evaluated at the FFT bin frequencies k * sr / n_fft
    for k < n_fft / 2.
    """
    if not isinstance(n_mels, (int, np.integer)) or isinstance(n_mels, bool) or not 1 <= n_mels <= KALDI_MAX_MELS:
        raise ParamError(f"Kaldi n_mels={n_mels!r} is not allowed; allowed: an int from 1 to {KALDI_MAX_MELS}")
    nyquist = 0.5 * sample_rate
    high = high_freq + nyquist if high_freq <= 0.0 else high_freq
    if not 0.0 <= low_freq < high <= nyquist:
        raise ParamError(f"Kaldi mel range low_freq={low_freq}, high_freq={high_freq} is not allowed; "
                         f"need 0 <= low < high <= {nyquist} (high <= 0 counts back from Nyquist)")
    mel_low, mel_high = kaldi_mel_scale(low_freq), kaldi_mel_scale(high)
    delta = (mel_high - mel_low) / (n_mels + 1)
    b = np.arange(n_mels, dtype=np.float64)[:, None]
    left, centre, right = mel_low + b * delta, mel_low + (b + 1.0) * delta, mel_low + (b + 2.0) * delta
    mel = kaldi_mel_scale(np.arange(n_fft // 2, dtype=np.float64) * (sample_rate / n_fft))[None, :]
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    banks = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float64)
    banks[:, :-1] = np.maximum(0.0, np.minimum(up, down))
    empty = np.flatnonzero(banks.sum(axis=1) == 0.0)
    if empty.size:   # Kaldi's MelBanks refuses this too: such a bin would be a constant log(eps)
        limit = kaldi_max_mels(n_fft, sample_rate, low_freq, high_freq)
        raise ParamError(f"Kaldi n_mels={n_mels} is not allowed at {sample_rate} Hz with a {n_fft}-point FFT "
                         f"between {low_freq:g} and {high:g} Hz: mel bin {int(empty[0])} would hold no FFT bin; "
                         f"allowed: 1 to {limit}")
    return banks.astype(np.float32)


@functools.lru_cache(maxsize=16)
def kaldi_max_mels(n_fft: int = 512, sample_rate: int = 16000, low_freq: float = 20.0,
                   high_freq: float = 0.0) -> int:
    """The most Kaldi mel bins for these settings such that every bin covers at least one FFT bin
    (126 at 16 kHz, 512-point FFT, 20 Hz to Nyquist)."""
    nyquist = 0.5 * sample_rate
    high = high_freq + nyquist if high_freq <= 0.0 else high_freq
    mel = kaldi_mel_scale(np.arange(n_fft // 2, dtype=np.float64) * (sample_rate / n_fft))
    mel_low, mel_high = kaldi_mel_scale(low_freq), kaldi_mel_scale(high)
    best = 0
    for n in range(1, KALDI_MAX_MELS + 1):
        delta = (mel_high - mel_low) / (n + 1)
        b = np.arange(n, dtype=np.float64)[:, None]
        left, right = mel_low + b * delta, mel_low + (b + 2.0) * delta
        if not ((mel[None, :] > left) & (mel[None, :] < right)).any(axis=1).all():
            break
        best = n
    return best


@dataclass(frozen=True, slots=True, eq=False)
class SparseBank:
    """A filterbank stored by each filter's non-zero span.

    Filter ``m`` covers FFT bins ``[lo[m], hi[m])`` with weights ``weights[offset[m]:offset[m] + hi[m] - lo[m]]``
    (an all-zero filter has lo == hi). ``n_freqs`` is the spectrum length it applies to.
    """

    lo: np.ndarray       # int64 (n_mels,)
    hi: np.ndarray       # int64 (n_mels,)
    offset: np.ndarray   # int64 (n_mels,)
    weights: np.ndarray  # float32, concatenated spans
    n_freqs: int

    @property
    def n_mels(self) -> int:
        return int(self.lo.shape[0])

    @classmethod
    def from_dense(cls, dense: np.ndarray) -> SparseBank:
        """Spans from the first to the last non-zero weight of each row of ``dense`` (n_mels, n_freqs)."""
        if not isinstance(dense, np.ndarray) or dense.ndim != 2:
            got = getattr(dense, "shape", dense)
            raise ParamError(f"a filterbank must be a 2-D array (n_mels, n_freqs), got {got!r}")
        dense = dense.astype(np.float32)
        n_mels = dense.shape[0]
        lo = np.zeros(n_mels, np.int64)
        hi = np.zeros(n_mels, np.int64)
        offset = np.zeros(n_mels, np.int64)
        parts: list[np.ndarray] = []
        pos = 0
        for m in range(n_mels):
            nz = np.flatnonzero(dense[m])
            if nz.size:
                lo[m], hi[m] = nz[0], nz[-1] + 1
                parts.append(dense[m, lo[m]:hi[m]])
            offset[m] = pos
            pos += int(hi[m] - lo[m])
        weights = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return cls(lo, hi, offset, np.ascontiguousarray(weights, dtype=np.float32), int(dense.shape[1]))

    def to_dense(self) -> np.ndarray:
        """The dense (n_mels, n_freqs) float32 matrix again."""
        out = np.zeros((self.n_mels, self.n_freqs), np.float32)
        for m in range(self.n_mels):
            n = int(self.hi[m] - self.lo[m])
            out[m, self.lo[m]:self.hi[m]] = self.weights[self.offset[m]:self.offset[m] + n]
        return out
