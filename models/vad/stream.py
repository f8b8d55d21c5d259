"""One stream of the two-stage VAD: its audio, its two stages' state, its segmenter, its decisions.

A :class:`VadStream` is made by :meth:`~kikimimi.models.vad.model.VadModel.new_stream` and fed int16 mono
samples with :meth:`VadStream.accept`. It keeps them in an :class:`AudioRing` at the stream's own rate
(32/48 kHz streams also keep a float32 16 kHz ring for Silero, filled by an exact integer decimator with
2 ms of look-ahead) and reads it with two stages:

1. **webrtcvad** classifies frames of ``frame_ms`` at the input rate.
2. **Silero VAD** gives the speech probability of each 32 ms window. With ``gate`` on, a window is run
   only if webrtcvad heard a voiced frame ending inside it or in the ``gate_hangover_ms`` before it; a
   gated-off window counts as probability 0 and costs no Silero call. Silero's recurrent state is kept
   across skipped windows and, when the gate reopens after a skip, first warmed on up to
   ``lead_in_windows`` of the skipped windows (still in the ring); the gate stays open for the stream's
   first ``warmup_ms``.

A window that needs Silero waits in the model's batch (:meth:`VadModel.step` runs the waiting windows of
every stream in one session call; the model runs it when every open stream has one waiting, or at once
with ``batch`` off); the stream runs the batch itself when its own order needs it: new audio arriving
while its window still waits, or a second window completing. The window
probabilities (or, with ``neural`` off, the webrtcvad frames as 0 / 1) go through a
:class:`~kikimimi.models.segmenter.SpeechSegmenter`. Decisions (:data:`VadDecision`: SPEECH_START,
SPEECH_END, PROGRESS) carry sample indices on the stream's own clock; ``decision`` is the input sample up
to which the deciding window (and the decimator's look-ahead) reached. Every ``progress_ms`` of audio a
PROGRESS decision (a watermark: everything decided up to its sample has been given out) comes too.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
import webrtcvad

from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import NO_SAMPLE
from kikimimi.engine.msgs.speech import SpeechEventKind
from kikimimi.engine.ring import AudioRing
from kikimimi.models.decimate import Decimator
from kikimimi.models.segmenter import SegmentDecision, SpeechSegmenter
from kikimimi.models.silero import WINDOW, SileroState
from kikimimi.models.vad.config import SILERO_RATE, check_rate

if TYPE_CHECKING:
    from kikimimi.models.vad.model import VadModel

VadDecision = SegmentDecision
"""A decision of the VAD: ``kind`` SPEECH_START (``end`` = NO_SAMPLE), SPEECH_END (``end`` exclusive) or
PROGRESS (``start`` = ``decision``, ``end`` = NO_SAMPLE), decided at input sample ``decision``, with a
probability (the segment's mean so far; for PROGRESS the latest window's)."""

RING_SECONDS = 2
_SCALE = np.float32(1.0 / 32768.0)


def _check_origin(origin: int) -> int:
    if isinstance(origin, bool) or not isinstance(origin, (int, np.integer)) or origin < 0:
        raise ParamError(f"origin={origin!r} is not allowed; allowed: an int >= 0 (the first sample's index)")
    return int(origin)


class VadStream:
    """One stream's audio, stage states and segmenter; see the module docstring."""

    def __init__(self, model: VadModel, sample_rate: int, origin: int = 0, key: Any = None) -> None:
        self.model = model
        self.key = key
        """What the caller named the stream by (a stream id); the model does not read it."""
        self.rate = check_rate(sample_rate)
        self.closed = False
        self._start(_check_origin(origin))

    def _start(self, origin: int) -> None:
        """(Re)start every stage at input sample ``origin``."""
        cfg, rate = self.model.config, self.rate
        self.origin = origin
        self.ring = AudioRing(RING_SECONDS * rate, channels=1, dtype=np.int16, start_index=origin)
        self.srate, self.factor = SILERO_RATE[rate]
        self.window = WINDOW[self.srate]
        self.frame = rate * cfg.frame_ms // 1000
        self.next_frame = origin
        self.vad: Any = webrtcvad.Vad(cfg.webrtc_mode) if cfg.uses_webrtc else None
        self.seg = SpeechSegmenter(cfg.threshold, cfg.silence_threshold, cfg.min_speech_ms * rate // 1000,
                                   cfg.min_silence_ms * rate // 1000, cfg.speech_pad_ms * rate // 1000, origin)
        self.silero = SileroState(self.srate)
        self.s_origin = self.next_dec = self.next_win = -(-origin // self.factor)
        self.last_run = self.s_origin - self.window   # Silero-clock start of the last window run
        self.voiced: deque[int] = deque()             # ends of voiced frames still within the gate's reach
        self.hangover = cfg.gate_hangover_ms * rate // 1000
        self.lead_in = cfg.lead_in_windows * self.window
        self.warm_until = self.s_origin + cfg.warmup_ms * self.srate // 1000
        self.pending: list[int] | None = None         # Silero-clock starts waiting for the batch (lead-in first)
        self.progress_every = cfg.progress_ms * rate // 1000
        self.next_progress = 0
        self.dec: Decimator | None = None
        self.sring: AudioRing | None = None
        if self.factor > 1:
            self.dec = Decimator(self.factor)
            self.sring = AudioRing(RING_SECONDS * self.srate, channels=1, dtype=np.float32, start_index=self.s_origin)

    # ------------------------------------------------------------------ the contract
    @property
    def end(self) -> int:
        """One past the last input sample seen."""
        return self.ring.write_index

    @property
    def waiting(self) -> bool:
        """True while a window of this stream waits for the model's batch."""
        return self.pending is not None

    def accept(self, samples: np.ndarray, index: int | None = None) -> list[VadDecision]:
        """Feed int16 mono ``samples`` (shape (n,) or (n, 1)) starting at input sample ``index`` (None: right
        after the last ones). Samples already seen are skipped; a jump forward (``index`` past :attr:`end`:
        audio was lost) closes the open segment at the last sample seen and restarts the stream at
        ``index``. Returns this stream's decisions not yet given out, in order (some may have been made
        when another stream's call, or :meth:`VadModel.step`, ran the batch)."""
        self.feed(samples, index)
        return self.take()

    def feed(self, samples: np.ndarray, index: int | None = None) -> None:
        """:meth:`accept` without giving out the decisions: they stay for :meth:`take` or
        :meth:`VadModel.take_all` (which gives out every stream's in the order they were made)."""
        if self.closed:
            raise ParamError("this VAD stream is closed; allowed: feeding it before close() (or a new stream)")
        x = samples
        if x.dtype != np.int16 or not (x.ndim == 1 or (x.ndim == 2 and x.shape[1] == 1)):
            raise ParamError(f"VAD samples of dtype {x.dtype} and shape {x.shape} are not allowed; allowed: int16 "
                             "mono, shape (n,) or (n, 1)")
        if index is not None:
            if index > self.ring.write_index:
                self._restart(index)
            skip = self.ring.write_index - index  # overlap with audio already seen
            if skip >= x.shape[0]:
                return
            if skip > 0:
                x = x[skip:]
        piece = self.ring.capacity // 2
        for i in range(0, x.shape[0], piece):
            if self.pending is not None:  # its window must be run before the ring moves on
                self.model.step()
            self.ring.write(x[i:i + piece])
            self._consume()

    def take(self) -> list[VadDecision]:
        """This stream's decisions not yet given out (by accept, take, flush, close or the model's take_all)."""
        return self.model._take(self)

    def flush(self) -> list[VadDecision]:
        """Run this stream's waiting window (with the batch), then end its open segment, decided at the last
        sample seen; the stream goes on. Returns its decisions since its last call."""
        if self.pending is not None:
            self.model.step()
        self._put(self.seg.close(self.ring.write_index))
        return self.take()

    def close(self) -> list[VadDecision]:
        """:meth:`flush`, and the stream ends: it leaves the model (no longer counted among its streams)."""
        out = self.flush()
        if not self.closed:
            self.closed = True
            self.model._closed(self)
        return out

    def restart(self, origin: int) -> list[VadDecision]:
        """End the open segment at the last sample seen (as :meth:`flush`) and start afresh at input sample
        ``origin`` (same rate): new stage states, new segmenter. Returns its decisions since its last call."""
        self._restart(origin)
        return self.take()

    def _restart(self, origin: int) -> None:
        origin = _check_origin(origin)
        if self.pending is not None:
            self.model.step()
        self._put(self.seg.close(self.ring.write_index))
        self._start(int(origin))

    # ------------------------------------------------------------------ stages
    def _consume(self) -> None:
        """Classify the new webrtcvad frames, then decide (or queue for Silero) the new windows."""
        model = self.model
        neural = model.config.neural
        ring = self.ring
        if self.vad is not None:
            first, frame = self.next_frame, self.frame
            n = (ring.write_index - first) // frame
            if n:  # every whole new frame in one view; webrtcvad takes bytes
                self.next_frame = first + n * frame
                data, size, is_speech = ring.view(first, self.next_frame).tobytes(), 2 * frame, self.vad.is_speech
                for i in range(n):
                    end = first + (i + 1) * frame
                    voiced = is_speech(data[i * size:(i + 1) * size], self.rate)
                    if not neural:
                        self._put(self.seg.push(end - frame, end, 1.0 if voiced else 0.0))
                        self._progress(end, 1.0 if voiced else 0.0)
                    elif voiced:
                        self.voiced.append(end)
        if not neural:
            return
        if self.dec is not None and self.sring is not None:
            k1 = self.dec.ready(self.next_dec, ring.write_index)
            if k1 > self.next_dec:
                a, b = self.dec.input_span(self.next_dec, k1)
                lo = max(a, self.origin)
                x = np.multiply(ring.view(lo, b)[:, 0], _SCALE, dtype=np.float32)
                if lo > a:
                    x = np.concatenate((np.zeros(lo - a, np.float32), x))
                self.sring.write(self.dec.apply(x, self.next_dec, k1))
                self.next_dec = k1
            available = self.next_dec
        else:
            available = ring.write_index
        win, f, hang, gate = self.window, self.factor, self.hangover, model.config.gate
        while self.next_win + win <= available:
            k = self.next_win
            self.next_win = k + win
            if self.pending is not None:
                model.step()
            model.windows_decided += 1
            if gate and k >= self.warm_until:
                v, lo = self.voiced, k * f - hang
                while v and v[0] <= lo:
                    v.popleft()
                if not (v and v[0] <= (k + win) * f):
                    decision = self.decision_at(k)
                    self._put(self.seg.push(k * f, (k + win) * f, 0.0, decision))
                    self._progress(decision, 0.0)
                    continue
            first = k if self.last_run == k - win else max(k - self.lead_in, self.last_run + win, self.s_origin)
            self.pending = list(range(first, k + 1, win))
            model._wait(self)

    def decision_at(self, k: int) -> int:
        """Input sample up to which the window at Silero-clock ``k`` (plus the decimator's look-ahead) reaches."""
        return (k + self.window) * self.factor + (self.dec.half if self.dec is not None else 0)

    def samples(self, a: int, b: int) -> np.ndarray:
        """float32 Silero-rate samples [a, b) of the stream, zeros before its start."""
        lo = max(a, self.s_origin)
        if self.sring is not None:
            x = self.sring.view(lo, b)[:, 0]
        else:
            x = np.multiply(self.ring.view(lo, b)[:, 0], _SCALE, dtype=np.float32)
        return x if lo == a else np.concatenate((np.zeros(lo - a, np.float32), x))

    def decided(self, k: int, prob: float) -> None:
        """The batch ran this stream's own window at Silero-clock ``k`` with probability ``prob``."""
        decision = self.decision_at(k)
        self._put(self.seg.push(k * self.factor, (k + self.window) * self.factor, prob, decision))
        self._progress(decision, prob)

    def _progress(self, decision: int, prob: float) -> None:
        """A PROGRESS watermark at ``decision`` if ``progress_ms`` of audio passed since the last one."""
        every = self.progress_every
        if every <= 0 or decision < self.next_progress:
            return
        self.next_progress += every       # on average one per progress_ms, on window boundaries
        if self.next_progress <= decision:
            self.next_progress = decision + every
        self._put([SegmentDecision(SpeechEventKind.PROGRESS, decision, NO_SAMPLE, decision,
                                   min(1.0, max(0.0, prob)))])

    def _put(self, decisions: list[VadDecision]) -> None:
        if decisions:
            self.model._log.extend([(self, d) for d in decisions])
