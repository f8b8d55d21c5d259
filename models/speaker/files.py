"""Speaker embeddings of whole files: read, mono, 16 kHz, find the speech, embed it.

:func:`speech_embedding` is what ``kikimimi speakers enroll / verify / calibrate`` use. The speech is
found by the same two-stage VAD model the streaming graph's ``vad`` node runs (:mod:`kikimimi.models.vad`),
fed the whole file as int16 (its decisions do not depend on how the audio is chunked), and the file is
embedded over its speech segments with :func:`~kikimimi.models.speaker.windows.embed_audio`, exactly as
the streaming speaker node windows an utterance. A file in which the VAD finds no speech (or only segments
too short for one window) is embedded whole, with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.engine.errors import KikimimiError
from kikimimi.models.media import read_container_audio
from kikimimi.models.pcm import float_to_int16
from kikimimi.models.speaker.encoder import SpeakerEncoder
from kikimimi.models.speaker.windows import Embedded, embed_audio

log = logging.getLogger(__name__)

RATE = 16000
AV_EXTENSIONS = (".mp4", ".mpg", ".mkv", ".webm", ".avi", ".mov")


def _read_av(path: Path, rate: int) -> np.ndarray:
    """The audio track of a video container, mono float32 at ``rate`` (channels averaged, as file_source does)."""
    x = read_container_audio(path, rate)
    if x.size == 0:
        raise KikimimiError(f"cannot read {path}: it has no audio track")
    return x


def load_audio(path: str | Path, rate: int = RATE) -> np.ndarray:
    """The file's audio, mixed to mono, resampled to ``rate`` with soxr: float32 in [-1, 1]. Audio files
    go through soundfile, video containers through PyAV. Raises KikimimiError naming the file."""
    import soundfile as sf
    import soxr

    p = Path(path)
    if not p.is_file():
        raise KikimimiError(f"cannot read audio file {p}: no such file")
    if p.suffix.lower() in AV_EXTENSIONS:
        return _read_av(p, rate)
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise KikimimiError(f"cannot read audio file {p}: {exc}") from exc
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if sr != rate and mono.size:
        mono = soxr.resample(mono, sr, rate).astype(np.float32)
    return np.ascontiguousarray(mono, np.float32)


def speech_spans(audio: np.ndarray, rate: int = RATE, vad_params: Mapping[str, Any] | None = None
                 ) -> list[tuple[int, int]]:
    """Speech segments ``[start, end)`` (samples) of mono float32 ``audio`` at ``rate``: the two-stage VAD model
    (:mod:`kikimimi.models.vad`, what the ``vad`` node runs) over the clip as int16, from sample 0, closed at
    its end. ``vad_params``: settings by the ``vad`` node's parameter names (default: its defaults)."""
    from kikimimi.models.vad import VadConfig
    from kikimimi.models.vad import speech_spans as vad_spans

    return vad_spans(float_to_int16(np.asarray(audio, np.float32)), rate, VadConfig.from_params(vad_params))


def speech_embedding(encoder: SpeakerEncoder, path: str | Path) -> tuple[Embedded, float]:
    """The embedding of the speech in the file ``path`` and its seconds of speech.

    The file is read (any channels, any rate), mixed to mono, resampled to the encoder's rate, its speech
    found with the two-stage VAD and embedded over those spans. Without speech the whole file is used
    (logged as a warning) and its whole length counts. ``Embedded.vector`` is None only when even the
    whole file is shorter than the encoder's shortest window."""
    rate = encoder.sample_rate
    audio = load_audio(path, rate)
    spans = speech_spans(audio, rate)
    if spans:
        emb = embed_audio(encoder, audio, spans=spans)
        if emb.vector is not None:
            return emb, sum(b - a for a, b in spans) / rate
        log.warning("%s: the speech the VAD found (%.2f s in %d segments) is too short to embed; using the "
                    "whole file", path, sum(b - a for a, b in spans) / rate, len(spans))
    else:
        log.warning("%s: the VAD found no speech; embedding the whole file (%.2f s)", path, len(audio) / rate)
    return embed_audio(encoder, audio), len(audio) / rate
