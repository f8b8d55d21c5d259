"""The numba kernel of the feature front ends: framed STFT -> power spectrum -> sparse mel -> log.

The kernel has an explicit signature, compiles in nopython mode with ``cache=True`` (the first
import compiles and stores the machine code next to this file; later imports load it) and writes
into caller-provided arrays. The FFT is DUCC0's, called from inside the kernel through rocket-fft's
``r2c``, on blocks of frames. Each frame's result depends only on its own samples: the same frame
gives bit-identical features whether it is computed alone, in a block of its neighbours, or at any
position of a block, which is what lets streaming reproduce the whole-signal features exactly.

Use the validating wrapper :func:`mel_frames`; :func:`mel_frames_kernel` trusts its arguments except
for the bounds it checks itself (the front ends call it directly with arrays they built).
"""

from __future__ import annotations

import numpy as np
from numba import boolean, complex64, float32, int64, jit, void
from rocket_fft import r2c

from kikimimi.engine.errors import ParamError

_F32_2D = float32[:, ::1]

_SIG = void(float32[::1], int64, int64, int64, float32[::1], boolean, float32, int64[::1], int64[::1],
            int64[::1], float32[::1], float32, boolean, _F32_2D, complex64[:, ::1], float32[::1], _F32_2D)


@jit(_SIG, nopython=True, cache=True)
def mel_frames_kernel(src, offset, hop, n_frames, window, dc_preemph, preemph, lo, hi, woff, weights,
                      floor, use_log10, fbuf, sbuf, power, out):  # pragma: no cover - compiled
    """Frame ``j`` (0 <= j < n_frames) = ``src[offset + j*hop : + len(window)]``; its features go to ``out[j]``.

    Per frame: optionally remove the DC offset and pre-emphasise (Kaldi: x[0] is pre-emphasised
    with itself), multiply by ``window``, zero-pad to ``fbuf.shape[1]`` (the FFT size), real FFT,
    power |X|^2, mel energies over each filter's span, then log10 or ln of max(energy, floor).
    ``fbuf`` (block, n_fft), ``sbuf`` (block, n_fft//2+1) and ``power`` (n_fft//2+1) are scratch;
    frames are transformed ``block`` at a time. Columns win..n_fft of ``fbuf`` must be zero.
    """
    win = window.shape[0]
    block = fbuf.shape[0]
    n_freq = sbuf.shape[1]
    n_mels = lo.shape[0]
    if n_frames <= 0:
        return
    if offset < 0 or offset + hop * (n_frames - 1) + win > src.shape[0]:
        raise ValueError("mel_frames_kernel: frames reach outside src")
    if out.shape[0] < n_frames or out.shape[1] != n_mels or power.shape[0] != n_freq:
        raise ValueError("mel_frames_kernel: out or power has the wrong shape")
    axes = np.ones(1, dtype=np.int64)
    one = np.float32(1.0)
    for b0 in range(0, n_frames, block):
        nb = min(block, n_frames - b0)
        for j in range(nb):
            s = offset + (b0 + j) * hop
            row = fbuf[j]
            if dc_preemph:
                acc = 0.0
                for i in range(win):
                    acc += src[s + i]
                mean = np.float32(acc / win)
                prev = src[s] - mean
                row[0] = (prev - preemph * prev) * window[0]
                for i in range(1, win):
                    cur = src[s + i] - mean
                    row[i] = (cur - preemph * prev) * window[i]
                    prev = cur
            else:
                for i in range(win):
                    row[i] = src[s + i] * window[i]
        r2c(fbuf[:nb], sbuf[:nb], axes, True, one, 1)
        for j in range(nb):
            spec = sbuf[j]
            for k in range(n_freq):
                c = spec[k]
                power[k] = c.real * c.real + c.imag * c.imag
            o = out[b0 + j]
            for m in range(n_mels):
                e = np.float32(0.0)
                base = woff[m] - lo[m]
                for k in range(lo[m], hi[m]):
                    e += weights[base + k] * power[k]
                if e < floor:
                    e = floor
                o[m] = np.log10(e) if use_log10 else np.log(e)


def _check_array(name: str, a: object, dtype: type, ndim: int) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.dtype != np.dtype(dtype) or a.ndim != ndim or not a.flags.c_contiguous:
        got = f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}"
        raise ParamError(f"{name} must be a C-contiguous {np.dtype(dtype)} array with {ndim} dimension(s), got {got}")
    return a


def mel_frames(src: np.ndarray, offset: int, hop: int, n_frames: int, window: np.ndarray, dc_preemph: bool,
               preemph: float, lo: np.ndarray, hi: np.ndarray, woff: np.ndarray, weights: np.ndarray,
               floor: float, use_log10: bool, fbuf: np.ndarray, sbuf: np.ndarray, power: np.ndarray,
               out: np.ndarray) -> None:
    """Validate the arguments, then run :func:`mel_frames_kernel` (see there for what it computes)."""
    _check_array("src", src, np.float32, 1)
    _check_array("window", window, np.float32, 1)
    for name, a in (("lo", lo), ("hi", hi), ("woff", woff)):
        _check_array(name, a, np.int64, 1)
    _check_array("weights", weights, np.float32, 1)
    _check_array("fbuf", fbuf, np.float32, 2)
    _check_array("sbuf", sbuf, np.complex64, 2)
    _check_array("power", power, np.float32, 1)
    _check_array("out", out, np.float32, 2)
    win, n_fft = window.shape[0], fbuf.shape[1]
    if hop <= 0 or n_frames < 0 or offset < 0:
        raise ParamError(f"hop={hop}, n_frames={n_frames}, offset={offset}: need hop > 0, n_frames >= 0, offset >= 0")
    if n_frames and offset + hop * (n_frames - 1) + win > src.shape[0]:
        raise ParamError(f"{n_frames} frames of {win} samples every {hop} from offset {offset} need "
                         f"{offset + hop * (n_frames - 1) + win} samples; src has {src.shape[0]}")
    if not 0 < win <= n_fft or sbuf.shape != (fbuf.shape[0], n_fft // 2 + 1) or power.shape[0] != n_fft // 2 + 1:
        raise ParamError(f"scratch shapes fbuf {fbuf.shape}, sbuf {sbuf.shape}, power {power.shape} do not fit a "
                         f"window of {win} and an FFT of {n_fft}")
    if np.any(fbuf[:, win:]):
        raise ParamError(f"fbuf columns {win}..{n_fft} (the FFT's zero padding) must be zero")
    n_mels = lo.shape[0]
    if hi.shape[0] != n_mels or woff.shape[0] != n_mels or out.shape[0] < n_frames or out.shape[1] != n_mels:
        raise ParamError(f"filterbank of {n_mels} filters does not fit out {out.shape} for {n_frames} frames")
    if n_mels and (lo.min() < 0 or hi.max() > n_fft // 2 + 1 or np.any(hi < lo)
                   or (woff + hi - lo).max() > weights.shape[0]):
        raise ParamError("filter spans must lie within the spectrum and the weights array")
    mel_frames_kernel(src, offset, hop, n_frames, window, dc_preemph, preemph, lo, hi, woff, weights,
                      floor, use_log10, fbuf, sbuf, power, out)
