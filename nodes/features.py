"""``features``: Whisper log10-mel or Kaldi fbank frames from 16 kHz audio, per stream, as it arrives.

Each stream (by ``header.stream_id``) has its own :class:`~kikimimi.models.frontend.FrontEndStream`
(the model does the work; this node turns chunks into ``accept`` calls and results into messages):
its audio lives only in that stream's audio ring and its frames in a feature ring addressed by
frame index (:meth:`FeatureNode.feature_ring`). For every chunk the node emits one
:class:`Features` message with the frames the chunk completed (none: no message; the frames of a gap
before the chunk go in a message of their own, first): frame ``i`` of a stream is bit-identical to
frame ``i`` of the whole-signal function run on the stream's audio.

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
from typing import Any

from kikimimi.engine.clock import Clock
from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import Header, Message
from kikimimi.engine.msgs.audio import FEATURE_KINDS, AudioChunk, Features
from kikimimi.engine.node import PortSpec
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.ring import AudioRing
from kikimimi.engine.streams import StreamNode
from kikimimi.models.frontend import WHISPER_KIND, FeatureFrames, FeatureFrontEnd, FrontEndConfig, FrontEndStream

SAMPLE_RATE = 16000


class FeatureNode(StreamNode[FrontEndStream]):
    """Streaming log-mel features (Whisper or Kaldi fbank) per stream; see the module docstring."""

    kind = "features"
    help = "Whisper log10-mel or Kaldi fbank frames of 16 kHz audio, per stream, frame-exact as it streams."
    inputs = (PortSpec("audio", (AudioChunk,), queue=QueueConfig.make("block", 256),
                       help="16 kHz audio, int16 or float32, any channels (averaged)", rates=(SAMPLE_RATE,)),)
    outputs = (PortSpec("features", (Features,), help="new feature frames of each chunk"),)
    params = (
        Param("kind", str, WHISPER_KIND, "which features", choices=FEATURE_KINDS),
        Param("n_mels", int, 80, "mel bins: 80 or 128 for whisper_log10_mel, 1..126 for kaldi_fbank"),
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
        try:
            config = FrontEndConfig(p.kind, p.n_mels, p.ring_seconds, p.int16_scale, p.max_gap_ms)
        except ParamError as e:
            raise ParamError(f"node {name!r} (features): {e}") from e
        self.front_end = FeatureFrontEnd(config)   # builds the first stream's front end: bad sizes fail here

    # ------------------------------------------------------------------ public
    def feature_ring(self, stream_id: str) -> AudioRing | None:
        """The feature ring of ``stream_id`` (frames by index; zero-copy views), or None if unknown."""
        st = self.streams.get(stream_id)
        return None if st is None else st.feature_ring

    # ------------------------------------------------------------------ hooks
    def on_start(self) -> None:
        """Load the compiled kernels and run them once, so the first real chunk is not slow; the first
        stream to arrive gets a front end allocated here."""
        w = self.front_end.warmup()
        Features(Header("warmup", 0, 0, self.clock.now_ns(), self.name), w.frames, self.p.kind, 0, w.hop,
                 SAMPLE_RATE)  # built, not sent: the message path's first call is slow too

    def open_stream(self, sid: str, msg: Message) -> FrontEndStream:
        return self.front_end.new_stream()

    def on_stream_message(self, port: str, msg: Message, st: FrontEndStream) -> None:
        """Give the chunk to its stream's front end and emit the frames it completes."""
        if not isinstance(msg, AudioChunk):
            return
        res = st.accept(msg.samples, msg.header.sample_index)
        if res is None:
            return
        sid = msg.header.stream_id
        gap = res.gap
        if gap is not None and gap.zero_filled:
            self.throttled(logging.INFO, f"gap:{sid}", "features %s: stream %r jumps from sample %d to %d; "
                           "zero-filling", self.name, sid, gap.expected, gap.got)
        elif gap is not None:
            self.throttled(logging.INFO, f"gap:{sid}", "features %s: stream %r jumps from sample %d to %d; "
                           "starting a new utterance", self.name, sid, gap.expected, gap.got)
        for part in res.frames:
            self._send(sid, part)

    def flush_stream(self, sid: str, st: FrontEndStream) -> None:
        """FLUSH, END_OF_STREAM and stop: the utterance's last frames (whole-signal end padding)."""
        part = st.flush()
        if part is not None:
            self._send(sid, part)

    # ------------------------------------------------------------------ internals
    def _send(self, sid: str, part: FeatureFrames) -> None:
        frames = part.frames
        if self.p.zero_copy:
            frames = frames.view()
            frames.flags.writeable = False
        else:
            frames = frames.copy()
        header = self.header("features", sid, part.sample_index)
        self.emit("features", Features(header, frames, self.p.kind, part.start_frame, part.hop, SAMPLE_RATE))
