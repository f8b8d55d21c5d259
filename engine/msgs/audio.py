"""Audio family: blocks of samples and the feature frames computed from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kikimimi.engine.errors import MessageError
from kikimimi.engine.messages import Message, message_type

AUDIO_DTYPES = (np.dtype(np.int16), np.dtype(np.float32))


@message_type
@dataclass(frozen=True, slots=True, eq=False)
class AudioChunk(Message):
    """A block of audio samples, shape (n_samples, channels), int16 or float32 in [-1, 1].

    header.sample_index is the absolute index of the first sample; header.t_ns its capture time.
    """

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        s = self.samples
        if not isinstance(s, np.ndarray):
            raise MessageError(f"AudioChunk.samples must be a numpy array, got {type(s).__name__}")
        if s.dtype not in AUDIO_DTYPES:
            raise MessageError(f"AudioChunk.samples dtype {s.dtype} is not allowed; allowed: int16, float32")
        if s.ndim != 2 or s.shape[1] < 1:
            raise MessageError(
                f"AudioChunk.samples must have shape (n_samples, channels), got shape {s.shape}"
            )
        if not isinstance(self.sample_rate, (int, np.integer)) or self.sample_rate <= 0:
            raise MessageError(f"AudioChunk.sample_rate must be a positive int, got {self.sample_rate!r}")
        if self.header.sample_index < 0:
            raise MessageError("AudioChunk.header.sample_index must be the absolute index of its first sample")

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def end_index(self) -> int:
        """Absolute index one past the last sample."""
        return self.header.sample_index + self.n_samples

    @property
    def duration_ns(self) -> int:
        return self.n_samples * 1_000_000_000 // self.sample_rate



FEATURE_KINDS = ("whisper_log10_mel", "kaldi_fbank")


@message_type
@dataclass(frozen=True, slots=True, eq=False)
class Features(Message):
    """Feature frames ``[start_frame, start_frame + n)`` of one stream, shape (n_frames, n_bins) float32.

    kind: ``whisper_log10_mel`` (Whisper's log10 power mel before its per-window normalization, which
    the recognizer applies to the window it decodes) or ``kaldi_fbank`` (natural-log mel energies).
    Frame ``i`` covers audio centred (Whisper) or starting (Kaldi) at sample ``i * hop`` of the stream;
    header.sample_index is the sample index of frame ``start_frame``'s position, on the stream's clock.
    """

    frames: np.ndarray
    kind: str
    start_frame: int
    hop: int
    sample_rate: int

    def __post_init__(self) -> None:
        f = self.frames
        if not isinstance(f, np.ndarray) or f.dtype != np.float32 or f.ndim != 2:
            raise MessageError(
                "Features.frames must be a float32 array of shape (n_frames, n_bins), got "
                f"{getattr(f, 'dtype', type(f).__name__)} {getattr(f, 'shape', '')}"
            )
        if self.kind not in FEATURE_KINDS:
            raise MessageError(f"Features.kind {self.kind!r} is not allowed; allowed: {', '.join(FEATURE_KINDS)}")
        if self.start_frame < 0:
            raise MessageError(f"Features.start_frame must be >= 0, got {self.start_frame}")
        if self.hop <= 0 or self.sample_rate <= 0:
            raise MessageError(f"Features.hop and sample_rate must be positive, got {self.hop}, {self.sample_rate}")

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def end_frame(self) -> int:
        return self.start_frame + self.n_frames
