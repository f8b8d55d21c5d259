"""The recognizer interface: a shared model that decodes many streams in one call, and per-stream state.

Two objects, so one set of weights serves any number of streams:

* :class:`Recognizer` — the shared model (weights, tokenizer, device). It says which features it
  eats (``feature_kind``, ``n_bins``, ``hop``: a :class:`~kikimimi.engine.messages.Features` kind and
  shape; or ``feature_kind = "audio"`` for raw 16 kHz samples, which ``accept`` then gets as
  (n, 1) float32 in [-1, 1] with ``start_frame = sample_index`` = the first sample's index) and makes
  per-stream states with :meth:`Recognizer.new_stream`. :meth:`Recognizer.decode`
  runs a list of :class:`DecodeRequest` (from any number of streams) in one call — batched where the
  backend can — and returns one backend-defined output per request, in order.
* :class:`RecognizerStream` — one stream's state. The node drives it with:

  - ``accept(frames, start_frame, sample_index)``: feature frames ``[start_frame, start_frame + n)``
    of the stream (speech or not; the stream keeps a bounded window of them). ``sample_index`` is
    the position of frame ``start_frame`` on the stream's audio clock, so frame ``f`` sits at
    ``sample_index + (f - start_frame) * hop``.
  - ``begin(start_sample)``: an utterance starts at that sample (a VAD SPEECH_START); frames from
    there on belong to it (they may already have been accepted).
  - ``endpoint(end_sample)``: the utterance ends there (a VAD SPEECH_END); the next ``step`` returns
    the final request once the frames up to ``end_sample`` have been accepted.
  - ``step(interval_frames, partial=True)``: the request to decode now, or None. A final request is
    returned as soon as the endpoint's frames are in; a partial one (only with ``partial``) when at
    least ``interval_frames`` new frames of the open utterance arrived since its last decode.
  - ``apply(request, output)``: feed back what ``Recognizer.decode`` returned for ``request``; returns
    the new :class:`Revision` to publish, or None when nothing visible changed. A partial revision's
    ``committed`` text only grows within an utterance; the final revision holds the whole text in
    ``committed`` (a backend that decodes the final again as a whole may correct the committed text
    there) and word timings on the stream's sample clock.
  - ``speculate(end_sample)`` / ``keep(request, output)`` (optional): the final request an endpoint at
    ``end_sample`` would make, built early without changing the stream, and its decoded output kept
    for the real final request if that turns out the same (:mod:`~kikimimi.models.asr.speculation`).
  - ``result()``: the latest revision of the open (or just finished) utterance, or None.
  - ``reset()``: forget the utterance and every frame (the stream's clock starts over).

  Attributes the node reads: ``utterance_open`` (an utterance has begun and its final has not been
  applied), ``frames_end`` (index one past the newest accepted frame).

Backends: :mod:`kikimimi.models.asr.whisper_ct2` (Whisper through CTranslate2) and
:mod:`kikimimi.models.asr.sphinx` (pocketsphinx with a grammar), found by name through the
``kikimimi.asr_backends`` entry points (:mod:`kikimimi.models.asr.backends`). A backend subclasses both
classes; ``DecodeRequest`` subclasses carry what its decode needs. The node never looks inside a request
or an output. A backend's recognizer is made from its own typed config: ``config_type`` is a frozen
dataclass whose fields are ``model`` (the asr node's ``model``) and the backend's ``params`` (declared
:class:`~kikimimi.engine.params.Param`, with the same names and defaults), and ``cls(config)`` builds it.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from kikimimi.engine.msgs.speech import Word
from kikimimi.engine.params import Param

SAMPLE_RATE = 16000
AUTO = "auto"
"""Language option meaning: detect the language of each utterance."""


@dataclass(frozen=True, slots=True)
class Revision:
    """What one utterance reads like now: committed prefix, unstable tail, and for a final, the words.

    ``start_sample``/``end_sample``: the utterance's span on the stream's clock (end: the newest frame
    decoded, or the endpoint for a final). ``language``: ISO code of the text ("" if unknown).
    """

    committed: str
    unstable: str
    final: bool
    language: str
    start_sample: int
    end_sample: int
    words: tuple[Word, ...] = ()

    @property
    def text(self) -> str:
        return self.committed + self.unstable


@dataclass(eq=False)
class DecodeRequest:
    """One decode job of one stream; backends subclass it with what their decode needs.

    ``final``: this request decodes the whole rest of an utterance after its endpoint. ``ready``: its
    output, already decoded (a speculative final the stream kept, :mod:`~kikimimi.models.asr.speculation`);
    the batcher then does not decode it.
    """

    stream: RecognizerStream
    final: bool
    ready: Any = field(default=None, init=False)


class RecognizerStream(abc.ABC):
    """Per-stream recognition state; see the module docstring for the protocol."""

    utterance_open: bool = False

    @property
    @abc.abstractmethod
    def frames_end(self) -> int:
        """Frame index one past the newest accepted frame (0 before any)."""

    @abc.abstractmethod
    def accept(self, frames: np.ndarray, start_frame: int, sample_index: int) -> None:
        """Take feature frames ``[start_frame, start_frame + len(frames))`` at ``sample_index``."""

    @abc.abstractmethod
    def begin(self, start_sample: int) -> None:
        """Open an utterance at ``start_sample`` (an open one is finalized first by the caller)."""

    @abc.abstractmethod
    def endpoint(self, end_sample: int) -> None:
        """Close the open utterance at ``end_sample`` (exclusive); the final comes from a later step."""

    @abc.abstractmethod
    def step(self, interval_frames: int, partial: bool = True) -> DecodeRequest | None:
        """The request due now (final first), or None."""

    @abc.abstractmethod
    def apply(self, request: DecodeRequest, output: Any) -> Revision | None:
        """Take ``Recognizer.decode``'s output for ``request``; the revision to publish, or None."""

    @abc.abstractmethod
    def result(self) -> Revision | None:
        """The latest revision of the current (or last) utterance, or None."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget the utterance and all frames."""

    def speculate(self, end_sample: int) -> DecodeRequest | None:
        """The final request ``endpoint(end_sample)`` would make now, built without changing the stream, or
        None (not due, or the backend does not speculate: this default). Its output goes to :meth:`keep`."""
        return None

    def keep(self, request: DecodeRequest, output: Any) -> None:
        """Keep the output of a :meth:`speculate` request for the final request that is the same (default:
        nothing is kept)."""
        del request, output


class Recognizer(abc.ABC):
    """A shared speech recognition model; see the module docstring."""

    name: str = ""
    feature_kind: str = "whisper_log10_mel"
    n_bins: int = 80
    hop: int = 160
    sample_rate: int = SAMPLE_RATE
    languages: tuple[str, ...] = ()
    """Languages the model can transcribe (ISO codes); empty: any it knows."""
    params: ClassVar[tuple[Param, ...]] = ()
    """The backend's own parameters: the fields of ``config_type`` besides ``model``."""
    config_type: ClassVar[type[Any]] = type(None)
    """The backend's frozen config dataclass; the recognizer is built as ``cls(config)``."""

    @abc.abstractmethod
    def new_stream(self, language: str = AUTO) -> RecognizerStream:
        """A fresh per-stream state; ``language`` "auto" (detect per utterance) or an ISO code."""

    @abc.abstractmethod
    def decode(self, requests: Sequence[DecodeRequest]) -> list[Any]:
        """Run every request (of any streams) in one call; one output per request, in order."""

    def warmup(self) -> None:  # noqa: B027 - optional hook
        """Run the model once on silence so the first real decode is not slow (default: nothing)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model (default: nothing)."""
