"""Active-speaker detection: is a visible face the one speaking? Lip motion against the audio envelope.

Pure numpy, online. Per video frame and face we keep two numbers: the face's **lip signal** (outer-lip
opening / mouth width, :func:`lip_signal`) and the audio **envelope** at the frame's instant (the level
of the 800-2200 Hz band, :class:`BandEnvelope`). Over a sliding window that ends at the latest frame
(``window_s``, 2 s) both sequences are high-passed and correlated; the correlation becomes a probability.

Method and constants (each has a physical reason; the band, lag and high-pass were also compared on GRID clips):

* Envelope: 25 ms Hann frames every 10 ms, power in 800-2200 Hz (the F2 region, whose envelope tracks
  the area of the mouth opening best: Grant & Seitz 2000, JASA 108(3)), in dB re full scale
  (RMS 1.0 = 0 dB) plus a floor of -75 dB (``FLOOR_DB``) so that digital silence is flat.
* A video frame at sample ``s`` gets the mean level of the 4 envelope frames (40 ms, one frame period at
  25 fps) whose centres are nearest to ``s + LAG_S`` (20 ms): the sound follows the visible opening by
  a few tens of ms. On the GRID clips the matched lip/envelope correlation peaks at +10..+20 ms, and
  every face still prefers its own audio with ``LAG_S`` anywhere in 0..40 ms but not at 50 ms: an
  audio / video misalignment of more than a few tens of ms (camera vs microphone latency) must be
  compensated (the node's ``av_offset_ms``).
* High-pass: each sequence minus its centred moving average over ``HP_S`` (0.5 s, 13 frames at 25 fps;
  edges padded with the end values, inside the window). This removes the slow silence-speech-silence
  shape that every utterance shares and keeps the syllable rhythm (2-8 Hz), whose timing is what
  differs between talkers.
* Correlation ``r = cov(a, e) / sqrt((var(a) + LIP_JITTER^2) * var(e))`` at lag 0. ``LIP_JITTER``
  (0.02 of the mouth width, about dlib's landmark jitter on a still mouth) keeps a still face near
  r = 0 instead of amplifying its jitter.
* Evidence weight ``w``: speech modulates its envelope by about 10 dB (std of the high-passed levels);
  steady noise or silence by about 1 dB. ``w`` ramps from 0 at ``MOD_DB[0]`` (3 dB) to 1 at
  ``MOD_DB[1]`` (6 dB).
* Probability ``p = 0.5 + w * (sigmoid((r - R0) / R_SCALE) - 0.5)`` with ``R0 = 0.3`` (half way between
  chance, r = 0, and a speaking face's typical r = 0.6) and ``R_SCALE = 0.1``. So p = 0.5 means "cannot
  tell": no speech modulation in the window, or less than ``MIN_SPAN_S`` (1 s) of frames with both a
  face and audio. A face in frames where it was not measured (missing, NaN lip signal) is left out.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from kikimimi.engine.errors import KikimimiError, ParamError

BAND_HZ = (800.0, 2200.0)
FRAME_S = 0.025
HOP_S = 0.010
FLOOR_DB = -75.0
LAG_S = 0.020
SPAN_S = 0.040
HP_S = 0.5
WINDOW_S = 2.0
MIN_SPAN_S = 1.0
LIP_JITTER = 0.02
MOD_DB = (3.0, 6.0)
R0 = 0.3
R_SCALE = 0.1
KEEP_S = 10.0
"""Seconds of envelope kept, so faces may arrive up to this late after their audio."""

_OUTER_UPPER = (50, 51, 52)
_OUTER_LOWER = (58, 57, 56)


class ActiveSpeakerError(KikimimiError, ValueError):
    """Bad input to the active-speaker scorer (shape, sample rate, index)."""


def lip_signal(landmarks: np.ndarray) -> float:
    """Outer-lip opening of one face: mean of the gaps 50-58, 51-57, 52-56 divided by the mouth width
    (48-54). NaN when the landmarks are not finite or the mouth has no width."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (68, 2):
        raise ActiveSpeakerError(f"landmarks must have shape (68, 2), got {lm.shape}")
    return float(lip_signals(lm[None])[0])


