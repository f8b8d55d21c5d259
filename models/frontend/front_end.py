"""The streaming feature front end: 16 kHz audio on a sample clock in, feature frames by index out.

:class:`FeatureFrontEnd` (one per configuration, shared) makes a :class:`FrontEndStream` per audio
stream. A stream wraps a :class:`~kikimimi.models.frontend.FeatureStream` (Whisper log-mel or Kaldi
fbank) and keeps the bookkeeping between the stream's sample clock and its frames::

    fe = FeatureFrontEnd(FrontEndConfig(kind="whisper_log10_mel", n_mels=80))
    st = fe.new_stream()
    res = st.accept(samples, sample_index)   # AcceptResult | None
    for part in res.frames: ...              # FeatureFrames: frames, start_frame, sample_index, hop
    tail = st.flush()                        # FeatureFrames | None: the utterance's last frames

* Samples: int16 or float (float32 as is), shape (n,) or (n, channels); channels are averaged. Scale
  (``int16_scale``): False feeds [-1, 1] values (int16 / 32768, floats as they are); True feeds
  int16-range values (int16 as is, floats * 32768). None: False for Whisper, True for Kaldi fbank.
* Frame indices count the stream's frames from 0 across utterances. The first frame of a result sits
  at ``sample_index`` on the stream's clock: the utterance's first sample plus (frames since the
  utterance began) * hop (Whisper: window centre; Kaldi: window start).
* The first chunk, and the first after :meth:`FrontEndStream.flush`, starts an utterance at its
  ``sample_index``. A later chunk that starts after the expected sample leaves a gap: up to
  ``max_gap_ms`` it is filled with zeros (frames stay on the clock's grid); a longer one ends the
  utterance (its last frames, with whole-signal end padding) and starts a new one at the chunk. Samples
  that overlap what was already accepted are skipped. Either way the result says so (:class:`Gap`).
* Frame ``i`` of a stream is bit-identical to frame ``i`` of the whole-signal function
  (:func:`~kikimimi.models.frontend.whisper_log10_mel`, :func:`~kikimimi.models.frontend.kaldi_fbank`) run
  on each utterance's audio (gaps zero-filled), at the configured scale.
* Results hold views into the stream's feature ring (:attr:`FrontEndStream.feature_ring`), valid for
  ``ring_seconds`` of audio after they were made (copy what must live longer; do not write into them),
  or new arrays where one chunk completes more frames than the ring holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kikimimi.engine.errors import ParamError
from kikimimi.engine.ring import AudioRing
from kikimimi.models.frontend.kaldi import KaldiFbankStream, kaldi_fbank
from kikimimi.models.frontend.mel import WHISPER_N_MELS, kaldi_max_mels
from kikimimi.models.frontend.spec import KALDI_KIND, WHISPER_KIND
from kikimimi.models.frontend.stream import FeatureStream
from kikimimi.models.frontend.whisper import WhisperMelStream, whisper_log10_mel, whisper_normalize

SAMPLE_RATE = 16000
FRAMES_PER_SECOND = 100
FRONT_END_KINDS = (WHISPER_KIND, KALDI_KIND)
RING_SECONDS = (2.0, 3600.0)   # inclusive range of ring_seconds
WARMUP_SAMPLES = 4000


def warmup() -> None:
    """Run every kernel once on a short buffer (loads the cached machine code, builds FFT plans)."""
    x = np.zeros(1600, np.float32)
    x[::7] = 0.01
    whisper_normalize(whisper_log10_mel(x, 80))
    whisper_log10_mel(x, 128)
    kaldi_fbank(x, 80)


@dataclass(frozen=True, slots=True)
class FrontEndConfig:
    """What a :class:`FeatureFrontEnd` computes; checked when made (:class:`ParamError` names the bad value).

    ``kind``: whisper_log10_mel or kaldi_fbank. ``n_mels``: 40, 80 or 128 for Whisper, 1 to 126 for
    Kaldi (at 16 kHz more would leave a bin empty, which Kaldi refuses too). ``ring_seconds``: feature
    ring capacity per stream (seconds of frames, 2 to 3600).
    ``int16_scale``: feed int16-range values (True) or [-1, 1] (False); None: False for Whisper, True
    for Kaldi. ``max_gap_ms``: gaps up to this long are zero-filled, longer ones start a new utterance.
    """

    kind: str = WHISPER_KIND
    n_mels: int = 80
    ring_seconds: float = 30.0
    int16_scale: bool | None = None
    max_gap_ms: int = 1000

    def __post_init__(self) -> None:
        if self.kind not in FRONT_END_KINDS:
            raise ParamError(f"kind={self.kind!r} is not allowed; allowed: {', '.join(FRONT_END_KINDS)}")
        n = self.n_mels
        if not isinstance(n, int) or isinstance(n, bool):
            raise ParamError(f"n_mels={n!r} is not allowed; allowed: an int")
        if self.kind == WHISPER_KIND and n not in WHISPER_N_MELS:
            raise ParamError(f"n_mels={n} is not allowed for {WHISPER_KIND}; "
                             f"allowed: {', '.join(map(str, WHISPER_N_MELS))}")
        if self.kind == KALDI_KIND and not 1 <= n <= kaldi_max_mels():
            raise ParamError(f"n_mels={n} is not allowed for {KALDI_KIND}; allowed: 1 to {kaldi_max_mels()} "
                             "(more would leave a mel bin with no FFT bin at 16 kHz)")
        r = self.ring_seconds
        lo, hi = RING_SECONDS
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or not lo <= r <= hi:
            raise ParamError(f"ring_seconds={r!r} is not allowed; allowed: a number from {lo:g} to {hi:g}")
        if self.int16_scale is not None and not isinstance(self.int16_scale, bool):
            raise ParamError(f"int16_scale={self.int16_scale!r} is not allowed; allowed: true, false or null")
        g = self.max_gap_ms
        if not isinstance(g, int) or isinstance(g, bool) or g < 0:
            raise ParamError(f"max_gap_ms={g!r} is not allowed; allowed: an int >= 0")

    @property
    def scale_int16(self) -> bool:
        """Whether samples are fed in int16 range (``int16_scale``, or its default for ``kind``)."""
        return self.int16_scale if self.int16_scale is not None else self.kind == KALDI_KIND

    @property
    def ring_frames(self) -> int:
        return round(self.ring_seconds * FRAMES_PER_SECOND)

    @property
    def max_gap_samples(self) -> int:
        return self.max_gap_ms * SAMPLE_RATE // 1000


@dataclass(frozen=True, slots=True, eq=False)
class FeatureFrames:
    """Consecutive frames of one utterance: ``frames`` (n, n_mels) float32 are the stream's frames
    ``start_frame`` .. ``start_frame + n - 1``; the first sits at ``sample_index``, the others every ``hop``."""

    frames: np.ndarray
    start_frame: int
    sample_index: int
    hop: int

    @property
    def n_frames(self) -> int:
        return self.frames.shape[0]


@dataclass(frozen=True, slots=True)
class Gap:
    """A chunk did not start where the stream expected (``expected``) but at ``got`` > expected:
    ``zero_filled`` True: the gap was filled with zeros; False: the utterance ended and a new one began."""

    expected: int
    got: int
    zero_filled: bool


@dataclass(frozen=True, slots=True, eq=False)
class AcceptResult:
    """What one :meth:`FrontEndStream.accept` produced: the frames, in order (a gap's frames, i.e. the
    zero fill or the ended utterance's last frames, come before the chunk's own; parts with no frames are
    left out), and the gap before the chunk, if any."""

    frames: tuple[FeatureFrames, ...]
    gap: Gap | None = None


class FrontEndStream:
    """One audio stream's front end; made by :meth:`FeatureFrontEnd.new_stream`. See the module docstring."""

    def __init__(self, config: FrontEndConfig, fe: FeatureStream) -> None:
        self.config = config
        self._fe = fe
        self._max_gap = config.max_gap_samples
        int16 = config.scale_int16
        self._int16_scale = np.float32(1.0 if int16 else 1.0 / 32768.0)   # multiplies int16 samples
        self._float_scale = np.float32(32768.0 if int16 else 1.0)          # multiplies float samples
        self.next_sample: int | None = None
        """Sample index the next chunk should start at; None: the next chunk starts a new utterance."""
        self.origin = 0
        """Sample index of the current utterance's first sample."""

    @property
    def feature_ring(self) -> AudioRing:
        """The feature ring (n_mels float32 channels) addressed by frame index; zero-copy views."""
        return self._fe.features

    @property
    def n_frames(self) -> int:
        """Frames produced so far: the index the next frame will get."""
        return self._fe.n_frames

    @property
    def hop(self) -> int:
        return self._fe.hop

    def accept(self, samples: np.ndarray, sample_index: int) -> AcceptResult | None:
        """Add a chunk that starts at ``sample_index`` on the stream's clock; None if it made no frames
        and left no gap (too short, or wholly overlapping what was accepted)."""
        x = self._mono(samples)
        idx = sample_index
        if not isinstance(idx, (int, np.integer)) or isinstance(idx, bool):
            raise ParamError(f"sample_index={idx!r} is not allowed; allowed: an int")
        if self.next_sample is None:
            self.next_sample = self.origin = idx
            part = self._feed(x)
            return None if part is None else AcceptResult((part,))
        if idx == self.next_sample:
            part = self._feed(x)
            return None if part is None else AcceptResult((part,))
        skip = self.next_sample - idx
        if skip > 0:                     # overlaps audio already seen: keep only the new part
            if skip >= x.shape[0]:
                return None
            part = self._feed(x[skip:])
            return None if part is None else AcceptResult((part,))
        gap = Gap(self.next_sample, idx, -skip <= self._max_gap)
        before = self._feed(np.zeros(-skip, np.float32)) if gap.zero_filled else self.flush()
        if not gap.zero_filled:
            self.next_sample = self.origin = idx
        part = self._feed(x)
        return AcceptResult(tuple(p for p in (before, part) if p is not None), gap)

    def flush(self) -> FeatureFrames | None:
        """End the utterance: its last frames (whole-signal end padding), None if there are none. The next
        chunk starts a new utterance; frame indices go on."""
        fe = self._fe
        start = fe.n_frames
        local = start - fe.segment_start_frame
        part = self._part(fe.flush(), start, local)
        self.next_sample = None
        return part

    # ------------------------------------------------------------------ internals
    def _mono(self, s: np.ndarray) -> np.ndarray:
        """Samples as contiguous mono float32 at the configured scale."""
        if not isinstance(s, np.ndarray) or not 1 <= s.ndim <= 2 or 0 in s.shape[1:]:
            raise ParamError(f"samples of shape {getattr(s, 'shape', type(s).__name__)} are not allowed; "
                             "allowed: a numpy array of shape (n,) or (n, channels)")
        dt = s.dtype
        if dt == np.int16:
            scale = self._int16_scale
        elif dt.kind == "f":
            scale = self._float_scale
        else:
            raise ParamError(f"samples of dtype {dt} are not allowed; allowed: int16, float32, float64")
        x = s if s.ndim == 1 else s[:, 0] if s.shape[1] == 1 else s.mean(axis=1, dtype=np.float32)
        if scale != 1.0 or x.dtype != np.float32:
            return np.multiply(x, scale, dtype=np.float32)
        return np.ascontiguousarray(x)

    def _feed(self, x: np.ndarray) -> FeatureFrames | None:
        fe = self._fe
        start = fe.n_frames
        local = start - fe.segment_start_frame
        frames = fe.accept(x)
        self.next_sample = (self.next_sample or 0) + x.shape[0]
        return self._part(frames, start, local)

    def _part(self, frames: np.ndarray, start: int, local: int) -> FeatureFrames | None:
        if not frames.shape[0]:
            return None
        hop = self._fe.hop
        return FeatureFrames(frames, start, self.origin + local * hop, hop)


