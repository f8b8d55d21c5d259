"""How close a golden message must be when the machine or the numerical libraries differ.

Golden files are recorded on one machine. Another CPU (other SIMD kernels in CTranslate2, ONNX Runtime,
BLAS) or other library versions change floating-point results in the last digits, and Whisper's beam
search, fed those, can move a word boundary by one 20 ms timestamp step and a word's confidence by a few
hundredths (measured: the same commit on two machines of this project differed by up to 0.052 in a
confidence and 320 samples in a word's end; texts, utterance spans, speaker and face labels, message counts
and log lines were identical). :func:`similar` accepts exactly that kind of difference and nothing else:

* every string, bool, null, list length and key is equal, and every int is equal except the sample
  positions of recognized words (within :data:`WORD_SAMPLES`);
* floats named in :data:`SCORE_TOL` (confidences, probabilities, speaker and face scores) are within that
  many, any other float within :data:`REL_TOL` of each other;
* arrays (kept as dtype, shape and a hash of their bytes) agree on dtype and shape; their bytes are
  compared only by ``tests/golden.py check --exact``, the check a refactoring runs on one machine.
"""

from __future__ import annotations

import math
from typing import Any

WORD_SAMPLES = 2 * 320          # two Whisper timestamp steps (20 ms each) at 16 kHz
SCORE_TOL = {"confidence": 0.1, "probability": 0.02, "speaker_score": 0.05, "face_score": 0.05}
REL_TOL = 1e-6


def similar(a: Any, b: Any, key: str = "", in_words: bool = False) -> bool:
    """Whether golden value ``a`` and new value ``b`` differ only numerically, as the module docstring says."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return False
        if set(a) == {"dtype", "shape", "sha256"}:
            return bool(a["dtype"] == b["dtype"] and a["shape"] == b["shape"])
        return all(similar(a[k], b[k], k, in_words) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(similar(x, y, key, in_words or key == "words")
                                        for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None or isinstance(a, str):
        return a == b and type(a) is type(b)
    if isinstance(a, int) and isinstance(b, int):
        if in_words and key in ("start_sample", "end_sample"):
            return abs(a - b) <= WORD_SAMPLES
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if key in SCORE_TOL:
            return abs(a - b) <= SCORE_TOL[key]
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)
    return False
