"""Speech start/end from the WebRTC voice activity detector alone, as a streaming model.

:class:`WebrtcVadStream` (one per audio stream, its own detector and state) collects int16 mono samples
in an :class:`AudioRing` and reads them back in frames of exactly ``frame_ms``; each frame is classified
voiced or unvoiced. Decision rule (hysteresis over sliding windows of frames):

* not in speech: speech starts when at least ``start_ratio`` of the last ``start_window_ms`` of frames
  are voiced. The segment starts at the first sample of that window.
* in speech: speech ends when at least ``end_ratio`` of the last ``end_window_ms`` of frames (counted
  from the start decision on) are unvoiced. The segment ends at the end of its last voiced frame: the
  trailing unvoiced frames that confirmed the end are not speech.
* ``min_speech_ms``: SPEECH_START is given only once the segment's voiced extent (first sample to end of
  its last voiced frame) reaches ``min_speech_ms``; a segment that ends shorter gives nothing.

SPEECH_START carries the start and the fraction of voiced frames so far as probability; SPEECH_END the
start, the end (exclusive) and the fraction of voiced frames in the segment. ``decision`` is the sample
at which it was decided (the end of the frame that tipped it). :meth:`WebrtcVadStream.flush` closes an
open segment at once: decided at the last sample seen, ending, as always, at the end of its last voiced
frame. A jump forward in the input (lost audio) keeps the decision state and realigns the frames.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import webrtcvad

from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import NO_SAMPLE
from kikimimi.engine.msgs.speech import SpeechEventKind
from kikimimi.engine.ring import AudioRing
from kikimimi.models.segmenter import SegmentDecision
from kikimimi.models.vad.config import FRAME_MS, WEBRTC_MODES, check_rate


@dataclass(frozen=True, slots=True)
class WebrtcVadConfig:
    """Settings of the webrtcvad-only detector (durations in ms); validates itself (ParamError)."""

    mode: int = 3
    frame_ms: int = 30
    start_window_ms: int = 300
    start_ratio: float = 0.9
    end_window_ms: int = 600
    end_ratio: float = 0.9
    min_speech_ms: int = 250

    def __post_init__(self) -> None:
        for name, choices in (("mode", WEBRTC_MODES), ("frame_ms", FRAME_MS)):
            v = getattr(self, name)
            if isinstance(v, bool) or v not in choices:
                raise ParamError(f"{name}={v!r} is not allowed; allowed: {', '.join(map(str, choices))}")
        for name, lo in (("start_window_ms", 10), ("end_window_ms", 10), ("min_speech_ms", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ParamError(f"{name}={v!r} is not allowed; allowed: an int >= {lo}")
        for name in ("start_ratio", "end_ratio"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ParamError(f"{name}={v!r} is not allowed; allowed: a number from 0.0 to 1.0")
            object.__setattr__(self, name, float(v))

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> WebrtcVadConfig:
        """A config from setting names (the ``webrtc_vad`` node's parameter names); unknown names: ParamError."""
        given = dict(params or {})
        names = sorted(f.name for f in fields(cls))
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ParamError(f"unknown webrtcvad setting {unknown[0]!r}; settings: {', '.join(names)}")
        return cls(**given)


class WebrtcVadStream:
    """Detector state of one stream; see the module docstring."""

    def __init__(self, config: WebrtcVadConfig, sample_rate: int, origin: int = 0) -> None:
        self.config = config
        self.rate = check_rate(sample_rate)
        self.frame = self.rate * config.frame_ms // 1000
        self.n_start = max(1, math.ceil(config.start_window_ms / config.frame_ms))
        self.n_end = max(1, math.ceil(config.end_window_ms / config.frame_ms))
        # Frames needed in each window (at least one: speech cannot start or end on no evidence).
        self.need_start = max(1, math.ceil(config.start_ratio * self.n_start - 1e-9))
        self.need_end = max(1, math.ceil(config.end_ratio * self.n_end - 1e-9))
        self.min_len = config.min_speech_ms * self.rate // 1000
        self.vad: Any = webrtcvad.Vad(config.mode)
        self.ring = AudioRing(max(self.rate, 4 * self.frame), channels=1, dtype=np.int16, start_index=origin)
        self.reader = self.ring.reader(origin)
        self.start_win: deque[tuple[int, bool]] = deque(maxlen=self.n_start)
        self.end_win: deque[bool] = deque(maxlen=self.n_end)
        self.triggered = False
        self.started = False           # SPEECH_START given for the open segment
        self.seg_start = 0
        self.frames = 0                # frames in the open segment
        self.voiced = 0                # voiced frames in the open segment
        self.frames_to_voiced = 0      # frames up to and including its last voiced frame
        self.last_voiced_end = 0
        self._out: list[SegmentDecision] = []

    @property
    def end(self) -> int:
        """One past the last input sample seen."""
        return self.ring.write_index

    def accept(self, samples: np.ndarray, index: int | None = None) -> list[SegmentDecision]:
        """Feed int16 mono ``samples`` starting at input sample ``index`` (None: right after the last ones);
        samples already seen are skipped, a jump forward realigns the frames at ``index``. Returns the
        decisions made, in order."""
        x = samples
        if x.dtype != np.int16 or not (x.ndim == 1 or (x.ndim == 2 and x.shape[1] == 1)):
            raise ParamError(f"webrtcvad samples of dtype {x.dtype} and shape {x.shape} are not allowed; "
                             "allowed: int16 mono, shape (n,) or (n, 1)")
        if index is not None:
            if index > self.ring.write_index:  # a gap (dropped audio): keep the decision state, realign frames
                self.ring = AudioRing(self.ring.capacity, channels=1, dtype=np.int16, start_index=index)
                self.reader = self.ring.reader(index)
            skip = self.ring.write_index - index  # overlap with audio already seen
            if skip >= x.shape[0]:
                return []
            if skip > 0:
                x = x[skip:]
        piece = self.ring.capacity // 2
        for i in range(0, x.shape[0], piece):
            self.ring.write(x[i:i + piece])
            while (r := self.reader.read_exact(self.frame)) is not None:
                self._classify(r.data, r.start)
        out, self._out = self._out, []
        return out

    def flush(self) -> list[SegmentDecision]:
        """Close an open segment now (end of input or flush): decided at the last sample seen, ending at the
        end of its last voiced frame like any other segment. The stream goes on."""
        if self.triggered:
            self._finish(self.last_voiced_end, self.frames_to_voiced, self.ring.write_index)
        self.start_win.clear()
        out, self._out = self._out, []
        return out

    # ------------------------------------------------------------------ decisions
    def _classify(self, frame: np.ndarray, start: int) -> None:
        voiced = bool(self.vad.is_speech(frame.tobytes(), self.rate))
        end = start + self.frame
        if not self.triggered:
            self.start_win.append((start, voiced))
            if len(self.start_win) < self.n_start or sum(v for _, v in self.start_win) < self.need_start:
                return
            self.triggered, self.started = True, False
            self.seg_start = self.start_win[0][0]
            self.frames = len(self.start_win)
            self.voiced = sum(v for _, v in self.start_win)
            last = max(i for i, (_, v) in enumerate(self.start_win) if v)
            self.frames_to_voiced = last + 1
            self.last_voiced_end = self.start_win[last][0] + self.frame
            self.start_win.clear()
            self.end_win.clear()
        else:
            self.frames += 1
            if voiced:
                self.voiced += 1
                self.frames_to_voiced = self.frames
                self.last_voiced_end = end
            self.end_win.append(voiced)
        self._maybe_start(end)
        if len(self.end_win) == self.n_end and self.end_win.count(False) >= self.need_end:
            self._finish(self.last_voiced_end, self.frames_to_voiced, end)

    def _maybe_start(self, decision: int) -> None:
        if not self.started and self.last_voiced_end - self.seg_start >= self.min_len:
            self.started = True
            self._give(SpeechEventKind.SPEECH_START, decision, NO_SAMPLE, self.voiced / max(1, self.frames_to_voiced))

    def _finish(self, end_sample: int, frames: int, decision: int) -> None:
        """End the open segment at ``end_sample``: SPEECH_END if it was long enough, else nothing."""
        if not self.started and end_sample - self.seg_start >= self.min_len:
            self.started = True
            self._give(SpeechEventKind.SPEECH_START, decision, NO_SAMPLE, self.voiced / max(1, self.frames_to_voiced))
        if self.started:
            self._give(SpeechEventKind.SPEECH_END, decision, end_sample, self.voiced / max(1, frames))
        self.triggered = self.started = False
        self.start_win.clear()
        self.end_win.clear()

    def _give(self, kind: SpeechEventKind, decision: int, end: int, probability: float) -> None:
        self._out.append(SegmentDecision(kind, self.seg_start, end, decision, probability))
