"""The Whisper backend's settings and the messages of its decode.

:data:`PARAMS` declares the backend's parameters (the asr node takes them as ``whisper.NAME``) and
:class:`WhisperConfig` holds them, validated; :class:`WhisperRequest` is one window to decode,
:class:`WhisperOutput` what it decoded to, with :class:`AlignedWord` per word. The model that serves them is
:class:`~kikimimi.models.asr.whisper_ct2.WhisperCT2`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kikimimi.engine.errors import ParamError
from kikimimi.engine.params import Param, check_fields
from kikimimi.models.asr.policy import StreamPolicy
from kikimimi.models.asr.recognizer import DecodeRequest

DEVICES = ("auto", "cpu", "cuda")


@dataclass(eq=False)
class WhisperRequest(DecodeRequest):
    """Decode ``frames`` (raw log10 mel, (n, n_mels)) after ``context`` tokens, forcing ``prefix`` tokens.

    language: ISO code, or None to detect it. detect: also detect when ``language`` is set (the stream's
    language under auto), and decode in the detected one when it wins with ``switch_probability`` over at
    least ``switch_s`` of audio (:func:`~kikimimi.models.asr.language.decoding_language`). allowed: detection
    only among these. want_words: align words. max_new_tokens: generation cap. kind: "partial", "advance" (a
    long buffer must be cut) or "final". lead_frames: silence put before ``frames`` (Whisper mishears speech
    that begins at the very start of its window); the output's times stay measured from the first of ``frames``.
    """

    frames: np.ndarray = field(default_factory=lambda: np.zeros((0, 80), np.float32))
    context: list[int] = field(default_factory=list)
    prefix: list[int] = field(default_factory=list)
    language: str | None = None
    want_words: bool = False
    max_new_tokens: int = 100
    kind: str = "partial"
    detect: bool = False
    allowed: tuple[str, ...] | None = None
    switch_probability: float = 0.9
    switch_s: float = 2.0
    lead_frames: int = 0


@dataclass(frozen=True, slots=True)
class AlignedWord:
    """A word of the decoded text with its span in seconds from the window start."""

    text: str
    n_tokens: int
    start_s: float
    end_s: float
    probability: float


@dataclass(eq=False)
class WhisperOutput:
    """What one request decoded to.

    tokens: the text tokens of prefix + generated text (timestamps removed, guards applied).
    segment_ends: (text-token count, time in s) where a Whisper segment ended. words: aligned words of
    ``tokens`` (want_words only). cost_s: wall time of the whole decode call. end_s: where (s from the
    window start) the last kept segment ended by its timestamp, None if it did not say.
    """

    language: str
    language_probability: float
    tokens: list[int]
    n_prefix: int
    segment_ends: list[tuple[int, float]]
    words: list[AlignedWord] | None
    no_speech_prob: float
    avg_logprob: float
    cost_s: float
    end_s: float | None = None


PARAMS: tuple[Param, ...] = (
    Param("beam_size", int, 1, "beam size (1 = greedy)", min=1, max=16),
    Param("device", str, "auto", "where the model runs", choices=DEVICES),
    Param("compute_type", str, "default", "CTranslate2 compute type; default: int8 on cpu, float16 on cuda"),
    Param("threads", int, 0, "CPU threads for the model (0 = the library's default)", min=0, max=256),
    Param("agreement", int, 2, "LocalAgreement-n: hypotheses that must agree to commit", min=2, max=5),
    Param("commit_after_ms", int, 2000, "commit nothing before the utterance is this long (ms)", min=0),
    Param("trim_after_s", float, 10.0, "cut the buffer at a committed segment end once it is this long (s)",
          min=1.0, max=25.0),
    Param("force_after_s", float, 20.0, "cut at any committed word once the buffer is this long (s)",
          min=1.0, max=27.0),
    Param("carry_s", float, 20.0, "an utterance that starts within 2 s of the previous one is decoded with up "
          "to this much of the previous audio before it, that final's text forced as prefix (s; 0 = none)",
          min=0.0, max=25.0),
    Param("redecode_final", bool, True, "decode the final of an utterance again as a whole (the text partials "
          "committed may be corrected); false: the final keeps the committed text and decodes only the rest"),
    Param("pad_ms", int, 3000, "silence appended to each decode window (ms)", min=0, max=29000),
    Param("min_window_ms", int, 10000, "decode windows are padded to at least this long (ms)", min=0,
          max=30000),
    Param("final_window_ms", int, -1, "final decodes are padded to at least this long (ms): 30000 is "
          "Whisper's own window, as offline decoding pads (a final then reads as faster-whisper's transcribe() "
          "of the same audio; it costs final latency on a CPU); -1: 30000 on a GPU, on the CPU 20000 (10000 for "
          "tiny.en: measured more accurate there)",
          min=-1, max=30000),
    Param("bucket_ms", int, 1000, "padded window lengths are rounded up to a multiple of this (ms): a "
          "few lengths keep the model's per-shape buffers (memory) bounded", min=10, max=30000),
)
"""The Whisper backend's parameters (the asr node takes them as ``whisper.NAME``)."""


@dataclass(frozen=True, slots=True)
class WhisperConfig:
    """What :class:`WhisperCT2` loads and how it decodes: ``model`` (a name such as 'base' or 'tiny.en', a
    faster-whisper name in the Hugging Face cache, or a path; see
    :func:`~kikimimi.models.asr.resolve.resolve_model`) and the fields declared in :data:`PARAMS`."""

    model: str = "base"
    beam_size: int = 1
    device: str = "auto"
    compute_type: str = "default"
    threads: int = 0
    agreement: int = 2
    commit_after_ms: int = 2000
    trim_after_s: float = 10.0
    force_after_s: float = 20.0
    carry_s: float = 20.0
    redecode_final: bool = True
    pad_ms: int = 3000
    min_window_ms: int = 10000
    final_window_ms: int = -1
    bucket_ms: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ParamError(f"whisper: model={self.model!r} is not allowed; allowed: a model name or path")
        check_fields(self, PARAMS, "whisper")
        if self.trim_after_s > self.force_after_s:
            raise ParamError(f"whisper: trim_after_s={self.trim_after_s} is above force_after_s="
                             f"{self.force_after_s}; allowed: trim_after_s <= force_after_s")

    def policy(self) -> StreamPolicy:
        """The per-stream commit and trimming policy these settings give."""
        return StreamPolicy(agreement_n=self.agreement, trim_after_s=self.trim_after_s,
                            force_after_s=self.force_after_s, commit_after_s=self.commit_after_ms / 1000,
                            carry_s=self.carry_s, redecode_final=self.redecode_final)
