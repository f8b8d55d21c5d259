"""Kaldi-style log mel filterbank features (``torchaudio.compliance.kaldi.fbank`` defaults).

25 ms frames every 10 ms, only frames that lie wholly inside the signal (``snip_edges``), no
dither, each frame's mean removed, pre-emphasis 0.97 (the first sample pre-emphasised with
itself), Povey window, zero-padded to the next power of two (512 at 16 kHz), power spectrum, HTK
mel banks from 20 Hz to Nyquist, natural log of max(energy, float32 eps).

Scale: the input is used as given. Kaldi and the models trained on its features (HuBERT-family
and AVSR front ends, WeNet, ESPnet) feed int16-range values (float samples * 32768); features of
[-1, 1] audio are the same minus 2 ln 32768 in every bin (up to the eps floor).
"""

from __future__ import annotations

import numpy as np

from kikimimi.models.frontend.spec import as_signal, kaldi_frontend
from kikimimi.models.frontend.stream import FeatureStream

DEFAULT_RING_FRAMES = 3000  # 30 s at 16 kHz


def kaldi_n_frames(n_samples: int, win: int = 400, hop: int = 160) -> int:
    """Frames of a signal of ``n_samples`` with snip_edges: 1 + (n - win) // hop, or 0 if n < win."""
    return 0 if n_samples < win else 1 + (n_samples - win) // hop


def kaldi_fbank(audio: np.ndarray, n_mels: int = 80, sample_rate: int = 16000) -> np.ndarray:
    """Kaldi fbank of mono float ``audio``: shape (n_frames, n_mels) float32, frame t = samples [t hop, t hop + win)."""
    x = as_signal(audio)
    fe = kaldi_frontend(n_mels, sample_rate)
    n = kaldi_n_frames(x.shape[0], fe.win, fe.hop)
    out = np.empty((n, fe.n_bins), np.float32)
    fe.run(x, 0, n, out, fe.scratch())
    return out


class KaldiFbankStream(FeatureStream):
    """Streaming :func:`kaldi_fbank`: frame t is produced as soon as sample t hop + win - 1 arrives, bit
    for bit equal to the whole-signal frame. ``flush`` adds no frames (edges are snipped); it ends the
    utterance so that the next sample starts a new one."""

    def __init__(self, n_mels: int = 80, sample_rate: int = 16000,
                 ring_frames: int = DEFAULT_RING_FRAMES) -> None:
        super().__init__(kaldi_frontend(n_mels, sample_rate), ring_frames)

    def _ready(self, avail: int) -> int:
        return kaldi_n_frames(avail, self.frontend.win, self.frontend.hop)

    def _final(self, n: int) -> int:
        return self._ready(n)

    def _compute(self, t0: int, t1: int, avail: int, final: bool, out: np.ndarray) -> None:
        fe = self.frontend
        fe.run(self._segment(fe.hop * t0, fe.hop * (t1 - 1) + fe.win), 0, t1 - t0, out, self._scratch)
