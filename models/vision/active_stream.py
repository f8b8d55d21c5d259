"""Active speaker as a streaming model: shared config -> one stream per camera + microphone -> per-frame scores.

::

    det = ActiveSpeakerDetector(ActiveSpeakerConfig(window_s=2.0, on=0.7, off=0.5))
    st = det.new_stream()
    for item in st.accept_audio(mono_float32, sample_index, t_ns) + st.accept_faces(idx, {face_id: lip}, t_ns, k):
        ...                                   # FrameScores (a scored frame) or DroppedFrame
    st.end_audio()                            # the audio is complete: score what waits
    st.finish()                               # score everything held (the end of the faces)

A stream keeps, per face id, the lip signals of the frames of the last ``window_s`` seconds and the audio's
band envelope (:class:`~kikimimi.models.vision.active.ActiveSpeakerScorer`; method and constants in
:mod:`kikimimi.models.vision.active`). A frame's instant on the audio clock is its sample index (or, for a
frame without one, its capture time ``t_ns`` placed through the newest audio piece's sample index and
capture time, :class:`~kikimimi.engine.timemap.ClockMap`), plus ``av_offset_ms``. Frames may come before
their audio: each waits, in order, until the audio up to its instant plus the envelope's lag is in (or the
audio ended); at most ``max_held`` wait, beyond that the oldest is dropped (:class:`DroppedFrame`,
``overflow``). A frame that can never be placed on the audio clock (no sample index, no audio) is dropped
when the stream finishes (``stale``). ``speaking`` turns on at ``probability >= on`` and off at
``probability <= off``; a face not seen for ``forget_s`` is forgotten, its ``speaking`` state too.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from kikimimi.engine.errors import ParamError
from kikimimi.engine.metrics import DROP_OVERFLOW, DROP_STALE
from kikimimi.engine.timemap import ClockMap
from kikimimi.models.vision.active import BAND_HZ, MIN_SPAN_S, ActiveSpeakerScorer


@dataclass(frozen=True, slots=True)
class ActiveSpeakerConfig:
    """What shapes the active-speaker scores (the ``active_speaker`` node's parameters of the same names).

    sample_rate: Hz of the audio. window_s: the sliding window of lip / envelope synchrony (1-60 s).
    on / off: hysteresis of ``speaking`` (0 <= off < on <= 1). forget_s: a face unseen this long is
    forgotten. av_offset_ms: added to each frame's instant (positive: the video's timestamps are early
    against the audio). max_held: frames held per stream while their audio has not come.
    """

    sample_rate: int = 16000
    window_s: float = 2.0
    on: float = 0.7
    off: float = 0.5
    forget_s: float = 2.0
    av_offset_ms: int = 0
    max_held: int = 250

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> ParamError:
            return ParamError(f"{name}={getattr(self, name)!r} is not allowed; allowed: {allowed}")

        low = math.ceil(2 * BAND_HZ[1])
        if not isinstance(self.sample_rate, int) or isinstance(self.sample_rate, bool) or self.sample_rate < low:
            raise bad("sample_rate", f"an int >= {low} (Hz)")
        if not MIN_SPAN_S <= self.window_s <= 60.0:
            raise bad("window_s", f"{MIN_SPAN_S} <= window_s <= 60")
        for name in ("on", "off"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, f"0 <= {name} <= 1")
        if not self.off < self.on:
            raise ParamError(f"off={self.off} is not below on={self.on}; allowed: off < on")
        if not self.forget_s > 0:
            raise bad("forget_s", "forget_s > 0")
        if not isinstance(self.av_offset_ms, int) or isinstance(self.av_offset_ms, bool):
            raise bad("av_offset_ms", "an int (milliseconds)")
        if not isinstance(self.max_held, int) or isinstance(self.max_held, bool) or self.max_held < 1:
            raise bad("max_held", "an int >= 1")

    @property
    def offset_samples(self) -> int:
        """``av_offset_ms`` in samples."""
        return self.av_offset_ms * self.sample_rate // 1000


@dataclass(frozen=True, slots=True)
class FaceScore:
    """One face of a scored frame: speaking probability over the window ``[start_sample, end_sample]`` (frame
    instants; 0.5 = cannot tell), ``speaking`` after the hysteresis, and the raw correlation / evidence weight."""

    face_id: int
    probability: float
    speaking: bool
    start_sample: int
    end_sample: int
    correlation: float
    weight: float


@dataclass(frozen=True, slots=True)
class FrameScores:
    """A scored video frame: its instant on the audio clock (``sample_index``, offset applied), the frame's
    ``frame_index`` and ``t_ns`` as given, ``index`` (0, 1, ... over the frames scored by the stream) and its
    faces' scores in the order given (empty: nobody in view)."""

    index: int
    frame_index: int
    t_ns: int
    sample_index: int
    faces: tuple[FaceScore, ...]


