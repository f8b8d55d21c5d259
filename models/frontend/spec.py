"""What a feature front end computes (framing, window, filterbank, log) and the scratch it runs in.

A :class:`FrontEnd` is an immutable description shared by the whole-signal functions and the
streams; :meth:`FrontEnd.run` computes consecutive frames of a float32 signal with the numba kernel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from kikimimi.engine.errors import ParamError
from kikimimi.models.frontend import kernels
from kikimimi.models.frontend.mel import SparseBank, kaldi_mel_banks, whisper_mel_filters

WHISPER_KIND = "whisper_log10_mel"
KALDI_KIND = "kaldi_fbank"
WHISPER_SAMPLE_RATE = 16000
WHISPER_N_FFT = 400
WHISPER_HOP = 160
KALDI_SAMPLE_RATES = (8000, 48000)  # inclusive range allowed for Kaldi fbank
KALDI_PREEMPHASIS = 0.97
FLOAT32_EPS = float(np.finfo(np.float32).eps)
BLOCK = 32  # frames per FFT call: 32 x 512 float32 + 32 x 257 complex64 stay in L2


@dataclass(frozen=True, slots=True, eq=False)
class Scratch:
    """Work arrays of one kernel user: frames (block, n_fft), spectra (block, n_fft//2+1), one power row."""

    fbuf: np.ndarray
    sbuf: np.ndarray
    power: np.ndarray


@dataclass(frozen=True, slots=True, eq=False)
class FrontEnd:
    """A log-mel front end: frames of ``win`` samples every ``hop``, ``window``, FFT of ``n_fft``,
    power spectrum, ``bank``, then log10 (Whisper) or ln (Kaldi) of max(energy, ``floor``).

    ``dc_preemph``: remove each frame's mean and pre-emphasise with ``preemph`` before windowing (Kaldi).
    """

    kind: str
    sample_rate: int
    hop: int
    win: int
    n_fft: int
    window: np.ndarray
    dc_preemph: bool
    preemph: float
    floor: float
    use_log10: bool
    bank: SparseBank
    _consts: tuple = field(init=False, repr=False)  # the kernel's constant arguments, in its order

    def __post_init__(self) -> None:
        b = self.bank
        object.__setattr__(self, "_consts", (self.window, self.dc_preemph, self.preemph, b.lo, b.hi, b.offset,
                                             b.weights, self.floor, self.use_log10))

    @property
    def n_bins(self) -> int:
        return self.bank.n_mels

    def scratch(self, block: int = BLOCK) -> Scratch:
        """Fresh work arrays for :meth:`run` (the FFT's zero padding columns start, and stay, zero)."""
        return Scratch(np.zeros((block, self.n_fft), np.float32),
                       np.zeros((block, self.n_fft // 2 + 1), np.complex64),
                       np.zeros(self.n_fft // 2 + 1, np.float32))

    def run(self, src: np.ndarray, offset: int, n_frames: int, out: np.ndarray, scratch: Scratch) -> None:
        """Frames ``src[offset + j*hop : + win]`` for j < n_frames into ``out[:n_frames]``.

        ``src`` must be a C-contiguous float32 1-D array and ``out`` a C-contiguous float32
        (>= n_frames, n_bins) array; the kernel checks that the frames lie inside ``src``.
        """
        kernels.mel_frames_kernel(src, offset, self.hop, n_frames, *self._consts, scratch.fbuf, scratch.sbuf,
                                  scratch.power, out)


def povey_window(n: int) -> np.ndarray:
    """Kaldi's Povey window: a symmetric Hann window raised to the power 0.85, float32."""
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n, dtype=np.float64) / (n - 1))
    return (hann ** 0.85).astype(np.float32)


@functools.cache
def whisper_frontend(n_mels: int = 80) -> FrontEnd:
    """Whisper's front end: 16 kHz, periodic Hann 400, hop 160, Slaney mel, log10 of max(e, 1e-10)."""
    window = np.hanning(WHISPER_N_FFT + 1)[:-1].astype(np.float32)
    bank = SparseBank.from_dense(whisper_mel_filters(n_mels, WHISPER_SAMPLE_RATE, WHISPER_N_FFT))
    return FrontEnd(WHISPER_KIND, WHISPER_SAMPLE_RATE, WHISPER_HOP, WHISPER_N_FFT, WHISPER_N_FFT, window,
                    False, 0.0, 1e-10, True, bank)


@functools.cache
def kaldi_frontend(n_mels: int = 80, sample_rate: int = 16000) -> FrontEnd:
    """Kaldi fbank defaults: 25 ms Povey window every 10 ms, DC removal, pre-emphasis 0.97, FFT of the
    next power of two, power spectrum, HTK mel banks 20 Hz..Nyquist, ln of max(e, float32 eps)."""
    lo_sr, hi_sr = KALDI_SAMPLE_RATES
    if (not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool)
            or not lo_sr <= sample_rate <= hi_sr):
        raise ParamError(f"Kaldi fbank sample_rate={sample_rate!r} is not allowed; allowed: an int from "
                         f"{lo_sr} to {hi_sr} Hz")
    win = int(sample_rate * 25.0 * 0.001)   # torchaudio's arithmetic, for identical frame sizes
    hop = int(sample_rate * 10.0 * 0.001)
    n_fft = 1 << (win - 1).bit_length()
    bank = SparseBank.from_dense(kaldi_mel_banks(n_mels, n_fft, sample_rate))
    return FrontEnd(KALDI_KIND, int(sample_rate), hop, win, n_fft, povey_window(win), True, KALDI_PREEMPHASIS,
                    FLOAT32_EPS, False, bank)


def as_signal(audio: object, what: str = "audio") -> np.ndarray:
    """``audio`` as a C-contiguous float32 1-D array: float32 or float64, shape (n,) or (n, 1).

    Integer samples are refused: their scale is a choice (Whisper wants [-1, 1], Kaldi-style
    models often int16-range values), so the caller converts them.
    """
    if not isinstance(audio, np.ndarray):
        raise ParamError(f"{what} must be a numpy array, got {type(audio).__name__}")
    a = audio
    if a.ndim == 2 and a.shape[1] == 1:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise ParamError(f"{what} must be mono, shape (n,) or (n, 1); got shape {audio.shape}")
    if a.dtype != np.float32:
        if a.dtype != np.float64:
            raise ParamError(f"{what} dtype {a.dtype} is not allowed; allowed: float32, float64 (convert integer "
                             "samples yourself: / 32768 for [-1, 1], or as-is for int16-range values)")
        a = a.astype(np.float32)
    return np.ascontiguousarray(a)
