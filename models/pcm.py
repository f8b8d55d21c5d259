"""Sample format conversion and downmix: one convention everywhere.

float32 audio is in [-1, 1] and maps to int16 by ``x * 32768``, rounded to the nearest integer and
clipped to [-32768, 32767]; int16 maps back by ``/ 32768`` (exact, so the round trip is lossless).
"""

from __future__ import annotations

import numpy as np

from kikimimi.engine.errors import ParamError

DTYPE_CHOICES = ("int16", "float32")


def float_to_int16(x: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] to int16: scale by 32768, round, clip (out-of-range samples saturate)."""
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


def int16_to_float(x: np.ndarray) -> np.ndarray:
    """int16 to float32 in [-1, 1): divide by 32768 (exact, so float_to_int16 undoes it)."""
    return x.astype(np.float32) * np.float32(1.0 / 32768.0)


def convert(x: np.ndarray, dtype: str) -> np.ndarray:
    """Samples in either audio dtype converted to ``dtype`` ("int16" or "float32")."""
    if dtype == "int16":
        return x if x.dtype == np.int16 else float_to_int16(x)
    if dtype == "float32":
        return x if x.dtype == np.float32 else int16_to_float(x)
    raise ParamError(f"audio dtype {dtype!r} is not allowed; allowed: {', '.join(DTYPE_CHOICES)}")


def downmix(x: np.ndarray) -> np.ndarray:
    """Shape (n, channels) to mono shape (n, 1): the mean over channels, in the input's scale.

    int16 input gives the rounded int16 mean; anything else gives a float32 mean.
    """
    if x.dtype == np.int16:
        if x.shape[1] == 1:
            return x
        return np.rint(x.mean(axis=1, dtype=np.float32, keepdims=True)).astype(np.int16)
    if x.shape[1] == 1:
        return x if x.dtype == np.float32 else x.astype(np.float32)
    return x.mean(axis=1, dtype=np.float32, keepdims=True)


def mono_float32(samples: np.ndarray) -> np.ndarray:
    """Shape (n, channels) int16 or float32 to mono float32 shape (n,) in [-1, 1] (mean over channels)."""
    x = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0].astype(np.float32)
    if samples.dtype == np.int16:
        x *= np.float32(1.0 / 32768.0)
    return x