@dataclass(frozen=True, slots=True)
class DroppedFrame:
    """A frame that will not be scored: ``reason`` ``overflow`` (more than ``max_held`` frames waited for their
    audio; the oldest goes) or ``stale`` (no sample index, and no audio ever came to place it)."""

    frame_index: int
    t_ns: int
    reason: str


Result = FrameScores | DroppedFrame


@dataclass(frozen=True, slots=True)
class _Held:
    sample_index: int | None
    lips: dict[int, float]
    t_ns: int
    frame_index: int


class ActiveSpeakerStream:
    """The state of one audio + video stream; see the module docstring. Not thread-safe."""

    def __init__(self, config: ActiveSpeakerConfig) -> None:
        self.config = config
        self.scorer = ActiveSpeakerScorer(config.sample_rate, config.window_s, config.forget_s)
        self._offset = config.offset_samples
        self._held: deque[_Held] = deque()
        self._speaking: dict[int, bool] = {}
        self._clock: ClockMap | None = None
        self._audio_ended = False
        self.frames_scored = 0

    @property
    def held(self) -> int:
        """Frames waiting for their audio."""
        return len(self._held)

    def accept_audio(self, samples: np.ndarray, sample_index: int, t_ns: int | None = None) -> list[Result]:
        """Mono float samples whose first has index ``sample_index``; ``t_ns``: the capture time of the piece's
        end (places frames without a sample index). Returns the frames this makes due."""
        x = np.asarray(samples, np.float32).reshape(-1)
        self.scorer.push_audio(x, sample_index)
        if t_ns is not None:
            if self._clock is None:
                self._clock = ClockMap(self.config.sample_rate)
            self._clock.observe(sample_index + len(x), t_ns)
        self._audio_ended = False
        return self._drain()

    def accept_faces(self, sample_index: int | None, lips: Mapping[int, float], t_ns: int = 0,
                     frame_index: int = 0) -> list[Result]:
        """One video frame: its sample index on the audio clock (None: place it by ``t_ns``) and its faces'
        lip signals (face id -> :func:`~kikimimi.models.vision.active.lip_signal`, NaN = not measured).
        Returns the frames dropped for room and those that are due."""
        out: list[Result] = []
        self._held.append(_Held(sample_index, dict(lips), t_ns, frame_index))
        while len(self._held) > self.config.max_held:
            old = self._held.popleft()
            out.append(DroppedFrame(old.frame_index, old.t_ns, DROP_OVERFLOW))
        return out + self._drain()

    def end_audio(self) -> list[Result]:
        """The audio is complete (until more comes): every held frame that can be placed is scored."""
        self._audio_ended = True
        return self._drain()

    def finish(self) -> list[Result]:
        """Score every held frame (those whose audio did not come get 0.5; unplaceable ones are dropped)."""
        return self._drain(force=True)

    # ------------------------------------------------------------------ internals
    def _instant(self, f: _Held) -> int | None:
        idx = f.sample_index
        if idx is None:
            idx = None if self._clock is None else self._clock.sample_at(f.t_ns)
            if idx is None:
                return None
        return max(0, idx + self._offset)

    def _drain(self, force: bool = False) -> list[Result]:
        out: list[Result] = []
        while self._held:
            at = self._instant(self._held[0])
            if at is None and not force:
                break
            if at is not None and not (force or self._audio_ended or self.scorer.ready(at)):
                break
            f = self._held.popleft()
            if at is None:                        # no audio clock ever came: nothing to match against
                out.append(DroppedFrame(f.frame_index, f.t_ns, DROP_STALE))
            else:
                out.append(self._score(f, at))
        return out

    def _score(self, f: _Held, at: int) -> FrameScores:
        cfg = self.config
        results = self.scorer.push_frame(at, f.lips)
        faces = []
        for fid, res in results.items():
            was = self._speaking.get(fid, False)
            now = res.probability > cfg.off if was else res.probability >= cfg.on
            self._speaking[fid] = now
            faces.append(FaceScore(fid, float(res.probability), now, res.start_sample, res.end_sample,
                                   res.correlation, res.weight))
        known = set(self.scorer.face_ids)
        for fid in [k for k in self._speaking if k not in known]:
            del self._speaking[fid]
        out = FrameScores(self.frames_scored, f.frame_index, f.t_ns, at, tuple(faces))
        self.frames_scored += 1
        return out


class ActiveSpeakerDetector:
    """The shared part (the config; there are no weights): :meth:`new_stream` per camera + microphone."""

    def __init__(self, config: ActiveSpeakerConfig | None = None) -> None:
        self.config = config if config is not None else ActiveSpeakerConfig()

    def new_stream(self) -> ActiveSpeakerStream:
        """A fresh stream: no audio, no faces."""
        return ActiveSpeakerStream(self.config)
