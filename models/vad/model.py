"""The two-stage VAD model: configuration and the shared Silero session, streams, and the batched step.

:class:`VadModel` is built from a :class:`~kikimimi.models.vad.config.VadConfig`. With ``neural`` on it
holds the Silero VAD session, got through :func:`kikimimi.models.weights.shared` so that every model in
the process with the same thread count uses one session (loaded once). :meth:`VadModel.new_stream` makes
a :class:`~kikimimi.models.vad.stream.VadStream` (one per audio stream: its own rate, clock and state).

Batching: a stream's window that needs Silero waits in the model; :meth:`VadModel.step` runs every
waiting window of every stream, one session call per round and Silero rate (a stream warming up on a
lead-in takes part in several rounds). The model runs the step by itself when every open stream has a
window waiting (or at once with ``batch`` off), and a stream runs it when its own order needs it (new
audio, or a second window, while its window still waits). Callers add the moments only they know: a
timer (so a window never waits long for a quiet stream), a flush, the end. Decisions wait in the model
until given out: :meth:`VadStream.take` (and ``accept``, ``flush``, ``close``) gives out one stream's,
:meth:`VadModel.take_all` every stream's, in the order they were made.

    model = VadModel(VadConfig(min_silence_ms=500))
    st = model.new_stream(16000)
    decisions = st.accept(int16_samples)     # ... chunk after chunk
    decisions += st.close()                  # closes the open segment at the last sample seen
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kikimimi.models.silero import CONTEXT, SileroVad
from kikimimi.models.vad.config import VadConfig
from kikimimi.models.vad.stream import VadDecision, VadStream
from kikimimi.models.weights import shared


def silero_session(threads: int) -> SileroVad:
    """The process-wide Silero VAD session with ``threads`` intra-op threads (loaded on first use)."""
    return shared(("silero", "onnx", threads), lambda: SileroVad(threads=threads))


class VadModel:
    """Two-stage VAD (webrtcvad gate, Silero confirmation) over many streams; see the module docstring."""

    def __init__(self, config: VadConfig | None = None, silero: SileroVad | None = None) -> None:
        self.config = config if config is not None else VadConfig()
        self.silero: SileroVad | None = None
        """The Silero session (None with ``neural`` off); ``silero`` overrides the shared one."""
        if self.config.neural:
            self.silero = silero if silero is not None else silero_session(self.config.threads)
        self.open_streams = 0     # streams made and not closed
        self.windows_decided = 0  # Silero windows decided, all streams (gated-off ones included)
        self.windows_run = 0      # Silero windows run, lead-ins included
        self.calls = 0            # Silero session calls made by this model
        self._ready: list[VadStream] = []
        self._log: list[tuple[VadStream, VadDecision]] = []  # decisions not yet given out, in order

    def new_stream(self, sample_rate: int, origin: int = 0, key: Any = None) -> VadStream:
        """A new stream at ``sample_rate`` (8, 16, 32 or 48 kHz; else ParamError) whose first sample has index
        ``origin``; ``key`` is kept on it for the caller (a stream id)."""
        st = VadStream(self, sample_rate, origin, key)
        self.open_streams += 1
        return st

    @property
    def waiting(self) -> int:
        """How many streams have a window waiting for :meth:`step`."""
        return len(self._ready)

    def step(self) -> None:
        """Run every waiting window of every stream (batched); the decisions wait in the model to be given out."""
        ready, self._ready = self._ready, []
        model = self.silero
        if model is None:
            return
        if len(ready) == 1 and ready[0].pending is not None and len(ready[0].pending) == 1:
            st = ready[0]  # the common case: one stream, one window
            k, st.pending = st.pending[0], None
            self._run_group(model, [(st, k)])
            return
        while ready:
            groups: dict[int, list[tuple[VadStream, int]]] = {}
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
                self._run_group(model, items)
            ready = later

    def take_all(self) -> list[tuple[VadStream, VadDecision]]:
        """Every stream's decisions not yet given out, each with its stream, in the order they were made."""
        out, self._log = self._log, []
        return out

    # ------------------------------------------------------------------ internals (VadStream calls these)
    def _run_group(self, model: SileroVad, items: list[tuple[VadStream, int]]) -> None:
        """One session call for one window (Silero-clock start ``k``) of each stream, all at one rate. Only a
        stream's own window, its last, goes to its segmenter: the lead-in windows were decided (gated off)
        earlier and only warm the state."""
        st, k = items[0]
        ctx, win = CONTEXT[st.srate], st.window
        if len(items) == 1:
            x = st.samples(k - ctx, k + win)[None]
        else:
            x = np.stack([s.samples(j - ctx, j + win) for s, j in items])
        probs = model.run([s.silero for s, _ in items], x)
        self.calls += 1
        self.windows_run += len(items)
        for (st, k), prob in zip(items, probs, strict=True):
            st.last_run = k
            if st.pending is None:
                st.decided(k, float(prob))

    def _wait(self, st: VadStream) -> None:
        """``st`` has a window waiting: run the batch now if batching is off or every open stream waits."""
        self._ready.append(st)
        if not self.config.batch or len(self._ready) >= self.open_streams:
            self.step()

    def _take(self, st: VadStream) -> list[VadDecision]:
        """``st``'s decisions out of the log (the others stay, in order)."""
        log = self._log
        mine = [d for s, d in log if s is st]
        if len(mine) == len(log):
            log.clear()
        elif mine:
            self._log = [(s, d) for s, d in log if s is not st]
        return mine

    def _closed(self, st: VadStream) -> None:
        self.open_streams -= 1
