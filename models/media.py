"""Whole-file audio of video containers through PyAV, mixed to mono the way ``file_source`` does it.

``file_source`` resamples with the file's own channel layout and averages the channels ((L + R) / 2).
PyAV's own ``layout="mono"`` downmix follows FFmpeg's pan law instead ((L + R) * 0.707), 3 dB louder
for stereo, so features computed offline (training, enrollment, tests) would not equal those the graph
computes. :func:`read_container_audio` averages like the graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kikimimi.engine.errors import KikimimiError


def read_container_audio(path: str | Path, rate: int = 16000) -> np.ndarray:
    """The first audio track of ``path``, resampled to ``rate``, channels averaged: float32 (n,) in [-1, 1].

    A file without an audio track gives an empty array. :class:`KikimimiError` when PyAV is missing (with the
    install command) or FFmpeg cannot decode the file.
    """
    try:
        import av
    except ImportError as exc:
        raise KikimimiError(f"cannot read {path}: video containers need PyAV; install it with: "
                            "pip install 'kikimimi[av]'") from exc
    parts: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return np.zeros(0, np.float32)
            channels = len(container.streams.audio[0].layout.channels) or 1
            resampler = av.AudioResampler(format="flt", layout=None, rate=rate)
            for frame in container.decode(audio=0):
                parts += [f.to_ndarray().reshape(-1, channels) for f in resampler.resample(frame)]
            parts += [f.to_ndarray().reshape(-1, channels) for f in resampler.resample(None)]
    except av.error.FFmpegError as exc:
        raise KikimimiError(f"cannot read audio from {path}: {exc}") from exc
    if not parts:
        return np.zeros(0, np.float32)
    x = np.concatenate(parts)
    return np.ascontiguousarray(x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0], np.float32)