def lip_signals(landmarks: np.ndarray) -> np.ndarray:
    """:func:`lip_signal` of each of (T, 68, 2) landmarks: float64 (T,), NaN where not measurable."""
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ActiveSpeakerError(f"landmarks must have shape (T, 68, 2), got {lm.shape}")
    gaps = np.linalg.norm(lm[:, _OUTER_UPPER] - lm[:, _OUTER_LOWER], axis=2).mean(axis=1)
    width = np.linalg.norm(lm[:, 54] - lm[:, 48], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = gaps / width
    out[~(width > 1e-6) | ~np.isfinite(out)] = np.nan
    return out


class BandEnvelope:
    """Streaming band level (dB) of one audio stream at 100 frames/s; see the module docstring.

    Envelope frame ``j`` covers samples ``[j * hop, j * hop + win)`` of the stream's absolute sample
    clock. ``push`` takes mono float samples with the index of the first; a gap is filled with silence,
    samples already seen are skipped, and a jump of more than the kept history (forwards, or backwards:
    a restarted stream) starts over. Levels of the last ``keep_s`` seconds are kept in a ring.
    """

    def __init__(self, sample_rate: int = 16000, band: tuple[float, float] = BAND_HZ, keep_s: float = KEEP_S) -> None:
        if not isinstance(sample_rate, (int, np.integer)) or sample_rate < 2 * band[1]:
            raise ParamError(f"sample_rate={sample_rate!r} is not allowed; need an int >= {2 * band[1]:g} Hz "
                             f"for the {band[0]:g}-{band[1]:g} Hz band")
        if not keep_s >= 1.0:
            raise ParamError(f"keep_s={keep_s!r} is not allowed; need >= 1 s")
        self.sample_rate = int(sample_rate)
        self.win = round(FRAME_S * sample_rate)
        self.hop = round(HOP_S * sample_rate)
        nfft = 1 << (self.win - 1).bit_length()
        self._nfft = nfft
        self._window = np.hanning(self.win + 2)[1:-1].astype(np.float64)
        freqs = np.arange(nfft // 2 + 1) * sample_rate / nfft
        self._bins = np.flatnonzero((freqs >= band[0]) & (freqs < band[1]))
        self._norm = 2.0 / (nfft * float(np.sum(self._window ** 2)))
        self._floor = 10.0 ** (FLOOR_DB / 10.0)
        self._cap = max(16, math.ceil(keep_s / HOP_S))
        self._levels = np.full(self._cap, np.nan)
        self._n_avg = max(1, round(SPAN_S / HOP_S))
        self._lag = LAG_S * sample_rate
        self.reset()

    def reset(self) -> None:
        """Forget all audio."""
        self._tail = np.zeros(0, np.float64)
        self._tail_start = -1          # sample index of _tail[0]; -1: nothing pushed yet
        self._first_j = 0              # first envelope frame of this run
        self._next_j = 0               # next envelope frame to compute

    @property
    def end_index(self) -> int:
        """One past the last audio sample pushed (0 before any)."""
        return max(0, self._tail_start + len(self._tail))

    def push(self, samples: np.ndarray, start_index: int) -> None:
        """Append mono samples (float, in [-1, 1]) whose first sample has absolute index ``start_index``."""
        x = np.asarray(samples, np.float64).reshape(-1)
        if start_index < 0:
            raise ActiveSpeakerError(f"start_index must be >= 0, got {start_index}")
        far = self._cap * self.hop
        if self._tail_start < 0 or not self.end_index - far <= start_index <= self.end_index + far:
            self.reset()
            self._next_j = self._first_j = -(-start_index // self.hop)
            self._tail_start = self._next_j * self.hop
        end = self.end_index
        if start_index > end:                        # a gap: silence in its place
            x = np.concatenate([np.zeros(start_index - end), x])
        elif start_index < end:                      # already seen (or before the frame grid)
            x = x[end - start_index:]
        if len(x) == 0:
            return
        tail = np.concatenate([self._tail, x]) if len(self._tail) else x
        n = (len(tail) - self.win) // self.hop + 1 if len(tail) >= self.win else 0
        if n > 0:
            idx = np.arange(self.win)[None, :] + self.hop * np.arange(n)[:, None]
            spec = np.fft.rfft(tail[idx] * self._window, self._nfft, axis=1)[:, self._bins]
            power = self._norm * np.sum(spec.real ** 2 + spec.imag ** 2, axis=1)
            levels = 10.0 * np.log10(power + self._floor)
            j = self._next_j + np.arange(n)
            self._levels[j % self._cap] = levels
            self._next_j += n
            tail = tail[n * self.hop:]
            self._tail_start += n * self.hop
        self._tail = tail

    def _frames_for(self, sample_index: int) -> int:
        centre = sample_index + self._lag
        return math.floor((centre - self.win / 2) / self.hop - (self._n_avg - 1) / 2 + 0.5)

    def ready_index(self, sample_index: int) -> int:
        """The audio end index needed before :meth:`level_at` of ``sample_index`` is known."""
        return (self._frames_for(sample_index) + self._n_avg - 1) * self.hop + self.win

    def level_at(self, sample_index: int) -> float:
        """Envelope (dB) of a video frame at ``sample_index``: the mean of the ``SPAN_S`` of envelope frames
        centred on ``sample_index + LAG_S``. NaN when those frames are not (or no longer) available."""
        j0 = self._frames_for(sample_index)
        j1 = j0 + self._n_avg
        if j0 < max(self._first_j, self._next_j - self._cap) or j1 > self._next_j:
            return float("nan")
        return float(self._levels[np.arange(j0, j1) % self._cap].mean())


def frame_levels(audio: np.ndarray, sample_rate: int, frame_samples: np.ndarray) -> np.ndarray:
    """Offline :meth:`BandEnvelope.level_at` of every frame instant of a whole clip (float64 (T,))."""
    env = BandEnvelope(sample_rate, keep_s=max(KEEP_S, len(audio) / sample_rate + 1.0))
    env.push(np.asarray(audio, np.float64).reshape(-1), 0)
    return np.array([env.level_at(int(s)) for s in frame_samples], np.float64)


def highpass(x: np.ndarray, k: int) -> np.ndarray:
    """``x`` minus its centred ``k``-point moving average (``k`` odd; edges padded with the end values)."""
    h = k // 2
    if h == 0 or len(x) == 0:
        return x - x.mean() if len(x) else x
    padded = np.concatenate([np.full(h, x[0]), x, np.full(h, x[-1])])
    c = np.concatenate([[0.0], np.cumsum(padded)])
    return x - (c[k:] - c[:-k]) / k


@dataclass(frozen=True, slots=True)
class SyncResult:
    """The score of one face for the window ``[start_sample, end_sample]`` (frame instants).

    probability: see the module docstring (0.5 = cannot tell). correlation: the high-passed lip/envelope
    correlation r (NaN if not computed). weight: the evidence weight w in [0, 1]. n_frames: frames of the
    window with both a face and audio.
    """

    probability: float
    correlation: float
    weight: float
    start_sample: int
    end_sample: int
    n_frames: int


def sync_probability(lips: np.ndarray, levels: np.ndarray, frame_s: float) -> tuple[float, float, float]:
    """(probability, r, w) of one window: lip signals and envelope levels (dB) of frames ``frame_s`` apart;
    frames where either is NaN are left out."""
    ok = np.isfinite(lips) & np.isfinite(levels)
    n = int(ok.sum())
    if frame_s <= 0 or n * frame_s < MIN_SPAN_S - 1e-6 or n < 5:
        return 0.5, float("nan"), 0.0
    k = max(1, round(HP_S / frame_s)) | 1
    a = highpass(np.asarray(lips, np.float64)[ok], k)
    e = highpass(np.asarray(levels, np.float64)[ok], k)
    a -= a.mean()
    e -= e.mean()
    sd_e = float(np.sqrt(np.mean(e * e)))
    w = min(1.0, max(0.0, (sd_e - MOD_DB[0]) / (MOD_DB[1] - MOD_DB[0])))
    if sd_e <= 0.0:
        return 0.5, float("nan"), 0.0
    r = float(np.mean(a * e) / math.sqrt((np.mean(a * a) + LIP_JITTER ** 2) * sd_e ** 2))
    p = 0.5 + w * (1.0 / (1.0 + math.exp(-(r - R0) / R_SCALE)) - 0.5)
    return p, r, w


def _check_window(window_s: float) -> None:
    if not MIN_SPAN_S <= window_s <= 60.0:
        raise ParamError(f"window_s={window_s!r} is not allowed; allowed: {MIN_SPAN_S} <= window_s <= 60")


class SyncScorer:
    """Online score of ONE face: frames go in with their lip signal, a :class:`SyncResult` comes out.

    ``envelope``: a shared :class:`BandEnvelope` (then audio is pushed there), or None for a private
    one fed through :meth:`push_audio`. A frame's envelope level is read when it is pushed: push it once
    :meth:`ready` says its audio is in (else it counts as a frame without audio). Frames older than
    ``window_s`` before the latest are dropped; at most ``max_frames`` are held. Frames must come in
    sample order; an earlier frame than the latest starts the history over (a restarted stream).
    """

    def __init__(self, sample_rate: int = 16000, window_s: float = WINDOW_S, envelope: BandEnvelope | None = None,
                 max_frames: int = 512) -> None:
        _check_window(window_s)
        if max_frames < 8:
            raise ParamError(f"max_frames={max_frames!r} is not allowed; need >= 8")
        self.envelope = envelope if envelope is not None else BandEnvelope(sample_rate)
        self.sample_rate = self.envelope.sample_rate
        self.window = round(window_s * self.sample_rate)
        self._frames: deque[tuple[int, float, float]] = deque(maxlen=max_frames)

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def last_sample(self) -> int | None:
        """Sample index of the latest frame, None before any."""
        return self._frames[-1][0] if self._frames else None

    def push_audio(self, samples: np.ndarray, start_index: int) -> None:
        """Feed audio to the envelope (see :meth:`BandEnvelope.push`)."""
        self.envelope.push(samples, start_index)

    def ready(self, sample_index: int) -> bool:
        """True once the audio a frame at ``sample_index`` needs has been pushed."""
        return self.envelope.end_index >= self.envelope.ready_index(sample_index)

    def push_frame(self, sample_index: int, lip: float) -> SyncResult:
        """Add the frame at ``sample_index`` (lip signal, NaN = face not measured) and score the window."""
        frames = self._frames
        if frames and sample_index < frames[-1][0]:
            frames.clear()
        if frames and sample_index == frames[-1][0]:
            frames.pop()
        frames.append((int(sample_index), float(lip), self.envelope.level_at(sample_index)))
        while frames[0][0] <= sample_index - self.window:
            frames.popleft()
        return self.score()

    def score(self) -> SyncResult:
        """The result for the window ending at the latest frame (0.5 before any frame)."""
        if not self._frames:
            return SyncResult(0.5, float("nan"), 0.0, 0, 0, 0)
        arr = np.array(self._frames, np.float64)
        ok = np.isfinite(arr[:, 1]) & np.isfinite(arr[:, 2])
        step = float(np.median(np.diff(arr[:, 0]))) / self.sample_rate if len(arr) > 1 else 0.0
        p, r, w = sync_probability(arr[:, 1], arr[:, 2], step)
        return SyncResult(p, r, w, int(arr[0, 0]), int(arr[-1, 0]), int(ok.sum()))


class ActiveSpeakerScorer:
    """Online scores of every face of one stream, keyed by face id, sharing one :class:`BandEnvelope`.

    :meth:`push_frame` takes one video frame's faces (face id -> lip signal) and returns each face's
    :class:`SyncResult`. A face not seen for ``forget_s`` seconds of the stream is forgotten; beyond
    ``max_faces`` the least recently seen face is forgotten.
    """

    def __init__(self, sample_rate: int = 16000, window_s: float = WINDOW_S, forget_s: float = WINDOW_S,
                 max_faces: int = 32, keep_s: float = KEEP_S) -> None:
        if not forget_s > 0 or max_faces < 1:
            raise ParamError(f"forget_s={forget_s!r}, max_faces={max_faces!r}; allowed: forget_s > 0, max_faces >= 1")
        self.envelope = BandEnvelope(sample_rate, keep_s=keep_s)
        self.sample_rate = self.envelope.sample_rate
        self.window_s = window_s
        self.forget = round(forget_s * self.sample_rate)
        self.max_faces = max_faces
        self._faces: dict[int, SyncScorer] = {}
        _check_window(window_s)

    @property
    def face_ids(self) -> list[int]:
        """Ids of the faces being scored."""
        return list(self._faces)

    def push_audio(self, samples: np.ndarray, start_index: int) -> None:
        """Feed mono float audio (see :meth:`BandEnvelope.push`)."""
        self.envelope.push(samples, start_index)

    def ready(self, sample_index: int) -> bool:
        """True once the audio a frame at ``sample_index`` needs has been pushed."""
        return self.envelope.end_index >= self.envelope.ready_index(sample_index)

    def push_frame(self, sample_index: int, lips: Mapping[int, float]) -> dict[int, SyncResult]:
        """Score the faces of the frame at ``sample_index`` (face id -> lip signal); forget stale faces."""
        out: dict[int, SyncResult] = {}
        for fid, lip in lips.items():
            sc = self._faces.pop(fid, None)
            if sc is None:
                sc = SyncScorer(self.sample_rate, self.window_s, self.envelope)
            self._faces[fid] = sc                         # re-inserted: dict order = least recently seen first
            out[fid] = sc.push_frame(sample_index, lip)
        for fid in [f for f, sc in self._faces.items() if f not in lips and (
                sc.last_sample is None or sc.last_sample < sample_index - self.forget
                or sc.last_sample > sample_index)]:
            del self._faces[fid]
        while len(self._faces) > self.max_faces:
            del self._faces[next(iter(self._faces))]
        return out

    def reset(self) -> None:
        """Forget the audio and every face."""
        self.envelope.reset()
        self._faces.clear()