class FeatureFrontEnd:
    """A feature front end (one :class:`FrontEndConfig`) that makes one :class:`FrontEndStream` per audio
    stream. One stream's front end is built when this is made (bad sizes fail here) and handed to the
    first :meth:`new_stream`, so that the first stream does not pay for it."""

    def __init__(self, config: FrontEndConfig) -> None:
        if not isinstance(config, FrontEndConfig):
            raise ParamError(f"config={config!r} is not allowed; allowed: a FrontEndConfig")
        self.config = config
        self._spare: FeatureStream | None = self._new_fe()
        self._hop = self._spare.hop

    @property
    def hop(self) -> int:
        """Samples between two frames (160 at 16 kHz)."""
        return self._hop

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    def new_stream(self) -> FrontEndStream:
        """A new stream: sample clock unset (its first chunk starts an utterance), frames from index 0."""
        fe, self._spare = self._spare or self._new_fe(), None
        return FrontEndStream(self.config, fe)

    def warmup(self) -> FeatureFrames:
        """Load the compiled kernels and run them once, and a throwaway stream on 0.25 s of silence, so that
        the first real chunk is not slow; returns (a copy of) the frames the throwaway stream made. The next
        :meth:`new_stream` gets a front end built here."""
        warmup()
        st = FrontEndStream(self.config, self._new_fe())
        res = st.accept(np.zeros(WARMUP_SAMPLES, np.float32), 0)
        st.flush()
        if self._spare is None:
            self._spare = self._new_fe()
        part = res.frames[0] if res is not None else FeatureFrames(np.zeros((0, self.config.n_mels), np.float32),
                                                                   0, 0, self.hop)
        return FeatureFrames(part.frames.copy(), part.start_frame, part.sample_index, part.hop)

    def _new_fe(self) -> FeatureStream:
        c = self.config
        if c.kind == KALDI_KIND:
            return KaldiFbankStream(c.n_mels, SAMPLE_RATE, c.ring_frames)
        return WhisperMelStream(c.n_mels, c.ring_frames)
