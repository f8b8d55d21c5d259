"""Calibration of a speaker-verification threshold from scored trials.

Convention: a trial is accepted when its score is ``>= threshold``. For a set of same-speaker scores
and a set of different-speaker scores, FAR(t) is the fraction of different-speaker scores ``>= t``
(false accepts) and FRR(t) the fraction of same-speaker scores ``< t`` (false rejects).

:func:`eer` is exact on the empirical curves: it evaluates FAR and FRR at every unique score (where
they change value), finds the first score ``t_b`` at which FAR <= FRR and, with ``t_a`` the unique
score before it:

* if FAR(t_b) < FRR(t_b) (the curves cross between two scores), FAR and FRR are interpolated
  linearly between ``t_a`` and ``t_b``; the EER is their common value where the two lines meet, and
  the threshold the score interpolated at the same point;
* if FAR(t_b) == FRR(t_b) (a tie), every threshold in ``(t_a, t_c]`` gives exactly that error, where
  ``t_c`` is the last unique score of the tie; the threshold returned is the midpoint of that range
  (for perfectly separable sets: an EER of 0 at the midpoint between the highest different-speaker
  score and the lowest same-speaker score).

One more point just above the highest score (FAR 0, FRR 1) closes the curves, so a crossing always
exists (it matters only when the highest score is shared by both sets).
"""

from __future__ import annotations

from numbers import Real

import numpy as np

from kikimimi.engine.errors import ParamError


def _scores(x: object, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ParamError(f"{what} scores have shape {np.shape(x)}; allowed: a non-empty 1-D array")
    if not np.all(np.isfinite(a)):
        raise ParamError(f"{what} scores hold NaN or infinite values; allowed: finite numbers")
    return a


def eer(same: np.ndarray, different: np.ndarray) -> tuple[float, float]:
    """Equal error rate and the threshold where it occurs (see the module docstring), as (eer, threshold)."""
    s, d = np.sort(_scores(same, "same-speaker")), np.sort(_scores(different, "different-speaker"))
    t = np.unique(np.concatenate([s, d]))
    t = np.append(t, np.nextafter(t[-1], np.inf))                    # above every score: FAR 0, FRR 1
    far = (d.size - np.searchsorted(d, t, side="left")) / d.size      # fraction of d >= t
    frr = np.searchsorted(s, t, side="left") / s.size                 # fraction of s < t
    gap = far - frr                      # non-increasing, from 1 (lowest score) to -1 (above all)
    b = int(np.argmax(gap <= 0))         # first t with FAR <= FRR; b >= 1 since gap[0] = 1
    a = b - 1
    if gap[b] < 0:
        alpha = gap[a] / (gap[a] - gap[b])
        return float(far[a] + alpha * (far[b] - far[a])), float(t[a] + alpha * (t[b] - t[a]))
    c = b + int(np.argmax(gap[b:] != 0)) - 1                         # last t of the tie (gap[-1] = -1)
    return float(far[b]), float((t[a] + t[c]) / 2.0)


def threshold_at_far(different: np.ndarray, far: float) -> float:
    """A threshold whose false-accept rate on ``different`` is at most ``far`` (0 <= far < 1), accepting as
    many scores as that allows: with m = floor(far * n) accepts allowed, it lies above the (m+1)-th highest
    score, at the midpoint to the next higher distinct score (just above it, by one step of the input's
    float type, when there is none), so FAR(threshold) = (number of scores above it) / n <= far."""
    d = _scores(different, "different-speaker")
    if isinstance(far, bool) or not isinstance(far, Real) or not 0.0 <= float(far) < 1.0:
        raise ParamError(f"far={far!r} is not allowed; allowed: a rate with 0 <= far < 1")
    kind = np.asarray(different).dtype
    ftype = kind.type if np.issubdtype(kind, np.floating) else np.float64
    desc = np.sort(d)[::-1]
    m = min(int(np.floor(float(far) * d.size + 1e-9)), d.size - 1)   # accepts allowed (1e-9: 0.29 * 100 is 29)
    reject = desc[m]                     # the highest score that must be rejected
    higher = desc[desc > reject]
    step = float(np.nextafter(ftype(reject), ftype(np.inf)))
    if higher.size == 0:
        return step
    mid = (reject + float(higher.min())) / 2.0
    return mid if float(ftype(mid)) > reject else step
