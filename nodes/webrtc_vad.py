"""``webrtc_vad``: speech start/end events from the WebRTC voice activity detector.

A thin adapter over :mod:`kikimimi.models.vad.webrtc` (where the decision rule is described): the node's
parameters make a :class:`~kikimimi.models.vad.webrtc.WebrtcVadConfig`, each stream (by
``header.stream_id``) a :class:`~kikimimi.models.vad.webrtc.WebrtcVadStream` with its own detector and
state, fed its chunks as int16 mono (mean over channels). Each decision goes out as a VadEvent:
SPEECH_START carries ``start_sample`` and the fraction of voiced frames so far as ``probability``;
SPEECH_END carries ``start_sample``, ``end_sample`` (exclusive) and ``probability`` = the fraction of
voiced frames in [start_sample, end_sample). ``header.sample_index`` is the sample at which the
decision was made (the end of the frame that tipped it). END_OF_STREAM or FLUSH for a stream (or for
"all"), and ``on_stop``, close an open segment at once: the decision is at the last sample seen, and
the segment ends, as always, at the end of its last voiced frame. A rate change restarts the stream; a
gap in the audio keeps its decision state and realigns its frames.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import numpy as np

from kikimimi.engine.clock import Clock
from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.speech import VadEvent
from kikimimi.engine.node import PortSpec
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.streams import StreamNode
from kikimimi.models.pcm import downmix, float_to_int16
from kikimimi.models.vad import SAMPLE_RATES, VadDecision, WebrtcVadConfig, WebrtcVadStream


class WebrtcVad(StreamNode[WebrtcVadStream]):
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
        try:
            self.config = WebrtcVadConfig(**self.p.as_dict())
        except ParamError as exc:
            raise ParamError(f"node {name!r} (webrtc_vad): {exc}") from None

    def on_message(self, port: str, msg: Message) -> None:
        """Drop audio at a rate webrtcvad does not take; restart a stream on a rate change (a gap is logged);
        hand the chunk to its stream."""
        if not isinstance(msg, AudioChunk):
            return
        sid, rate, idx = msg.header.stream_id, msg.sample_rate, msg.header.sample_index
        if rate not in SAMPLE_RATES:
            self.stats.count_rejected("sample_rate")
            self.throttled(logging.WARNING, f"rate:{sid}:{rate}",
                           "webrtc_vad %s: dropping audio of stream %r at %d Hz; allowed sample rates: %s",
                           self.name, sid, rate, ", ".join(map(str, SAMPLE_RATES)))
            return
        st = self.streams.get(sid)
        if st is not None and st.rate != rate:
            self.log.info("webrtc_vad %s: stream %r changed rate %d -> %d Hz; restarting it",
                          self.name, sid, st.rate, rate)
            self.flush_stream(sid, st)
            self.streams[sid] = self.open_stream(sid, msg)
        elif st is not None and idx > st.end:
            self.throttled(logging.INFO, f"gap:{sid}", "webrtc_vad %s: stream %r jumps from sample %d to %d",
                           self.name, sid, st.end, idx)
        self.on_stream_message(port, msg, self.stream(msg))

    def open_stream(self, sid: str, msg: Message) -> WebrtcVadStream:
        """A detector at the chunk's rate, starting at its first sample."""
        return WebrtcVadStream(self.config, cast(AudioChunk, msg).sample_rate, msg.header.sample_index)

    def on_stream_message(self, port: str, msg: Message, st: WebrtcVadStream) -> None:
        """Classify the chunk's audio frame by frame and emit events as decisions are made."""
        x = downmix(cast(AudioChunk, msg).samples)
        if x.dtype != np.int16:
            x = float_to_int16(x)
        self._send(msg.header.stream_id, st, st.accept(x, msg.header.sample_index))

    def flush_stream(self, sid: str, st: WebrtcVadStream) -> None:
        """Close the stream's open segment at the last sample seen."""
        self._send(sid, st, st.flush())

    def _send(self, sid: str, st: WebrtcVadStream, decisions: list[VadDecision]) -> None:
        for d in decisions:
            header = self.header("events", sid, d.decision)
            self.emit("events", VadEvent(header, d.kind, d.start, d.end, st.rate, d.probability))
