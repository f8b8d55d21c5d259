"""Whisper's log-mel spectrogram, whole-signal and streaming, frame for frame like faster-whisper.

faster-whisper's ``FeatureExtractor`` appends 160 zeros, takes an STFT with ``center=True``
(200 samples of reflect padding on each side), a periodic Hann window of 400 and hop 160, drops
the last STFT frame, and maps the power spectrum through Slaney mel filters to log10(max(e, 1e-10)).
Frame ``t`` is therefore centred on sample ``160 t`` and a signal of ``n`` samples has
``n // 160 + 1`` frames. In terms of the signal ``x``, frame ``t`` reads ``e[160 t - 200, 160 t + 200)``
where ``e[i] = x[i]`` inside the signal, ``e[i] = 0`` past its end (for every frame that is kept the
right-hand reflection only ever reaches the appended zeros) and ``e[-j] = x[j]`` (or 0 where ``j``
is past the end) on the left. Signals shorter than 41 samples, where numpy would reflect more than
once, are padded literally as faster-whisper does.

:func:`whisper_normalize` is Whisper's per-window step (clamp to 8 below the maximum, then
(x + 4) / 4); the recognizer applies it to the window it decodes, so the streams emit un-normalized
log10 mel.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kikimimi.engine.errors import ParamError
from kikimimi.models.frontend.spec import WHISPER_HOP, FrontEnd, Scratch, as_signal, whisper_frontend
from kikimimi.models.frontend.stream import FeatureStream

HALF = 200          # n_fft // 2: the centring offset
HEAD = 2            # frames 0 and 1 reach left of the signal's start
MIN_REFLECT = 41    # shorter signals (with their 160 appended zeros) are reflected more than once
EDGE = 1024         # edge-buffer length: >= the span of two frames (560)
DEFAULT_RING_FRAMES = 3000  # 30 s

Getter = Callable[[int, int], np.ndarray]


def whisper_n_frames(n_samples: int) -> int:
    """Frames faster-whisper yields for ``n_samples`` samples: n // 160 + 1."""
    return n_samples // WHISPER_HOP + 1


def _ready(avail: int) -> int:
    """Frames computable from the first ``avail`` samples before the end is known: frame t needs
    samples up to 160 t + 200 (frame 0 also needs sample 200, its left reflection)."""
    if avail <= HALF:
        return 0
    return (avail - HALF) // WHISPER_HOP + 1


def _edge_src(get: Getter, s0: int, s1: int, n: int, edge: np.ndarray) -> np.ndarray:
    """``e[s0, s1)`` (see the module docstring) built in ``edge``, for a signal of which samples [0, n) exist."""
    buf = edge[:s1 - s0]
    buf[:] = 0.0
    if s0 < 0:                      # left reflection: e[-j] = x[j], j in [j_lo, j_hi]
        j_lo = 1 - min(s1, 0)
        j_hi = min(-s0, n - 1)
        if j_hi >= j_lo:
            buf[-j_hi - s0:-j_lo - s0 + 1] = get(j_lo, j_hi + 1)[::-1]
    p0, p1 = max(s0, 0), min(s1, n)
    if p0 < p1:
        buf[p0 - s0:p1 - s0] = get(p0, p1)
    return buf


