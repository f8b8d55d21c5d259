"""``vad``: two-stage voice activity detection, webrtcvad as a fast gate and Silero VAD confirming speech.

Each stream (by ``header.stream_id``) keeps its audio, as int16 mono at its own rate (8, 16, 32 or
48 kHz), in one :class:`AudioRing` (32/48 kHz streams also keep a float32 16 kHz ring for Silero, filled
by an exact integer decimator with 2 ms of look-ahead). Two stages read it:

1. **webrtcvad** classifies frames of ``frame_ms`` at the input rate.
2. **Silero VAD** (:mod:`kikimimi.models.silero`, 16 kHz, or 8 kHz for 8 kHz input) gives the speech
   probability of each 32 ms window. With ``gate`` on, a window is run only if webrtcvad heard a voiced
   frame ending inside it or in the ``gate_hangover_ms`` before it; a gated-off window counts as
   probability 0 and costs no Silero call. Silero's recurrent state is kept across skipped windows
   and, when the gate reopens after a skip, first warmed on up to ``lead_in_windows`` of the skipped
   windows (still in the ring); the gate stays open for a stream's first ``warmup_ms``, so the state
   adapts to the background before any window is skipped. All three were chosen by measurement on the
   AMI mixes (keeping the state beat resetting it; ``bench/vad.py --design`` shows the options).

The window probabilities go through :class:`~kikimimi.models.segmenter.SpeechSegmenter` (hysteresis
``threshold`` / ``neg_threshold``, hangover ``min_silence_ms``, ``min_speech_ms``, ``speech_pad_ms``),
which decides SPEECH_START (start_sample, mean probability so far) and SPEECH_END (start_sample,
end_sample exclusive, mean probability). With ``neural`` off the webrtcvad frames (probability 0 or 1)
are segmented instead; with ``gate`` off Silero runs on every window. All sample indices are on the
input stream's own clock; ``header.sample_index`` is the input sample up to which the deciding window
(and the decimator's look-ahead) reached. Every ``progress_ms`` of audio a PROGRESS event (a watermark:
everything decided up to its sample has been sent, with the latest probability) goes out too, so a
consumer reading the VAD next to a faster or slower input (the asr node next to the feature node) can
keep the two in step.

Batching: Silero windows of different streams wait in ``_ready`` and run in ONE session call when every
stream has one waiting, when a waiting stream's next chunk (or next window) arrives, on a tick, a
control or stop. END_OF_STREAM / FLUSH (a stream or "all") and ``on_stop`` close open segments at the
last sample seen. A jump forward in ``sample_index`` (dropped audio) or a rate change closes the open
segment and restarts the stream's state at the new position.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import webrtcvad

from kikimimi.engine.clock import Clock
from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import NO_SAMPLE, Control, ControlKind, Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.engine.node import Node, PortSpec, control_targets
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.ring import AudioRing
from kikimimi.models.decimate import Decimator
from kikimimi.models.pcm import float_to_int16
from kikimimi.models.segmenter import SegmentDecision, SpeechSegmenter
from kikimimi.models.silero import CONTEXT, WINDOW, SileroState, SileroVad

SAMPLE_RATES = (8000, 16000, 32000, 48000)
SILERO_RATE = {8000: (8000, 1), 16000: (16000, 1), 32000: (16000, 2), 48000: (16000, 3)}
"""Input rate -> (Silero rate, decimation factor)."""
RING_SECONDS = 2
TICK_NS = 20_000_000
_SCALE = np.float32(1.0 / 32768.0)


@dataclass(eq=False)
class _Stream:
    """Everything one stream keeps: its audio ring, stage states and segmenter."""

    sid: str
    rate: int
    origin: int                    # first input sample of this stream (or since its last restart)
    ring: AudioRing                # int16 mono at the input rate
    next_frame: int                # input sample where the next webrtcvad frame starts
    frame: int                     # webrtcvad frame length (input samples)
    vad: Any                       # webrtcvad.Vad, or None when no stage needs it
    seg: SpeechSegmenter
    srate: int                     # Silero's rate
    factor: int                    # input samples per Silero sample
    window: int                    # Silero window (Silero samples)
    silero: SileroState
    dec: Decimator | None = None   # 32/48 kHz only
    sring: AudioRing | None = None  # float32 Silero-rate audio (32/48 kHz only)
    s_origin: int = 0              # first Silero-clock sample
    next_dec: int = 0              # next Silero-clock sample to decimate
    next_win: int = 0              # Silero-clock start of the next window
    last_run: int = 0              # Silero-clock start of the last window Silero ran on (origin - window at first)
    voiced: deque[int] = field(default_factory=deque)  # ends of voiced frames still within the gate's reach
    hangover: int = 0              # gate hangover (input samples)
    lead_in: int = 0               # lead-in (Silero samples)
    warm_until: int = 0            # Silero-clock sample before which the gate is held open
    pending: list[int] | None = None  # Silero-clock starts waiting for the batched call (lead-in first)
    next_progress: int = 0         # input sample at or after which the next PROGRESS goes out


class TwoStageVad(Node):
    """webrtcvad gate + Silero VAD confirmation; emits VadEvent SPEECH_START / SPEECH_END per stream."""

    kind = "vad"
    help = "Two-stage VAD (webrtcvad gate, Silero confirmation): SPEECH_START / SPEECH_END per stream."
    inputs = (PortSpec("audio", (AudioChunk,), queue=QueueConfig.make("block", 256),
                       help="audio at 8, 16, 32 or 48 kHz, any channels, int16 or float32"),)
    outputs = (PortSpec("events", (VadEvent,), help="speech start and end events, input sample indices"),)
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
        p = self.p
        if p.neg_threshold is not None and p.neg_threshold > p.threshold:
            raise ParamError(f"node {name!r} (vad): neg_threshold={p.neg_threshold} is above threshold="
                             f"{p.threshold}; allowed: neg_threshold <= threshold (or null)")
        neg = p.neg_threshold if p.neg_threshold is not None else max(p.threshold - 0.15, 0.01)
        self._neg = min(neg, p.threshold)
        self.model: SileroVad | None = SileroVad(threads=p.threads) if p.neural else None
        self._neural, self._gate, self._batch = p.neural, p.gate, p.batch  # hot-path copies
        self._progress_every = p.progress_ms
        self._streams: dict[str, _Stream] = {}
        self._ready: list[_Stream] = []
        self.windows_decided = 0   # Silero windows decided, all streams (kept after streams end)
        self.windows_run = 0       # Silero windows run, lead-ins included
        if p.neural and p.batch:
            self.tick_interval_ns = TICK_NS

    # ------------------------------------------------------------------ stream state
    def _new_stream(self, sid: str, rate: int, origin: int) -> _Stream:
        p = self.p
        ring = AudioRing(RING_SECONDS * rate, channels=1, dtype=np.int16, start_index=origin)
        srate, factor = SILERO_RATE[rate]
        seg = SpeechSegmenter(p.threshold, self._neg, p.min_speech_ms * rate // 1000,
                              p.min_silence_ms * rate // 1000, p.speech_pad_ms * rate // 1000, origin)
        vad = webrtcvad.Vad(p.webrtc_mode) if (p.gate or not p.neural) else None
        st = _Stream(sid, rate, origin, ring, origin, rate * p.frame_ms // 1000, vad, seg,
                     srate, factor, WINDOW[srate], SileroState(srate))
        st.s_origin = st.next_dec = st.next_win = -(-origin // factor)
        st.last_run = st.s_origin - st.window
        st.hangover = p.gate_hangover_ms * rate // 1000
        st.lead_in = p.lead_in_windows * st.window
        st.warm_until = st.s_origin + p.warmup_ms * srate // 1000
        if factor > 1:
            st.dec = Decimator(factor)
            st.sring = AudioRing(RING_SECONDS * srate, channels=1, dtype=np.float32, start_index=st.s_origin)
        return st

    def _samples(self, st: _Stream, a: int, b: int) -> np.ndarray:
        """float32 Silero-rate samples [a, b) of the stream, zeros before its start."""
        lo = max(a, st.s_origin)
        if st.sring is not None:
            x = st.sring.view(lo, b)[:, 0]
        else:
            x = np.multiply(st.ring.view(lo, b)[:, 0], _SCALE, dtype=np.float32)
        return x if lo == a else np.concatenate((np.zeros(lo - a, np.float32), x))

    # ------------------------------------------------------------------ hooks
    def on_message(self, port: str, msg: Message) -> None:
        """Feed the chunk to its stream; decide what its new frames and windows say."""
        if not isinstance(msg, AudioChunk):
            return
        sid, rate, idx = msg.header.stream_id, msg.sample_rate, msg.header.sample_index
        if rate not in SAMPLE_RATES:
            self.stats.count_rejected("sample_rate")
            self.throttled(logging.WARNING, f"rate:{sid}:{rate}",
                           "vad %s: dropping audio of stream %r at %d Hz; allowed sample rates: %s",
                           self.name, sid, rate, ", ".join(map(str, SAMPLE_RATES)))
            return
        st = self._streams.get(sid)
        if st is not None and (st.rate != rate or idx > st.ring.write_index):
            self.throttled(logging.INFO, f"restart:{sid}", "vad %s: stream %r goes from sample %d at %d Hz to "
                           "sample %d at %d Hz; closing its segment and restarting it", self.name, sid,
                           st.ring.write_index, st.rate, idx, rate)
            self._run_batch()
            self._close(st)
            st = None
        if st is None:
            st = self._streams[sid] = self._new_stream(sid, rate, idx)
        skip = st.ring.write_index - idx  # overlap with audio already seen
        if skip >= msg.n_samples:
            return
        x = msg.samples[skip:] if skip > 0 else msg.samples
        if x.shape[1] > 1:
            x = x.mean(axis=1, dtype=np.float32, keepdims=True)
            x = np.rint(x).astype(np.int16) if msg.samples.dtype == np.int16 else float_to_int16(x)
        elif x.dtype != np.int16:
            x = float_to_int16(x)
        piece = st.ring.capacity // 2
        for i in range(0, x.shape[0], piece):
            if st.pending is not None:  # its window must be run before the ring moves on
                self._run_batch()
            st.ring.write(x[i:i + piece])
            self._consume(st)

    def on_control(self, port: str, ctrl: Control) -> None:
        """FLUSH closes the stream's (or every stream's) open segment; END_OF_STREAM also forgets it."""
        if ctrl.kind not in (ControlKind.FLUSH, ControlKind.END_OF_STREAM):
            return
        targets = control_targets(ctrl, self._streams)
        if targets:
            self._run_batch()
        for s in targets:
            self._close(self._streams[s])
            if ctrl.kind is ControlKind.END_OF_STREAM:
                del self._streams[s]

    def on_tick(self, now_ns: int) -> None:
        """Run windows still waiting for a batch."""
        if self._ready:
            self._run_batch()

    def on_stop(self) -> None:
        """Run what waits, then close every open segment at the last sample seen."""
        self._run_batch()
        for st in self._streams.values():
            self._close(st)
        self._streams.clear()

    # ------------------------------------------------------------------ stages
    def _consume(self, st: _Stream) -> None:
        """Classify the new webrtcvad frames, then decide (or queue for Silero) the new windows."""
        neural = self._neural
        if st.vad is not None:
            first, frame = st.next_frame, st.frame
            n = (st.ring.write_index - first) // frame
            if n:  # every whole new frame in one view; webrtcvad takes bytes
                st.next_frame = first + n * frame
                data, size, is_speech = st.ring.view(first, st.next_frame).tobytes(), 2 * frame, st.vad.is_speech
                for i in range(n):
                    end = first + (i + 1) * frame
                    voiced = is_speech(data[i * size:(i + 1) * size], st.rate)
                    if not neural:
                        self._publish(st, st.seg.push(end - frame, end, 1.0 if voiced else 0.0))
                        self._progress(st, end, 1.0 if voiced else 0.0)
                    elif voiced:
                        st.voiced.append(end)
        if not neural:
            return
        if st.dec is not None and st.sring is not None:
            k1 = st.dec.ready(st.next_dec, st.ring.write_index)
            if k1 > st.next_dec:
                a, b = st.dec.input_span(st.next_dec, k1)
                lo = max(a, st.origin)
                x = np.multiply(st.ring.view(lo, b)[:, 0], _SCALE, dtype=np.float32)
                if lo > a:
                    x = np.concatenate((np.zeros(lo - a, np.float32), x))
                st.sring.write(st.dec.apply(x, st.next_dec, k1))
                st.next_dec = k1
            available = st.next_dec
        else:
            available = st.ring.write_index
        win, f, hang = st.window, st.factor, st.hangover
        while st.next_win + win <= available:
            k = st.next_win
            st.next_win = k + win
            if st.pending is not None:
                self._run_batch()
            self.windows_decided += 1
            if self._gate and k >= st.warm_until:
                v, lo = st.voiced, k * f - hang
                while v and v[0] <= lo:
                    v.popleft()
                if not (v and v[0] <= (k + win) * f):
                    self._publish(st, st.seg.push(k * f, (k + win) * f, 0.0, self._decision(st, k)))
                    self._progress(st, self._decision(st, k), 0.0)
                    continue
            first = k if st.last_run == k - win else max(k - st.lead_in, st.last_run + win, st.s_origin)
            st.pending = list(range(first, k + 1, win))
            self._ready.append(st)
            if not self._batch or len(self._ready) >= len(self._streams):
                self._run_batch()

    def _decision(self, st: _Stream, k: int) -> int:
        """Input sample up to which window ``k`` (plus the decimator's look-ahead) reaches."""
        return (k + st.window) * st.factor + (st.dec.half if st.dec is not None else 0)

    def _run_batch(self) -> None:
        """Run every waiting stream's windows: one session call per round and Silero rate (a lead-in makes
        a stream take part in several rounds). Only a stream's own window, its last, goes to its
        segmenter: the lead-in windows were decided (gated off) earlier and only warm the state."""
        ready, self._ready = self._ready, []
        if len(ready) == 1 and ready[0].pending is not None and len(ready[0].pending) == 1 and self.model:
            st = ready[0]  # the common case: one stream, one window
            k, st.pending = st.pending[0], None
            self._run_group(self.model, [(st, k)])
            return
        while ready and self.model is not None:
            groups: dict[int, list[tuple[_Stream, int]]] = {}
            later = []
            for st in ready:
                if not st.pending:
                    st.pending = None
                    continue
                groups.setdefault(st.srate, []).append((st, st.pending.pop(0)))
                if st.pending:
                    later.append(st)
                else:
                    st.pending = None
            for items in groups.values():
                self._run_group(self.model, items)
            ready = later

    def _run_group(self, model: SileroVad, items: list[tuple[_Stream, int]]) -> None:
        """One session call for one window (Silero-clock start ``k``) of each stream, all at one rate."""
        st, k = items[0]
        ctx, win = CONTEXT[st.srate], st.window
        if len(items) == 1:
            x = self._samples(st, k - ctx, k + win)[None]
        else:
            x = np.stack([self._samples(s, j - ctx, j + win) for s, j in items])
        probs = model.run([s.silero for s, _ in items], x)
        self.windows_run += len(items)
        for (st, k), prob in zip(items, probs, strict=True):
            st.last_run = k
            if st.pending is None:
                self._publish(st, st.seg.push(k * st.factor, (k + win) * st.factor, float(prob),
                                              self._decision(st, k)))
                self._progress(st, self._decision(st, k), float(prob))

    def _close(self, st: _Stream) -> None:
        """Close the stream's open segment, decided at the last sample seen."""
        self._publish(st, st.seg.close(st.ring.write_index))

    def _progress(self, st: _Stream, decision: int, prob: float) -> None:
        """A PROGRESS watermark at ``decision`` if ``progress_ms`` of audio passed since the last one."""
        if self._progress_every <= 0 or decision < st.next_progress:
            return
        every = self._progress_every * st.rate // 1000
        st.next_progress += every         # on average one per progress_ms, on window boundaries
        if st.next_progress <= decision:
            st.next_progress = decision + every
        header = self.header("events", st.sid, decision)
        self.emit("events", VadEvent(header, SpeechEventKind.PROGRESS, decision, NO_SAMPLE, st.rate,
                                     min(1.0, max(0.0, prob))))

    def _publish(self, st: _Stream, decisions: list[SegmentDecision]) -> None:
        for d in decisions:
            header = self.header("events", st.sid, d.decision)
            self.emit("events", VadEvent(header, d.kind, d.start, d.end, st.rate, d.probability))
