"""The streaming backend of our chunked audio-visual Conformer-CTC (:mod:`kikimimi.models.avsr.model`).

:class:`ChunkedAvRecognizer` holds the shared model (eval mode, run under ``torch.inference_mode``) and makes
per-stream states, :class:`~kikimimi.models.avsr.chunked_stream.ChunkedAvStream` (see that module for how
audio, video, chunks, revisions and endpoints are handled). :func:`load_chunked` builds one from a
checkpoint directory (:mod:`kikimimi.models.avsr.checkpoint`).

Options: ``video_lag_s`` (how long the audio may run ahead of a frame's missing video before the frame is
decoded without it), ``endpoint_slack_s`` (how far past an endpoint audio may already have been decoded
when the endpoint arrives; those chunks are re-run so the final covers exactly the utterance, and words
inside that slack are not committed yet; the avsr node gives audio at most ``vad_lookahead_ms`` = 500 ms
past the VAD's watermark), ``max_utterance_s`` (longer utterances get a final there and go on as a new
one), ``history_s`` (audio kept for a ``begin`` that points into the past).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from kikimimi.engine.errors import ParamError
from kikimimi.engine.msgs.vision import MOUTH_SIZE
from kikimimi.models.avsr.base import AvRecognizer
from kikimimi.models.avsr.checkpoint import load_checkpoint
from kikimimi.models.avsr.chunked_stream import ChunkedAvStream
from kikimimi.models.avsr.conformer import LayerCache
from kikimimi.models.avsr.model import FRAME_SAMPLES, INT16_SCALE, SAMPLE_RATE, STACK, AvCtcModel, model_inputs
from kikimimi.models.frontend.kaldi import kaldi_fbank
from kikimimi.models.frontend.spec import as_signal

__all__ = ["ChunkedAvRecognizer", "ChunkedAvStream", "load_chunked"]


def _int(value: object, what: str, least: int = 0) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
        raise ParamError(f"{what}={value!r} is not allowed; allowed: an int >= {least}")
    return int(value)


class ChunkedAvRecognizer(AvRecognizer):
    """Shared weights of the chunked AV Conformer-CTC; see the module docstring.

    ``threads`` > 0 sets torch's intra-op thread count with ``torch.set_num_threads``, which is process-wide
    (every model in the process then uses it); 0 leaves torch's setting alone. ``device``: "cpu" or "cuda[:N]".
    """

    name = "chunked-av-ctc"

    def __init__(self, model: AvCtcModel, device: str = "cpu", threads: int = 1, video_lag_s: float = 0.5,
                 endpoint_slack_s: float = 0.5, max_utterance_s: float = 60.0, history_s: float = 4.0,
                 language: str = "en") -> None:
        if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
            raise ParamError(f"device={device!r} is not allowed; allowed: 'cpu', 'cuda' or 'cuda:N'")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ParamError(f"device={device!r} is not available (no CUDA device); allowed here: 'cpu'")
        if _int(threads, "threads", 0) > 0:
            torch.set_num_threads(threads)
        for what, v, least in (("video_lag_s", video_lag_s, 0.0), ("endpoint_slack_s", endpoint_slack_s, 0.0),
                               ("max_utterance_s", max_utterance_s, 1.0), ("history_s", history_s, 1.0)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not least <= v < 3600:
                raise ParamError(f"{what}={v!r} is not allowed; allowed: a number of seconds in [{least}, 3600)")
        self.model = model.eval().to(device)
        self.config = model.config
        self.device = torch.device(device)
        self.language = language
        chunk = self.config.chunk_frames
        self.video_lag = round(video_lag_s * SAMPLE_RATE)
        self.slack_frames = math.ceil(endpoint_slack_s * SAMPLE_RATE / FRAME_SAMPLES)
        self.max_frames = max(int(max_utterance_s * SAMPLE_RATE) // FRAME_SAMPLES // chunk, 1) * chunk
        self.history = int(history_s * SAMPLE_RATE)
        self.max_video_frames = int((history_s + video_lag_s + 2.0) * 60)

    def new_stream(self) -> ChunkedAvStream:
        return ChunkedAvStream(self)

    def warmup(self) -> None:
        """Run one chunk of silence without a face."""
        n, c = self.config.chunk_frames, self.config
        self.run_chunk(np.zeros((n, STACK * c.n_mels), np.float32), np.zeros((n, MOUTH_SIZE, MOUTH_SIZE), np.uint8),
                       np.zeros(n, np.float32), self.model.init_cache(1, self.device))

    def run_chunk(self, audio: np.ndarray, mouths: np.ndarray, present: np.ndarray,
                  cache: list[LayerCache]) -> tuple[np.ndarray, list[LayerCache]]:
        """One chunk's log-probabilities (n, vocab_size) float32 and the new cache."""
        dev = self.device
        with torch.inference_mode():
            lp, cache = self.model.forward_chunk(torch.from_numpy(audio)[None].to(dev),
                                                 torch.from_numpy(mouths)[None].to(dev),
                                                 torch.from_numpy(present)[None].to(dev), cache)
        return lp[0].float().cpu().numpy(), cache

    def decode_utterance(self, audio: np.ndarray, mouths: np.ndarray, has_face: np.ndarray,
                         frame_samples: np.ndarray, start_sample: int = 0) -> np.ndarray:
        """One-shot log-probabilities (T, vocab_size) of a whole utterance: ``audio`` float32 in [-1, 1] from
        ``start_sample``, video frames (T_v, 96, 96) uint8 with ``has_face`` and their ``frame_samples``."""
        fbank = kaldi_fbank(as_signal(audio) * np.float32(INT16_SCALE), self.config.n_mels)
        a, m, p = model_inputs(fbank, mouths, has_face, frame_samples, start_sample)
        if a.shape[0] == 0:
            return np.zeros((0, self.model.vocab_size), np.float32)
        dev = self.device
        with torch.inference_mode():
            lp = self.model(torch.from_numpy(a)[None].to(dev), torch.from_numpy(m)[None].to(dev),
                            torch.from_numpy(p)[None].to(dev))
        return lp[0].float().cpu().numpy()


def load_chunked(path: str | Path, device: str = "cpu", threads: int = 1, **options: float) -> ChunkedAvRecognizer:
    """A :class:`ChunkedAvRecognizer` from checkpoint directory ``path`` (options: ``video_lag_s``,
    ``endpoint_slack_s``, ``max_utterance_s``, ``history_s``)."""
    model, _ = load_checkpoint(path, "cpu")
    return ChunkedAvRecognizer(model, device, threads, **options)
