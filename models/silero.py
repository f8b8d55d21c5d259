"""Silero VAD v5/v6 as a shared ONNX model with per-stream recurrent state.

:class:`SileroVad` owns one onnxruntime ``InferenceSession`` on the ``silero_vad.onnx`` file bundled in
the silero-vad package (the package itself is never imported: only its data folder is located). The
model takes, per stream, a window of ``WINDOW[rate]`` new samples preceded by the last
``CONTEXT[rate]`` samples of the previous window, and an LSTM state of shape (2, 1, 128); it returns the
speech probability of the window and the new state. :class:`SileroState` holds one stream's state and
context; :meth:`SileroVad.step` (windows; contexts from the states) and :meth:`SileroVad.run` (context +
window rows supplied by a caller that keeps the audio) run the windows of many streams in ONE session
call (batch dimension = streams) and update each stream's state. That gives the same probabilities as
running the streams one by one, and one stream's windows in order give what silero-vad's own pipeline
(``OnnxWrapper.__call__``, or the TorchScript model) gives.

Supported rates are 16 kHz (512-sample windows, 64 context samples) and 8 kHz (256 + 32); other rates
are the caller's job (see :mod:`kikimimi.models.decimate`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.engine.errors import MissingDependency

SAMPLE_RATES = (8000, 16000)
WINDOW = {16000: 512, 8000: 256}
CONTEXT = {16000: 64, 8000: 32}
STATE_SHAPE = (2, 1, 128)
INSTALL = "pip install 'kikimimi[vad]'"


def silero_model_path(name: str = "silero_vad.onnx") -> Path:
    """Path of a model file in the installed silero-vad package's data folder (package not imported)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("Silero VAD", INSTALL)
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / name
        if path.is_file():
            return path
    raise MissingDependency(f"Silero VAD model file {name!r}", INSTALL)


def _check_rate(sample_rate: int) -> int:
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"Silero VAD sample rate {sample_rate!r} is not allowed; allowed: 8000, 16000")
    return int(sample_rate)


class SileroState:
    """One stream's recurrent state: the LSTM state (2, 1, 128) and the last context samples."""

    __slots__ = ("context", "sample_rate", "state")

    def __init__(self, sample_rate: int = 16000) -> None:
        self.sample_rate = _check_rate(sample_rate)
        self.state = np.zeros(STATE_SHAPE, np.float32)
        self.context = np.zeros(CONTEXT[self.sample_rate], np.float32)

    @property
    def window(self) -> int:
        """Samples per window at this state's rate (512 at 16 kHz, 256 at 8 kHz)."""
        return WINDOW[self.sample_rate]

    def reset(self) -> None:
        """Forget everything: zero state and zero context, as at the start of a stream."""
        self.state = np.zeros(STATE_SHAPE, np.float32)
        self.context = np.zeros(CONTEXT[self.sample_rate], np.float32)


class SileroVad:
    """The shared Silero VAD model (onnxruntime, CPU); streams keep their own :class:`SileroState`."""

    def __init__(self, model_path: str | Path | None = None, threads: int = 1) -> None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependency("Silero VAD (onnxruntime)", INSTALL) from None
        path = Path(model_path) if model_path is not None else silero_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"Silero VAD model not found: {str(path)!r}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.path = path
        self.session: Any = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        if names != ["input", "state", "sr"]:
            raise ValueError(f"{str(path)!r} is not a Silero VAD v5/v6 model: inputs {names}, "
                             "expected ['input', 'state', 'sr']")
        self._sr = {r: np.array(r, dtype=np.int64) for r in SAMPLE_RATES}
        self._outputs = [o.name for o in self.session.get_outputs()]  # prob (batch, 1), new state
        self.calls = 0      # session calls so far
        self.windows = 0    # windows run so far (sum of batch sizes)

    def new_state(self, sample_rate: int = 16000) -> SileroState:
        """A fresh per-stream state at ``sample_rate`` (8000 or 16000)."""
        return SileroState(sample_rate)

    def step(self, states: list[SileroState], windows: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """Speech probability of one window per stream, all in one session call; updates each state.

        ``windows``: shape (len(states), window) float32 in [-1, 1] (or a list of 1-D windows); each is
        preceded by its state's stored context. Every state must have the same sample rate. Returns
        float32 probabilities of shape (len(states),).
        """
        n = len(states)
        if n == 0:
            return np.zeros(0, np.float32)
        rate = states[0].sample_rate
        win, ctx = WINDOW[rate], CONTEXT[rate]
        x = np.empty((n, ctx + win), np.float32)
        for i, (st, w) in enumerate(zip(states, windows, strict=True)):
            if w.shape != (win,):
                raise ValueError(f"Silero window at {rate} Hz must have {win} samples, got shape {w.shape}")
            x[i, :ctx] = st.context
            x[i, ctx:] = w
        return self.run(states, x)

    def run(self, states: list[SileroState], inputs: np.ndarray) -> np.ndarray:
        """Like :meth:`step`, but each row of ``inputs`` (shape (len(states), context + window), float32)
        already holds the stream's context samples followed by its window (callers that keep the audio
        themselves pass the real preceding samples). Updates each state's LSTM state and context."""
        n = len(states)
        rate = states[0].sample_rate if n else 16000
        win, ctx = WINDOW[rate], CONTEXT[rate]
        if inputs.shape != (n, ctx + win) or inputs.dtype != np.float32:
            raise ValueError(f"Silero inputs at {rate} Hz must be float32 of shape ({n}, {ctx + win}), "
                             f"got {inputs.dtype} {inputs.shape}")
        if n == 0:
            return np.zeros(0, np.float32)
        if n == 1:
            state = states[0].state
        else:
            for st in states:
                if st.sample_rate != rate:
                    raise ValueError(f"one Silero batch needs one sample rate; got {rate} and {st.sample_rate}")
            state = np.concatenate([st.state for st in states], axis=1)
        prob, new_state = self.session.run(self._outputs, {"input": inputs, "state": state, "sr": self._sr[rate]})
        self.calls += 1
        self.windows += n
        if n == 1:
            states[0].state = new_state
            states[0].context = inputs[0, -ctx:].copy()
        else:
            for i, st in enumerate(states):
                st.state = np.ascontiguousarray(new_state[:, i:i + 1])
                st.context = inputs[i, -ctx:].copy()
        return prob.reshape(n)

    def probabilities(self, audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
        """Offline helper: the probability of every whole window of a mono float32 clip, from a fresh state
        (a trailing partial window is zero-padded, as silero-vad's own pipeline does)."""
        st = self.new_state(sample_rate)
        win = st.window
        n = -(-audio.shape[0] // win)
        padded = np.zeros(n * win, np.float32)
        padded[:audio.shape[0]] = audio
        out = np.empty(n, np.float32)
        for k in range(n):
            out[k] = self.step([st], padded[None, k * win:(k + 1) * win])[0]
        return out
