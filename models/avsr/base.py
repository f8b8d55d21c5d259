"""The audio-visual recognizer interface: shared weights, and a per-stream state driven push by push.

* :class:`AvRecognizer`: the shared model (weights, vocabulary or tokenizer, device). ``new_stream``
  makes per-stream states.
* :class:`AvStream`: one stream's state. The node drives it with

  - ``accept_audio(samples, sample_index)``: mono float32 samples in [-1, 1] at ``sample_rate``,
    the first at ``sample_index`` on the stream's audio clock (contiguous; a gap is filled with zeros).
  - ``accept_video(mouth, sample_index)``: one video frame's mouth region, uint8 (96, 96) grayscale
    (:data:`~kikimimi.engine.msgs.vision.MOUTH_SIZE`), or None when no face was seen in that frame,
    at ``sample_index`` = the frame's instant on the audio clock. Frames come in time order.
  - ``begin(start_sample)`` / ``endpoint(end_sample)``: an utterance (VAD SPEECH_START / SPEECH_END).
  - ``step()``: decode what is due now and return the new :class:`Revision` to publish, or None.
    A final revision is returned once the endpoint's audio and video are in. ``committed`` text
    only ever grows within an utterance.
  - ``result()``: the latest revision; ``reset()``: forget everything.

  ``utterance_open`` is true between ``begin`` and the final revision.

Backends: :mod:`kikimimi.models.avsr.chunked` (our chunked Conformer-CTC, trained with
:mod:`kikimimi.models.avsr.train`) and :mod:`kikimimi.models.avsr.external` (transformers checkpoints).
"""

from __future__ import annotations

import abc

import numpy as np

from kikimimi.models.asr.recognizer import Revision

__all__ = ["AvRecognizer", "AvStream", "Revision"]


class AvStream(abc.ABC):
    """Per-stream audio-visual recognition state; see the module docstring for the protocol."""

    utterance_open: bool = False

    @abc.abstractmethod
    def accept_audio(self, samples: np.ndarray, sample_index: int) -> None:
        """Take mono float32 samples starting at ``sample_index``."""

    @abc.abstractmethod
    def accept_video(self, mouth: np.ndarray | None, sample_index: int) -> None:
        """Take one frame's (96, 96) uint8 mouth crop (None: no face) at ``sample_index``."""

    @abc.abstractmethod
    def begin(self, start_sample: int) -> None:
        """Open an utterance at ``start_sample``."""

    @abc.abstractmethod
    def endpoint(self, end_sample: int) -> None:
        """Close the open utterance at ``end_sample`` (exclusive); the final comes from a later step."""

    @abc.abstractmethod
    def step(self) -> Revision | None:
        """Decode what is due; the revision to publish, or None."""

    @abc.abstractmethod
    def result(self) -> Revision | None:
        """The latest revision of the current (or last) utterance, or None."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget the utterance, the audio and the video."""


class AvRecognizer(abc.ABC):
    """A shared audio-visual recognition model; see the module docstring."""

    name: str = ""
    sample_rate: int = 16000
    fps: float = 25.0
    """The video frame rate the model was trained on."""

    @abc.abstractmethod
    def new_stream(self) -> AvStream:
        """A fresh per-stream state."""

    def warmup(self) -> None:  # noqa: B027 - optional hook
        """Run the model once so the first real decode is not slow (default: nothing)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model (default: nothing)."""
