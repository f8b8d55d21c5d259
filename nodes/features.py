"""``features``: Whisper log10-mel or Kaldi fbank frames from 16 kHz audio, per stream, as it arrives.

Each stream (by ``header.stream_id``) has its own :class:`~kikimimi.models.frontend.FeatureStream`:
its audio lives only in that stream's audio ring and its frames in a feature ring addressed by
frame index (:meth:`FeatureNode.feature_ring`). For every chunk the node emits one
:class:`Features` message with the frames the chunk completed (none: no message): frame ``i`` of
a stream is bit-identical to frame ``i`` of the whole-signal function run on the stream's audio.

* Input: 16 kHz AudioChunk, int16 or float32, any channels (averaged to mono). Other sample
  rates are rejected (counted as ``rejected``/``sample_rate`` and logged, throttled); later chunks
  of the right rate are used as usual.
* Scale (``int16_scale``): False feeds [-1, 1] values (int16 / 32768, float32 as-is); True feeds
  int16-range values (int16 as-is, float32 * 32768). Unset: False for Whisper (what it was trained
  on), True for Kaldi fbank (what Kaldi, HuBERT-family and AVSR front ends expect).
* Timing: ``start_frame`` counts the stream's frames from 0 and ``hop`` is 160 samples. Frame
  ``start_frame`` sits at ``header.sample_index`` on the stream's audio clock (Whisper: window
  centre; Kaldi: window start): the utterance's first sample plus (frames since the utterance
  began) * hop, i.e. ``start_frame * hop`` for a stream that starts at sample 0 and never flushes.
* FLUSH or END_OF_STREAM for a stream (or for "all"), and ``on_stop``, end the utterance: its last
  frames are computed with the whole-signal end padding and emitted. After a FLUSH the next chunk
  starts a new utterance (frame indices keep counting); END_OF_STREAM also forgets the stream.
* Gaps in a stream's sample clock up to ``max_gap_ms`` are filled with zeros (frames stay on the
  clock's grid); a longer gap ends the utterance and starts a new one at the new position. Audio
  that overlaps what was already seen is skipped.
* ``zero_copy``: False (default) gives every message its own copy of the frames (a few hundred
  bytes per chunk); True sends read-only views into the feature ring, valid for ``ring_seconds`` of
  audio after they were emitted: for consumers that keep up and do not hold on to messages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from kikimimi.engine.clock import Clock
from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import Control, ControlKind, Header, Message
from kikimimi.engine.msgs.audio import FEATURE_KINDS, AudioChunk, Features
from kikimimi.engine.node import Node, PortSpec, control_targets
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.ring import AudioRing
from kikimimi.models.frontend import (
    KALDI_KIND,
    WHISPER_KIND,
    FeatureStream,
    KaldiFbankStream,
    WhisperMelStream,
    warmup,
)
from kikimimi.models.frontend.mel import KALDI_MAX_MELS, WHISPER_N_MELS

SAMPLE_RATE = 16000
FRAMES_PER_SECOND = 100


@dataclass
class _Stream:
    """One stream's front end and where its current utterance sits on the stream's sample clock."""

    fe: FeatureStream
    next_sample: int | None   # sample index the next chunk should start at; None: a new utterance begins
    origin: int = 0           # sample index of the current utterance's first sample


class FeatureNode(Node):
    """Streaming log-mel features (Whisper or Kaldi fbank) per stream; see the module docstring."""

    kind = "features"
    help = "Whisper log10-mel or Kaldi fbank frames of 16 kHz audio, per stream, frame-exact as it streams."
    inputs = (PortSpec("audio", (AudioChunk,), queue=QueueConfig.make("block", 256),
                       help="16 kHz audio, int16 or float32, any channels (averaged)"),)
    outputs = (PortSpec("features", (Features,), help="new feature frames of each chunk"),)
    params = (
        Param("kind", str, WHISPER_KIND, "which features", choices=FEATURE_KINDS),
        Param("n_mels", int, 80, "mel bins: 80 or 128 for whisper_log10_mel, 1..256 for kaldi_fbank"),
        Param("ring_seconds", float, 30.0, "feature ring capacity per stream (s of frames)", min=2.0, max=3600.0),
        Param("int16_scale", bool, None, "feed int16-range values (true) or [-1, 1] (false); "
              "null: false for whisper, true for kaldi", nullable=True),
        Param("max_gap_ms", int, 1000, "gaps in a stream up to this long are zero-filled; longer ones "
              "start a new utterance", min=0),
        Param("zero_copy", bool, False, "emit views into the feature ring instead of copies"),
    )

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        p = self.p
        if p.kind == WHISPER_KIND and p.n_mels not in WHISPER_N_MELS:
            raise ParamError(f"node {name!r} (features): n_mels={p.n_mels} is not allowed for {WHISPER_KIND}; "
                             f"allowed: {', '.join(map(str, WHISPER_N_MELS))}")
        if p.kind == KALDI_KIND and not 1 <= p.n_mels <= KALDI_MAX_MELS:
            raise ParamError(f"node {name!r} (features): n_mels={p.n_mels} is not allowed for {KALDI_KIND}; "
                             f"allowed: 1 to {KALDI_MAX_MELS}")
        int16 = p.int16_scale if p.int16_scale is not None else p.kind == KALDI_KIND
        self._int16_scale = bool(int16)
        self._ring_frames = round(p.ring_seconds * FRAMES_PER_SECOND)
        self._max_gap = p.max_gap_ms * SAMPLE_RATE // 1000
        self._streams: dict[str, _Stream] = {}
        self._spare: FeatureStream | None = self._new_fe()  # built now: bad sizes fail here, not on the first chunk

    # ------------------------------------------------------------------ public
    def feature_ring(self, stream_id: str) -> AudioRing | None:
        """The feature ring of ``stream_id`` (frames by index; zero-copy views), or None if unknown."""
        st = self._streams.get(stream_id)
        return None if st is None else st.fe.features

    # ------------------------------------------------------------------ hooks
    def on_start(self) -> None:
        """Load the compiled kernels and run them once, so the first real chunk is not slow; the first
        stream to arrive gets a front end allocated here."""
        warmup()
        fe = self._new_fe()
        frames = fe.accept(np.zeros(4000, np.float32))
        fe.flush()
        Features(Header("warmup", 0, 0, self.clock.now_ns(), self.name), frames.copy(), self.p.kind, 0, fe.hop,
                 SAMPLE_RATE)  # built, not sent: the message path's first call is slow too
        if self._spare is None:
            self._spare = self._new_fe()

    def on_message(self, port: str, msg: Message) -> None:
        """Append the chunk to its stream and emit the frames it completes."""
        if not isinstance(msg, AudioChunk):
            return
        sid = msg.header.stream_id
        if msg.sample_rate != SAMPLE_RATE:
            self.stats.count_rejected("sample_rate")
            self.throttled(logging.WARNING, f"rate:{sid}:{msg.sample_rate}",
                           "features %s: dropping audio of stream %r at %d Hz; the sample rate must be %d Hz",
                           self.name, sid, msg.sample_rate, SAMPLE_RATE)
            return
        st = self._streams.get(sid)
        if st is None:
            fe, self._spare = self._spare or self._new_fe(), None
            st = self._streams[sid] = _Stream(fe, None)
        x = self._mono(msg.samples)
        idx = msg.header.sample_index
        if st.next_sample is None:
            st.next_sample = st.origin = idx
        elif idx != st.next_sample:
            skip = st.next_sample - idx
            if skip >= x.shape[0]:
                return
            if skip > 0:                # overlaps audio already seen: keep only the new part
                x = x[skip:]
            elif -skip <= self._max_gap:
                self.throttled(logging.INFO, f"gap:{sid}", "features %s: stream %r jumps from sample %d to %d; "
                               "zero-filling", self.name, sid, st.next_sample, idx)
                self._feed(sid, st, np.zeros(-skip, np.float32))
            else:
                self.throttled(logging.INFO, f"gap:{sid}", "features %s: stream %r jumps from sample %d to %d; "
                               "starting a new utterance", self.name, sid, st.next_sample, idx)
                self._flush(sid, st)
                st.next_sample = st.origin = idx
        self._feed(sid, st, x)

    def on_control(self, port: str, ctrl: Control) -> None:
        """FLUSH ends the stream's utterance; END_OF_STREAM also forgets the stream."""
        if ctrl.kind not in (ControlKind.FLUSH, ControlKind.END_OF_STREAM):
            return
        targets = control_targets(ctrl, self._streams)
        for s in targets:
            self._flush(s, self._streams[s])
            if ctrl.kind is ControlKind.END_OF_STREAM:
                del self._streams[s]

    def on_stop(self) -> None:
        """Emit the last frames of every stream."""
        for sid, st in self._streams.items():
            self._flush(sid, st)
        self._streams.clear()

    # ------------------------------------------------------------------ internals
    def _new_fe(self) -> FeatureStream:
        if self.p.kind == KALDI_KIND:
            return KaldiFbankStream(self.p.n_mels, SAMPLE_RATE, self._ring_frames)
        return WhisperMelStream(self.p.n_mels, self._ring_frames)

    def _mono(self, s: np.ndarray) -> np.ndarray:
        """Samples as contiguous mono float32 at the configured scale."""
        x = s.mean(axis=1, dtype=np.float32) if s.shape[1] > 1 else s[:, 0]
        if s.dtype == np.int16:
            scale = np.float32(1.0 if self._int16_scale else 1.0 / 32768.0)
        else:
            scale = np.float32(32768.0 if self._int16_scale else 1.0)
        if scale != 1.0 or x.dtype != np.float32:
            return np.multiply(x, scale, dtype=np.float32)
        return np.ascontiguousarray(x)

    def _feed(self, sid: str, st: _Stream, x: np.ndarray) -> None:
        fe = st.fe
        start = fe.n_frames
        local = start - fe.segment_start_frame
        frames = fe.accept(x)
        st.next_sample = (st.next_sample or 0) + x.shape[0]
        self._send(sid, st, frames, start, local)

    def _flush(self, sid: str, st: _Stream) -> None:
        fe = st.fe
        start = fe.n_frames
        local = start - fe.segment_start_frame
        frames = fe.flush()
        self._send(sid, st, frames, start, local)
        st.next_sample = None

    def _send(self, sid: str, st: _Stream, frames: np.ndarray, start: int, local: int) -> None:
        if not frames.shape[0]:
            return
        if self.p.zero_copy:
            frames = frames.view()
            frames.flags.writeable = False
        else:
            frames = frames.copy()
        hop = st.fe.hop
        header = self.header("features", sid, st.origin + local * hop)
        self.emit("features", Features(header, frames, self.p.kind, start, hop, SAMPLE_RATE))
