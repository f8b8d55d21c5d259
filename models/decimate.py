"""Integer-factor decimation with a linear-phase FIR low-pass, exact in sample positions.

Output sample ``k`` is the low-passed input at input sample ``k * factor`` (zero delay on the output
clock): ``y[k] = sum_j h[j] * x[k * factor + j - half]`` with a symmetric windowed-sinc ``h`` of
``2 * half + 1`` taps. It needs ``half`` input samples of look-ahead, so output ``k`` can be computed
once input sample ``k * factor + half`` exists. Used to bring 32 and 48 kHz audio to 16 kHz for Silero
VAD with a fixed, known latency (2 ms) and outputs that do not depend on how the input was chunked.
"""

from __future__ import annotations

import numpy as np

HALF_PER_FACTOR = 32
"""Filter half-length in input samples per unit of factor: 2 ms of look-ahead at any input rate."""


def lowpass_taps(factor: int, half: int | None = None, cutoff: float = 0.9, beta: float = 8.0) -> np.ndarray:
    """Kaiser-windowed sinc low-pass for decimation by ``factor``: ``2 * half + 1`` float32 taps with unit
    DC gain, cut-off at ``cutoff`` times the output Nyquist frequency."""
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"decimation factor must be an int >= 1, got {factor!r}")
    half = HALF_PER_FACTOR * factor if half is None else half
    if half < 0:
        raise ValueError(f"filter half-length must be >= 0, got {half}")
    n = np.arange(-half, half + 1, dtype=np.float64)
    fc = cutoff / (2.0 * factor)  # cycles per input sample
    h = 2 * fc * np.sinc(2 * fc * n) * np.kaiser(2 * half + 1, beta)
    return (h / h.sum()).astype(np.float32)


class Decimator:
    """Decimates one stream by ``factor``; ``half`` input samples of look-ahead (see module docstring)."""

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self.taps = lowpass_taps(factor)
        self.half = (self.taps.shape[0] - 1) // 2

    def ready(self, first: int, available_end: int) -> int:
        """One past the last output index computable when input ``[.., available_end)`` exists."""
        return max(first, (available_end - self.half - 1) // self.factor + 1)

    def input_span(self, k0: int, k1: int) -> tuple[int, int]:
        """Input samples ``[a, b)`` needed for outputs ``[k0, k1)``."""
        return k0 * self.factor - self.half, (k1 - 1) * self.factor + self.half + 1

    def apply(self, x: np.ndarray, k0: int, k1: int) -> np.ndarray:
        """Outputs ``[k0, k1)`` from ``x`` = float32 input samples ``input_span(k0, k1)`` (zeros where the
        span starts before the stream)."""
        n = k1 - k0
        if n <= 0:
            return np.zeros(0, np.float32)
        want = (n - 1) * self.factor + 2 * self.half + 1
        if x.shape[0] != want:
            raise ValueError(f"need {want} input samples for outputs [{k0}, {k1}), got {x.shape[0]}")
        # every input position, then every factor-th (numpy's direct correlation beats a strided matmul)
        return np.correlate(x, self.taps, "valid")[::self.factor].astype(np.float32, copy=False)
