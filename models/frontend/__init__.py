"""Audio feature front ends on numba: Whisper's log-mel and Kaldi fbank, whole-signal and streaming.

Whole-signal: :func:`whisper_log10_mel` (+ :func:`whisper_normalize`) and :func:`kaldi_fbank`.
Streaming: :class:`WhisperMelStream` and :class:`KaldiFbankStream` (``accept`` / ``flush`` / ``reset``),
which keep their audio in an engine ``AudioRing`` and write frames into a feature ring addressed by
frame index, bit-identical to the whole-signal functions. :func:`warmup` runs every kernel once.
The streaming contract on a sample clock (gaps, overlap, scale, channels, utterances):
:class:`FeatureFrontEnd` (:class:`FrontEndConfig`) -> :class:`FrontEndStream` (``accept`` / ``flush``).
"""

from __future__ import annotations

from kikimimi.models.frontend.front_end import (
    AcceptResult,
    FeatureFrames,
    FeatureFrontEnd,
    FrontEndConfig,
    FrontEndStream,
    Gap,
    warmup,
)
from kikimimi.models.frontend.kaldi import KaldiFbankStream, kaldi_fbank, kaldi_n_frames
from kikimimi.models.frontend.mel import SparseBank, kaldi_mel_banks, whisper_mel_filters
from kikimimi.models.frontend.spec import (
    KALDI_KIND,
    WHISPER_KIND,
    FrontEnd,
    kaldi_frontend,
    whisper_frontend,
)
from kikimimi.models.frontend.stream import FeatureStream
from kikimimi.models.frontend.whisper import (
    WhisperMelStream,
    whisper_log10_mel,
    whisper_n_frames,
    whisper_normalize,
)

__all__ = [
    "KALDI_KIND",
    "WHISPER_KIND",
    "AcceptResult",
    "FeatureFrames",
    "FeatureFrontEnd",
    "FeatureStream",
    "FrontEnd",
    "FrontEndConfig",
    "FrontEndStream",
    "Gap",
    "KaldiFbankStream",
    "SparseBank",
    "WhisperMelStream",
    "kaldi_fbank",
    "kaldi_frontend",
    "kaldi_mel_banks",
    "kaldi_n_frames",
    "warmup",
    "whisper_frontend",
    "whisper_log10_mel",
    "whisper_mel_filters",
    "whisper_n_frames",
    "whisper_normalize",
]
