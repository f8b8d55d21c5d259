"""Sliding windows over speech and their embeddings: the same arithmetic offline and streaming.

Within an utterance ``[start, end)`` (samples of the stream), windows of ``window`` samples start at
``start``, ``start + hop``, ... as long as they fit; when the utterance ends, one more window aligned
to its end is added if the last one ends more than ``hop / 2`` before it, and an utterance shorter
than a window gets one window of its whole span if that is at least ``min_window`` long
(:func:`window_spans`). Each window is embedded on its own: its audio is scaled up to
``TARGET_DBFS`` if it is quieter (never down, as resemblyzer's preprocessing does), then turned into
the encoder's input (40-channel mel power from the numba front end, or the audio itself). So a
window's embedding depends only on its own samples, and streaming gives exactly the offline result.
An utterance's embedding is the L2-normalised mean of its windows' embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kikimimi.engine.errors import ParamError
from kikimimi.models.frontend import whisper_log10_mel
from kikimimi.models.speaker.encoder import HOP, MEL40, SpeakerEncoder, l2_normalise

TARGET_DBFS = -30.0
N_MELS = 40


def volume_gain(audio: np.ndarray) -> float:
    """Factor that brings ``audio`` (float, [-1, 1]) up to TARGET_DBFS RMS; 1.0 if it is louder (or silent)."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    if rms <= 1e-9:
        return 1.0
    change = TARGET_DBFS - 20.0 * np.log10(rms)
    return float(10.0 ** (change / 20.0)) if change > 0 else 1.0


def mel_power(audio: np.ndarray) -> np.ndarray:
    """40-channel Slaney mel power (not log) of 16 kHz ``audio``: 25 ms Hann windows every 10 ms, frame
    ``t`` centred on sample ``160 t``; shape (len(audio) // 160, 40) float32 (the numba front end's
    log10 mel, exponentiated; librosa's ``melspectrogram`` with these settings, up to edge padding)."""
    x = np.ascontiguousarray(audio, np.float32)
    n = x.shape[0] // HOP
    if n == 0:
        return np.zeros((0, N_MELS), np.float32)
    return np.power(np.float32(10.0), whisper_log10_mel(x, N_MELS)[:n]).astype(np.float32)


def window_spans(start: int, end: int, window: int, hop: int, min_window: int, closed: bool = True
                 ) -> list[tuple[int, int]]:
    """Window spans of the utterance ``[start, end)`` (see the module docstring). ``closed=False``: the
    utterance goes on, so only the full windows that fit so far (no closing window)."""
    if window <= 0 or hop <= 0 or min_window <= 0:
        raise ParamError(f"window={window}, hop={hop}, min_window={min_window}: all must be > 0 samples")
    spans = [(a, a + window) for a in range(start, end - window + 1, hop)]
    if not closed:
        return spans
    if not spans:
        return [(start, end)] if end - start >= min_window else []
    if end - spans[-1][1] > hop // 2:
        spans.append((end - window, end))
    return spans


def encoder_input(encoder: SpeakerEncoder, windows: Sequence[np.ndarray]) -> np.ndarray:
    """The batch ``encoder.embed`` takes for equal-length audio ``windows`` (each scaled by its gain)."""
    scaled = [np.asarray(w, np.float32) * np.float32(volume_gain(w)) for w in windows]
    if encoder.input_kind == MEL40:
        return np.stack([mel_power(w) for w in scaled])
    return np.stack(scaled)


def embed_windows(encoder: SpeakerEncoder, windows: Sequence[np.ndarray]) -> np.ndarray:
    """(len(windows), dim) embeddings of audio ``windows``: one ``embed`` call per distinct length."""
    out = np.zeros((len(windows), encoder.dim), np.float32)
    by_len: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        by_len.setdefault(len(w), []).append(i)
    for idx in by_len.values():
        out[idx] = encoder.embed(encoder_input(encoder, [windows[i] for i in idx]))
    return out


@dataclass(frozen=True, slots=True, eq=False)
class Embedded:
    """An utterance's embedding (None if it had no window), its windows' embeddings and spans."""

    vector: np.ndarray | None
    windows: np.ndarray
    spans: tuple[tuple[int, int], ...]


def embed_audio(encoder: SpeakerEncoder, audio: np.ndarray, spans: Sequence[tuple[int, int]] | None = None,
                hop_s: float = 0.8) -> Embedded:
    """Embedding of 16 kHz ``audio``, over the speech ``spans`` (sample ranges; the whole signal if None):
    windows of each span as the streaming node makes them, then their normalised mean."""
    rate = encoder.sample_rate
    window, hop, min_window = int(encoder.window_s * rate), int(hop_s * rate), int(encoder.min_window_s * rate)
    x = np.asarray(audio, np.float32)
    wins: list[tuple[int, int]] = []
    for a, b in spans if spans is not None else [(0, len(x))]:
        wins += window_spans(max(0, a), min(b, len(x)), window, hop, min_window)
    if not wins:
        return Embedded(None, np.zeros((0, encoder.dim), np.float32), ())
    vecs = embed_windows(encoder, [x[a:b] for a, b in wins])
    return Embedded(l2_normalise(vecs.mean(axis=0)), vecs, tuple(wins))
