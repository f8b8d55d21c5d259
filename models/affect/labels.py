"""Emotion classes and where each sits on the arousal / valence plane (Russell's circumplex).

A classifier's arousal and valence are the probability-weighted mean of its classes' places
(:func:`arousal_valence`), so every model with classes in :data:`CIRCUMPLEX` gives them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kikimimi.engine.errors import ParamError

RAVDESS_CLASSES = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
"""The eight emotions of RAVDESS, in its own order (the third field of its file names, 01..08)."""
FOUR_CLASSES = ("neutral", "happy", "sad", "angry")
"""The four classes most speech-emotion work reports on."""

CIRCUMPLEX: dict[str, tuple[float, float]] = {
    # name: (arousal, valence), each in [-1, 1]
    "neutral": (0.0, 0.0),
    "calm": (-0.6, 0.4),
    "happy": (0.5, 0.8),
    "sad": (-0.5, -0.7),
    "angry": (0.8, -0.6),
    "fearful": (0.6, -0.7),
    "disgust": (0.3, -0.7),
    "surprised": (0.8, 0.4),
    # the FER2013 names of the face-expression classes
    "fear": (0.6, -0.7),
    "surprise": (0.8, 0.4),
}


def arousal_valence(classes: Sequence[str], probabilities: np.ndarray) -> tuple[float, float]:
    """The probability-weighted mean (arousal, valence) of ``classes``; ParamError names a class with no place."""
    missing = [c for c in classes if c not in CIRCUMPLEX]
    if missing:
        raise ParamError(f"affect classes {', '.join(missing)} have no arousal/valence; allowed: "
                         f"{', '.join(CIRCUMPLEX)}")
    places = np.array([CIRCUMPLEX[c] for c in classes], np.float64)
    p = np.asarray(probabilities, np.float64)
    a, v = (p / max(float(p.sum()), 1e-12)) @ places
    return float(np.clip(a, -1.0, 1.0)), float(np.clip(v, -1.0, 1.0))
