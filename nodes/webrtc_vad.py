"""``webrtc_vad``: speech start/end events from the WebRTC voice activity detector.

Each stream (by ``header.stream_id``) has its own detector and state, so one node serves several
streams. Audio is converted to int16 mono (mean over channels), collected in an :class:`AudioRing`,
and read back in frames of exactly ``frame_ms``; each frame is classified voiced or unvoiced.

Decision rule (hysteresis over sliding windows of frames):

* not in speech: speech starts when at least ``start_ratio`` of the last ``start_window_ms`` of frames
  are voiced. The segment starts at the first sample of that window.
* in speech: speech ends when at least ``end_ratio`` of the last ``end_window_ms`` of frames (counted
  from the start decision on) are unvoiced. The segment ends at the end of its last voiced frame: the
  trailing unvoiced frames that confirmed the end are not speech.
* ``min_speech_ms``: SPEECH_START is emitted only once the segment's voiced extent (first sample to
  end of its last voiced frame) reaches ``min_speech_ms``; a segment that ends shorter emits nothing.

SPEECH_START carries ``start_sample`` and the fraction of voiced frames so far as ``probability``;
SPEECH_END carries ``start_sample``, ``end_sample`` (exclusive) and ``probability`` = the fraction of
voiced frames in [start_sample, end_sample). ``header.sample_index`` is the sample at which the
decision was made (the end of the frame that tipped it). END_OF_STREAM or FLUSH for a stream (or for
"all"), and ``on_stop``, close an open segment at once: the decision is at the last sample seen, and
the segment ends, as always, at the end of its last voiced frame.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import webrtcvad

from kikimimi.engine.clock import Clock
from kikimimi.engine.messages import Control, ControlKind, Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.engine.node import Node, PortSpec, control_targets
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.ring import AudioRing, RingReader
from kikimimi.models.pcm import downmix, float_to_int16

SAMPLE_RATES = (8000, 16000, 32000, 48000)


@dataclass
class _Stream:
    """Detector state of one stream."""

    vad: Any
    rate: int
    frame: int
    ring: AudioRing
    reader: RingReader
    start_win: deque[tuple[int, bool]]
    end_win: deque[bool]
    triggered: bool = False
    started: bool = False          # SPEECH_START emitted for the open segment
    seg_start: int = 0
    frames: int = 0                # frames in the open segment
    voiced: int = 0                # voiced frames in the open segment
    frames_to_voiced: int = 0      # frames up to and including its last voiced frame
    last_voiced_end: int = 0


class WebrtcVad(Node):
    """Voice activity detection with webrtcvad; emits VadEvent SPEECH_START / SPEECH_END per stream."""

    kind = "webrtc_vad"
    help = "WebRTC voice activity detector: SPEECH_START / SPEECH_END events per stream."
    inputs = (PortSpec("audio", (AudioChunk,), queue=QueueConfig.make("block", 256),
                       help="audio at 8, 16, 32 or 48 kHz, any channels, int16 or float32"),)
    outputs = (PortSpec("events", (VadEvent,), help="speech start and end events"),)
    params = (
        Param("mode", int, 3, "aggressiveness: 0 = least, 3 = most aggressive at rejecting non-speech",
              choices=(0, 1, 2, 3)),
        Param("frame_ms", int, 30, "frame length classified at once (ms)", choices=(10, 20, 30)),
        Param("start_window_ms", int, 300, "window over which speech must start (ms)", min=10),
        Param("start_ratio", float, 0.9, "speech starts when this fraction of the start window is voiced",
              min=0.0, max=1.0),
        Param("end_window_ms", int, 600, "window over which speech must end (ms)", min=10),
        Param("end_ratio", float, 0.9, "speech ends when this fraction of the end window is unvoiced",
              min=0.0, max=1.0),
        Param("min_speech_ms", int, 250, "segments shorter than this are discarded (ms)", min=0),
    )

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        p = self.p
        self._n_start = max(1, math.ceil(p.start_window_ms / p.frame_ms))
        self._n_end = max(1, math.ceil(p.end_window_ms / p.frame_ms))
        # Frames needed in each window (at least one: speech cannot start or end on no evidence).
        self._need_start = max(1, math.ceil(p.start_ratio * self._n_start - 1e-9))
        self._need_end = max(1, math.ceil(p.end_ratio * self._n_end - 1e-9))
        self._streams: dict[str, _Stream] = {}

    # ------------------------------------------------------------------ state
    def _new_stream(self, rate: int, start: int) -> _Stream:
        frame = rate * self.p.frame_ms // 1000
        ring = AudioRing(max(rate, 4 * frame), channels=1, dtype=np.int16, start_index=start)
        return _Stream(webrtcvad.Vad(self.p.mode), rate, frame, ring, ring.reader(start),
                       deque(maxlen=self._n_start), deque(maxlen=self._n_end))

    def _stream(self, sid: str, chunk: AudioChunk) -> _Stream:
        """The stream's state, (re)created on first sight, a sample-rate change or a gap in the audio."""
        st = self._streams.get(sid)
        idx = chunk.header.sample_index
        if st is not None and st.rate != chunk.sample_rate:
            self.log.info("webrtc_vad %s: stream %r changed rate %d -> %d Hz; restarting it",
                          self.name, sid, st.rate, chunk.sample_rate)
            self._close(sid, st)
            st = None
        if st is None:
            st = self._streams[sid] = self._new_stream(chunk.sample_rate, idx)
        elif idx > st.ring.write_index:  # a gap (dropped audio): keep the decision state, realign frames
            self.throttled(logging.INFO, f"gap:{sid}", "webrtc_vad %s: stream %r jumps from sample %d to %d",
                           self.name, sid, st.ring.write_index, idx)
            st.ring = AudioRing(st.ring.capacity, channels=1, dtype=np.int16, start_index=idx)
            st.reader = st.ring.reader(idx)
        return st

    # ------------------------------------------------------------------ hooks
    def on_message(self, port: str, msg: Message) -> None:
        """Classify the chunk's audio frame by frame and emit events as decisions are made."""
        if not isinstance(msg, AudioChunk):
            return
        sid = msg.header.stream_id
        if msg.sample_rate not in SAMPLE_RATES:
            self.stats.count_rejected("sample_rate")
            self.throttled(logging.WARNING, f"rate:{sid}:{msg.sample_rate}",
                           "webrtc_vad %s: dropping audio of stream %r at %d Hz; allowed sample rates: %s",
                           self.name, sid, msg.sample_rate, ", ".join(map(str, SAMPLE_RATES)))
            return
        st = self._stream(sid, msg)
        x = msg.samples
        skip = st.ring.write_index - msg.header.sample_index  # overlap with audio already seen
        if skip >= msg.n_samples:
            return
        if skip > 0:
            x = x[skip:]
        if x.shape[1] > 1:
            x = downmix(x)
        if x.dtype != np.int16:
            x = float_to_int16(x)
        piece = st.ring.capacity // 2
        for i in range(0, x.shape[0], piece):
            st.ring.write(x[i:i + piece])
            while (r := st.reader.read_exact(st.frame)) is not None:
                self._classify(sid, st, r.data, r.start)

    def on_control(self, port: str, ctrl: Control) -> None:
        """FLUSH closes the stream's open segment; END_OF_STREAM also forgets the stream."""
        if ctrl.kind not in (ControlKind.FLUSH, ControlKind.END_OF_STREAM):
            return
        targets = control_targets(ctrl, self._streams)
        for s in targets:
            self._close(s, self._streams[s])
            if ctrl.kind is ControlKind.END_OF_STREAM:
                del self._streams[s]

    def on_stop(self) -> None:
        """Close every open segment at the last sample seen."""
        for sid, st in self._streams.items():
            self._close(sid, st)
        self._streams.clear()

    # ------------------------------------------------------------------ decisions
    def _classify(self, sid: str, st: _Stream, frame: np.ndarray, start: int) -> None:
        voiced = bool(st.vad.is_speech(frame.tobytes(), st.rate))
        end = start + st.frame
        if not st.triggered:
            st.start_win.append((start, voiced))
            if len(st.start_win) < self._n_start or sum(v for _, v in st.start_win) < self._need_start:
                return
            st.triggered, st.started = True, False
            st.seg_start = st.start_win[0][0]
            st.frames = len(st.start_win)
            st.voiced = sum(v for _, v in st.start_win)
            last = max(i for i, (_, v) in enumerate(st.start_win) if v)
            st.frames_to_voiced = last + 1
            st.last_voiced_end = st.start_win[last][0] + st.frame
            st.start_win.clear()
            st.end_win.clear()
        else:
            st.frames += 1
            if voiced:
                st.voiced += 1
                st.frames_to_voiced = st.frames
                st.last_voiced_end = end
            st.end_win.append(voiced)
        self._maybe_start(sid, st, end)
        if len(st.end_win) == self._n_end and st.end_win.count(False) >= self._need_end:
            self._finish(sid, st, st.last_voiced_end, st.frames_to_voiced, end)

    def _maybe_start(self, sid: str, st: _Stream, decision: int) -> None:
        min_len = self.p.min_speech_ms * st.rate // 1000
        if not st.started and st.last_voiced_end - st.seg_start >= min_len:
            st.started = True
            self._event(sid, st, SpeechEventKind.SPEECH_START, decision, -1, st.voiced / max(1, st.frames_to_voiced))

    def _finish(self, sid: str, st: _Stream, end_sample: int, frames: int, decision: int) -> None:
        """End the open segment at ``end_sample``: SPEECH_END if it was long enough, else nothing."""
        if not st.started and end_sample - st.seg_start >= self.p.min_speech_ms * st.rate // 1000:
            st.started = True
            self._event(sid, st, SpeechEventKind.SPEECH_START, decision, -1, st.voiced / max(1, st.frames_to_voiced))
        if st.started:
            self._event(sid, st, SpeechEventKind.SPEECH_END, decision, end_sample, st.voiced / max(1, frames))
        st.triggered = st.started = False
        st.start_win.clear()
        st.end_win.clear()

    def _close(self, sid: str, st: _Stream) -> None:
        """Close an open segment now (end of input or flush): decided at the last sample seen, ending
        at the end of its last voiced frame like any other segment."""
        if st.triggered:
            self._finish(sid, st, st.last_voiced_end, st.frames_to_voiced, st.ring.write_index)
        st.start_win.clear()

    def _event(self, sid: str, st: _Stream, kind: SpeechEventKind, decision: int, end: int,
               probability: float) -> None:
        header = self.header("events", sid, decision)
        self.emit("events", VadEvent(header, kind, st.seg_start, end, st.rate, probability))
