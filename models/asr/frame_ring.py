"""A stream's feature frames, held in a bounded ring by frame index, and the map from frames to its samples.

:class:`FrameRing` keeps the newest ``capacity`` frames of ``n_bins`` float32 values (an
:class:`~kikimimi.engine.ring.AudioRing` addressed by frame index) and maps frame indices to the stream's
sample clock through anchors, one per place where the map restarts (taken from the Features headers:
frame ``f`` of a message starting at frame ``f0`` and sample ``s0`` sits at ``s0 + (f - f0) * hop``).
A gap in the frame clock is filled with silence (``silence`` in every bin); frames far ahead of the ring,
or behind its oldest, start a new ring (the stream's clock started over).
"""

from __future__ import annotations

import numpy as np

from kikimimi.engine.errors import ParamError
from kikimimi.engine.ring import AudioRing


class FrameRing:
    """Frames by index, and their samples; see the module docstring."""

    def __init__(self, capacity: int, n_bins: int, hop: int, silence: float) -> None:
        self.capacity, self.n_bins, self.hop, self.silence = capacity, n_bins, hop, silence
        self.ring: AudioRing | None = None
        self._anchors: list[tuple[int, int]] = []   # (frame, sample) where the frame->sample map restarts

    def reset(self) -> None:
        """Forget every frame and anchor."""
        self.ring = None
        self._anchors = []

    @property
    def frames_end(self) -> int:
        """Index one past the newest frame (0 before any)."""
        return 0 if self.ring is None else self.ring.write_index

    def sample_of(self, frame: int) -> int:
        """Sample index (stream clock) of frame ``frame``'s centre."""
        if not self._anchors:
            return frame * self.hop
        f0, s0 = self._anchors[0]
        for f, s in self._anchors:
            if f <= frame:
                f0, s0 = f, s
            else:
                break
        return s0 + (frame - f0) * self.hop

    def frame_of(self, sample: int) -> int:
        """First frame whose centre is at or after ``sample`` (stream clock)."""
        if not self._anchors:
            return -(-sample // self.hop)
        f0, s0 = self._anchors[0]
        for f, s in self._anchors:
            if s <= sample:
                f0, s0 = f, s
            else:
                break
        return f0 + max(0, -(-(sample - s0) // self.hop))

    def accept(self, frames: np.ndarray, start_frame: int, sample_index: int) -> None:
        """Write frames ``[start_frame, start_frame + n)``, frame ``start_frame`` at ``sample_index``."""
        n = int(frames.shape[0])
        if frames.ndim != 2 or frames.shape[1] != self.n_bins:
            raise ParamError(f"frames must have shape (n, {self.n_bins}), got {frames.shape}")
        if self.ring is None or start_frame > self.ring.write_index + self.capacity // 2 \
                or start_frame < self.ring.oldest_index:
            self.ring = AudioRing(self.capacity, self.n_bins, np.float32, start_index=start_frame)
            self._anchors = []
        ring = self.ring
        if start_frame > ring.write_index:       # a gap in the frame clock: fill with silence
            ring.write(np.full((start_frame - ring.write_index, self.n_bins), self.silence, np.float32))
        skip = ring.write_index - start_frame
        if skip >= n:
            return
        if not self._anchors or self.sample_of(start_frame) != sample_index:
            self._anchors.append((start_frame, sample_index))
            oldest = ring.oldest_index
            while len(self._anchors) > 1 and self._anchors[1][0] <= oldest:
                self._anchors.pop(0)
        ring.write(frames[skip:] if skip > 0 else frames)