def compute_frames(fe: FrontEnd, get: Getter, n: int, final: bool, t0: int, t1: int, out: np.ndarray,
                   scratch: Scratch, edge: np.ndarray) -> None:
    """Frames [t0, t1) of a signal into ``out[:t1 - t0]``; ``get(a, b)`` gives samples [a, b) of it.

    ``n``: samples that exist; ``final``: the signal ends there (frames may reach past it). Frames
    that reach outside [0, n) are computed from a small padded copy in ``edge``; the others straight
    from ``get``'s (zero-copy) view.
    """
    hop = WHISPER_HOP
    if final and n < MIN_REFLECT:
        padded = np.zeros(n + hop, np.float32)
        padded[:n] = get(0, n)
        fe.run(np.pad(padded, HALF, mode="reflect"), hop * t0, t1 - t0, out, scratch)
        return
    body_end = (n - HALF) // hop + 1 if n >= HALF else 0    # frames lying inside [0, n)
    head_end = min(t1, HEAD)
    if t0 < head_end:
        fe.run(_edge_src(get, hop * t0 - HALF, hop * (head_end - 1) + HALF, n, edge), 0, head_end - t0,
               out, scratch)
    b0 = max(t0, HEAD)
    b1 = min(t1, body_end)
    if b0 < b1:
        fe.run(get(hop * b0 - HALF, hop * (b1 - 1) + HALF), 0, b1 - b0, out[b0 - t0:], scratch)
    tail = max(t0, head_end, b1)
    if tail < t1:
        fe.run(_edge_src(get, hop * tail - HALF, hop * (t1 - 1) + HALF, n, edge), 0, t1 - tail,
               out[tail - t0:], scratch)


def whisper_log10_mel(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """log10 mel spectrogram of 16 kHz mono ``audio`` (float, [-1, 1]) as faster-whisper computes it
    before normalization: shape (len(audio) // 160 + 1, n_mels) float32, frame t centred on sample 160 t."""
    x = as_signal(audio)
    fe = whisper_frontend(n_mels)
    n = x.shape[0]
    t1 = whisper_n_frames(n)
    out = np.empty((t1, fe.n_bins), np.float32)
    compute_frames(fe, lambda a, b: x[a:b], n, True, 0, t1, out, fe.scratch(), np.zeros(EDGE, np.float32))
    return out


def whisper_normalize(log10_mel: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Whisper's normalization of one decode window: max(x, x.max() - 8), then (x + 4) / 4.

    ``log10_mel``: (n_frames, n_mels) float32. Writes into ``out`` (may be ``log10_mel`` itself for
    in-place) or a new array; returns it.
    """
    if not isinstance(log10_mel, np.ndarray) or log10_mel.dtype != np.float32 or log10_mel.ndim != 2:
        raise ParamError("log10_mel must be a float32 array of shape (n_frames, n_mels), got "
                         f"{getattr(log10_mel, 'dtype', type(log10_mel).__name__)} {getattr(log10_mel, 'shape', '')}")
    if out is None:
        out = np.empty_like(log10_mel)
    elif not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != log10_mel.shape:
        raise ParamError(f"out must be a float32 array of shape {log10_mel.shape}, got "
                         f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
    if log10_mel.size:
        low = log10_mel.max() - np.float32(8.0)
        np.maximum(log10_mel, low, out=out)
        out += np.float32(4.0)
        out /= np.float32(4.0)
    return out


class WhisperMelStream(FeatureStream):
    """Streaming :func:`whisper_log10_mel`: the same frames, bit for bit, for audio fed in any chunks.

    ``accept`` returns the frames whose 400-sample window is complete (frame t needs samples up to
    160 t + 200); ``flush`` ends the utterance and returns its last frames, padded exactly as the
    whole-signal function pads the end (an utterance with no samples yields no frames). Frames land
    in :attr:`features`, a ring of ``ring_frames`` frames addressed by frame index.
    """

    def __init__(self, n_mels: int = 80, ring_frames: int = DEFAULT_RING_FRAMES) -> None:
        self._edge = np.zeros(EDGE, np.float32)
        super().__init__(whisper_frontend(n_mels), ring_frames)

    def _ready(self, avail: int) -> int:
        return _ready(avail)

    def _final(self, n: int) -> int:
        return whisper_n_frames(n) if n else 0

    def _compute(self, t0: int, t1: int, avail: int, final: bool, out: np.ndarray) -> None:
        if t0 >= HEAD and not final:    # the usual case: frames inside the audio so far, straight from the ring
            self.frontend.run(self._segment(WHISPER_HOP * t0 - HALF, WHISPER_HOP * (t1 - 1) + HALF), 0, t1 - t0,
                              out, self._scratch)
            return
        compute_frames(self.frontend, self._segment, avail, final, t0, t1, out, self._scratch, self._edge)
