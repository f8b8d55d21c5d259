"""``vad``: two-stage voice activity detection, webrtcvad as a fast gate and Silero VAD confirming speech.

A thin adapter over :mod:`kikimimi.models.vad` (where the algorithm is described): the node's parameters
make a :class:`~kikimimi.models.vad.VadConfig`, each audio stream (by ``header.stream_id``) a
:class:`~kikimimi.models.vad.VadStream` of one :class:`~kikimimi.models.vad.VadModel`, fed its chunks as
int16 mono (channels averaged). Every decision goes out as a :class:`VadEvent` on the stream's own
clock: SPEECH_START (start_sample, mean probability so far), SPEECH_END (start_sample, end_sample
exclusive, mean probability) and, every ``progress_ms`` of audio, PROGRESS (a watermark: everything
decided up to its sample has been sent, with the latest probability), so a consumer reading the VAD
next to a faster or slower input (the asr node next to the feature node) can keep the two in step.
``header.sample_index`` is the input sample up to which the deciding window (and the decimator's
look-ahead) reached.

Batching: Silero windows of different streams wait in the model and run in ONE session call when every
stream has one waiting, when a waiting stream's next chunk (or next window) arrives, on a tick, a
control or stop. END_OF_STREAM / FLUSH (a stream or "all") and ``on_stop`` close open segments at the
last sample seen. A jump forward in ``sample_index`` (dropped audio) or a rate change closes the open
segment and restarts the stream's state at the new position.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
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
from kikimimi.models.vad import SAMPLE_RATES, VadConfig, VadDecision, VadModel, VadStream

TICK_NS = 20_000_000


class TwoStageVad(StreamNode[VadStream]):
    """webrtcvad gate + Silero VAD confirmation; emits VadEvent SPEECH_START / SPEECH_END per stream."""

    kind = "vad"
    help = "Two-stage VAD (webrtcvad gate, Silero confirmation): SPEECH_START / SPEECH_END per stream."
    inputs = (PortSpec("audio", (AudioChunk,), queue=QueueConfig.make("block", 256),
                       help="audio at 8, 16, 32 or 48 kHz, any channels, int16 or float32"),)
    outputs = (PortSpec("events", (VadEvent,), help="speech start and end events, input sample indices"),)
    # Batch transcription decodes whole utterances: end one on a 1 s pause rather than 300 ms, so Whisper
    # gets sentences with their context (WER of 20 LibriSpeech clips, base, beam 5: 7.7 % -> 6.4 %).
    batch_params = {"min_silence_ms": 1000}
    params = (
        Param("webrtc_mode", int, 3, "webrtcvad aggressiveness: 0 = least, 3 = most aggressive at rejecting "
              "non-speech", choices=(0, 1, 2, 3)),
        Param("frame_ms", int, 10, "webrtcvad frame length (ms)", choices=(10, 20, 30)),
        Param("gate", bool, True, "run Silero only on windows near a webrtcvad-voiced frame"),
        Param("neural", bool, True, "use Silero VAD; false = webrtcvad frames alone decide"),
        Param("threshold", float, 0.5, "speech starts (or resumes) at a probability >= this", min=0.0, max=1.0),
        Param("neg_threshold", float, None, "silence starts at a probability below this (hysteresis); "
              "null = max(threshold - 0.15, 0.01)", min=0.0, max=1.0, nullable=True),
        Param("min_speech_ms", int, 250, "segments with less speech than this are dropped (ms)", min=0),
        Param("min_silence_ms", int, 300, "hangover: silence needed to end a segment (ms)", min=0),
        Param("speech_pad_ms", int, 30, "segments are widened by this much each side (ms)", min=0),
        Param("gate_hangover_ms", int, 300, "gate stays open this long after a voiced frame (ms)", min=0),
        Param("lead_in_windows", int, 4, "when the gate reopens, warm Silero on up to this many skipped "
              "windows first", min=0, max=16),
        Param("warmup_ms", int, 500, "Silero runs ungated on a stream's first this many ms, so its state "
              "adapts to the background before the gate takes over", min=0),
        Param("batch", bool, True, "wait (at most until the stream's next chunk) to run several streams' "
              "windows in one Silero call"),
        Param("threads", int, 1, "onnxruntime intra-op threads for Silero", min=1, max=64),
        Param("progress_ms", int, 100, "send a PROGRESS watermark at most this often per stream (ms of audio; "
              "0 = never): consumers such as asr hold their other inputs in step with the VAD with it", min=0),
    )

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        try:
            config = VadConfig(**self.p.as_dict())
        except ParamError as exc:
            raise ParamError(f"node {name!r} (vad): {exc}") from None
        self.model = VadModel(config)
        if config.neural and config.batch:
            self.tick_interval_ns = TICK_NS

    # ------------------------------------------------------------------ hooks
    def on_message(self, port: str, msg: Message) -> None:
        """Drop audio at a rate the model does not take; restart a stream on a rate change or a jump
        forward; hand the chunk to its stream."""
        if not isinstance(msg, AudioChunk):
            return
        sid, rate, idx = msg.header.stream_id, msg.sample_rate, msg.header.sample_index
        if rate not in SAMPLE_RATES:
            self.stats.count_rejected("sample_rate")
            self.throttled(logging.WARNING, f"rate:{sid}:{rate}",
                           "vad %s: dropping audio of stream %r at %d Hz; allowed sample rates: %s",
                           self.name, sid, rate, ", ".join(map(str, SAMPLE_RATES)))
            return
        st = self.streams.get(sid)
        if st is not None and (st.rate != rate or idx > st.end):
            self.throttled(logging.INFO, f"restart:{sid}", "vad %s: stream %r goes from sample %d at %d Hz to "
                           "sample %d at %d Hz; closing its segment and restarting it", self.name, sid,
                           st.end, st.rate, idx, rate)
            self.close_stream(sid, st)
            self.streams[sid] = self.open_stream(sid, msg)
        self.on_stream_message(port, msg, self.stream(msg))

    def open_stream(self, sid: str, msg: Message) -> VadStream:
        """A model stream at the chunk's rate, starting at its first sample."""
        return self.model.new_stream(cast(AudioChunk, msg).sample_rate, msg.header.sample_index, key=sid)

    def on_stream_message(self, port: str, msg: Message, st: VadStream) -> None:
        """Feed the chunk, as int16 mono, to its stream; send what it (and any batch it ran) decided."""
        x = downmix(cast(AudioChunk, msg).samples)
        if x.dtype != np.int16:
            x = float_to_int16(x)
        st.feed(x, msg.header.sample_index)
        self._send(self.model.take_all())

    def on_tick(self, now_ns: int) -> None:
        """Run windows still waiting for a batch."""
        if self.model.waiting:
            self.model.step()
            self._send(self.model.take_all())

    def flush_stream(self, sid: str, st: VadStream) -> None:
        """Run what waits, then close the stream's open segment at the last sample seen."""
        self.model.step()
        self._send(self.model.take_all())
        self._send((st, d) for d in st.flush())

    def close_stream(self, sid: str, st: VadStream) -> None:
        """As :meth:`flush_stream`; the stream ends."""
        self.model.step()
        self._send(self.model.take_all())
        self._send((st, d) for d in st.close())

    # ------------------------------------------------------------------ decisions -> events
    def _send(self, decided: Iterable[tuple[VadStream, VadDecision]]) -> None:
        """Each (stream, decision) as a VadEvent, its header's sample index the decision's sample."""
        for st, d in decided:
            header = self.header("events", st.key, d.decision)
            self.emit("events", VadEvent(header, d.kind, d.start, d.end, st.rate, d.probability))
