"""Incremental feature extraction over engine rings: the base of the Whisper and Kaldi streams.

Audio goes into an :class:`AudioRing` (the only copy of it the stream keeps); every frame whose
samples are all there is computed once, with the same kernel and the same samples as the
whole-signal function, and written to a feature ring (an ``AudioRing`` of ``n_bins`` float32
channels) addressed by absolute frame index. Accepting a chunk costs the chunk's own frames plus
a bounded look-back (less than one window and one hop), however long the stream has run.

A stream is a sequence of *segments* (utterances): :meth:`FeatureStream.flush` ends the current one
with the whole-signal padding rules and the next sample accepted starts a new one, whose local frame
0 gets the next frame index. Frame indices keep counting across segments; :meth:`reset` starts over
at frame 0 with new rings.
"""

from __future__ import annotations

import numpy as np

from kikimimi.engine.errors import ParamError
from kikimimi.engine.ring import AudioRing
from kikimimi.models.frontend.spec import FrontEnd, Scratch, as_signal

MIN_AUDIO_CAPACITY = 8192


class FeatureStream:
    """Base of :class:`WhisperMelStream` and :class:`KaldiFbankStream`; subclasses say which frames are
    ready and how to compute a range of a segment's frames (``_ready``, ``_final``, ``_compute``)."""

    def __init__(self, frontend: FrontEnd, ring_frames: int) -> None:
        self.frontend = frontend
        look_back = 2 * frontend.win + frontend.hop       # > what any pending frame can still need
        self._audio_capacity = max(MIN_AUDIO_CAPACITY, 4 * look_back)
        self._piece = self._audio_capacity - look_back     # samples written between two computations
        self._max_new = self._piece // frontend.hop + 8    # frames one piece (or a flush) can complete
        if (not isinstance(ring_frames, (int, np.integer)) or isinstance(ring_frames, bool)
                or ring_frames < self._max_new):
            raise ParamError(f"ring_frames={ring_frames!r} is not allowed; allowed: an int >= {self._max_new}")
        self._ring_frames = int(ring_frames)
        self._scratch: Scratch = frontend.scratch()
        self._out = np.zeros((self._max_new, frontend.n_bins), np.float32)
        self.reset()

    # ------------------------------------------------------------------ public state
    @property
    def audio(self) -> AudioRing:
        """The audio ring (mono float32), addressed by sample index since the last reset."""
        return self._audio

    @property
    def features(self) -> AudioRing:
        """The feature ring (n_bins float32 channels), addressed by frame index: ``features.view(a, b)``
        is a zero-copy (b - a, n_bins) view of frames [a, b), valid until the ring laps them."""
        return self._features

    @property
    def n_frames(self) -> int:
        """Frames produced since the last reset: the index the next frame will get."""
        return self._features.write_index

    @property
    def hop(self) -> int:
        return self.frontend.hop

    @property
    def n_bins(self) -> int:
        return self.frontend.n_bins

    @property
    def segment_start_sample(self) -> int:
        """Audio-ring index of the current segment's first sample."""
        return self._seg_sample

    @property
    def segment_start_frame(self) -> int:
        """Frame index of the current segment's first frame (centred/starting at its first sample)."""
        return self._seg_frame

    @property
    def pending_samples(self) -> int:
        """Samples of the current segment accepted so far."""
        return self._audio.write_index - self._seg_sample

    # ------------------------------------------------------------------ operations
    def reset(self) -> None:
        """Forget everything: new, empty rings; the next sample is sample 0 and the next frame frame 0."""
        self._audio = AudioRing(self._audio_capacity, 1, np.float32)
        self._features = AudioRing(self._ring_frames, self.frontend.n_bins, np.float32)
        self._seg_sample = 0
        self._seg_frame = 0

    def accept(self, samples: np.ndarray) -> np.ndarray:
        """Append mono float samples; return the frames they complete, shape (n_new, n_bins).

        The new frames are ``[n_frames - n_new, n_frames)``. The result is a zero-copy view of the
        feature ring (valid until the ring laps it), or a new array if one call completes more frames
        than the ring holds.
        """
        x = as_signal(samples, "samples")
        n = x.shape[0]
        feats = self._features
        start = feats.write_index
        if n <= self._piece:            # the usual case: one write, one computation
            self._audio.write(x)
            self._produce(False)
            return feats.view(start, feats.write_index)
        local_next = start - self._seg_frame
        expected = self._ready(self._audio.write_index - self._seg_sample + n) - local_next
        collect = np.empty((expected, self.n_bins), np.float32) if expected > self._ring_frames else None
        for pos in range(0, n, self._piece):
            self._audio.write(x[pos:pos + self._piece])
            done = feats.write_index
            self._produce(False)
            if collect is not None:
                collect[done - start:feats.write_index - start] = feats.view(done, feats.write_index)
        return collect if collect is not None else feats.view(start, feats.write_index)

    def flush(self) -> np.ndarray:
        """End the segment: return its remaining frames (whole-signal padding) and start a new segment."""
        start = self._features.write_index
        if self._audio.write_index > self._seg_sample:
            self._produce(True)
        self._seg_sample = self._audio.write_index
        self._seg_frame = self._features.write_index
        return self._features.view(start, self._features.write_index)

    # ------------------------------------------------------------------ internals
    def _produce(self, final: bool) -> None:
        """Compute the frames the segment's samples now complete (all of them if ``final``) into the ring."""
        avail = self._audio.write_index - self._seg_sample
        t0 = self._features.write_index - self._seg_frame
        t1 = self._final(avail) if final else self._ready(avail)
        if t1 > t0:
            out = self._out[:t1 - t0]
            self._compute(t0, t1, avail, final, out)
            self._features.write(out)

    def _segment(self, a: int, b: int) -> np.ndarray:
        """Zero-copy 1-D view of the current segment's samples [a, b) (local indices)."""
        return self._audio.view(self._seg_sample + a, self._seg_sample + b).reshape(-1)

    def _ready(self, avail: int) -> int:
        """Local frames computable from the segment's first ``avail`` samples before its end is known."""
        raise NotImplementedError

    def _final(self, n: int) -> int:
        """Local frames of a segment of ``n`` samples once it has ended."""
        raise NotImplementedError

    def _compute(self, t0: int, t1: int, avail: int, final: bool, out: np.ndarray) -> None:
        """Local frames [t0, t1) of the current segment into ``out``."""
        raise NotImplementedError
