"""The VAD over a whole recording at once (offline users: speaker enrolment, AV training data)."""

from __future__ import annotations

import numpy as np

from kikimimi.engine.msgs.speech import SpeechEventKind
from kikimimi.models.vad.config import VadConfig
from kikimimi.models.vad.model import VadModel


def speech_spans(samples: np.ndarray, sample_rate: int, config: VadConfig | None = None) -> list[tuple[int, int]]:
    """Speech segments ``[start, end)`` (sample indices from 0) of int16 mono ``samples``: one stream of the
    two-stage VAD (``config``; default: the defaults, as the ``vad`` node's) fed the whole recording and closed
    at its end. The decisions are those of the ``vad`` node fed the same audio in chunks of any size."""
    stream = VadModel(config).new_stream(sample_rate)
    decisions = stream.accept(samples)
    decisions += stream.close()
    return [(d.start, d.end) for d in decisions if d.kind is SpeechEventKind.SPEECH_END]
