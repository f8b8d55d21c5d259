"""A final decoded before its endpoint is confirmed, kept for the final request that turns out the same.

The asr node holds a VAD's SPEECH_END until the silence after it has lasted (``final_silence_ms``). While it
waits, the final that this end would give can already be decoded: the stream builds the request that
``endpoint(end_sample)`` followed by ``step`` would build, without changing its state
(``RecognizerStream.speculate``), the node decodes it and hands the output back (``keep``). When the end is
confirmed and the real final request is built, :meth:`Speculation.take` returns the kept output if and only
if the request is the same (same window, frames, prompt, forced prefix, language and decoding options), so
the final is published without decoding again; any difference (speech resumed, a partial changed the
stream) discards it and the request is decoded as usual. The output therefore never differs from a plain
decode of the same request.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kikimimi.models.asr.recognizer import DecodeRequest

_FIELDS = ("final", "context", "prefix", "language", "want_words", "max_new_tokens", "kind", "detect", "allowed",
           "switch_probability", "switch_s", "start_frame", "end_frame", "carry")


def same_request(a: DecodeRequest, b: DecodeRequest) -> bool:
    """True if ``a`` and ``b`` ask for the same decode (their fields, frames included, are equal)."""
    if type(a) is not type(b):
        return False
    for name in _FIELDS:
        if getattr(a, name, None) != getattr(b, name, None):
            return False
    fa, fb = getattr(a, "frames", None), getattr(b, "frames", None)
    if fa is None or fb is None:
        return fa is fb
    return bool(fa.shape == fb.shape and np.array_equal(fa, fb))


class Speculation:
    """At most one kept (request, output) pair of a stream; counts what was used and what was wasted."""

    def __init__(self) -> None:
        self._kept: tuple[DecodeRequest, Any] | None = None
        self.used = 0        # finals published from a kept output
        self.discarded = 0   # kept outputs no final request matched

    def keep(self, request: DecodeRequest, output: Any) -> None:
        """Remember ``output`` of the speculative ``request`` (replacing one kept before)."""
        if self._kept is not None:
            self.discarded += 1
        self._kept = (request, output)

    def take(self, request: DecodeRequest) -> Any | None:
        """The kept output if ``request`` is the kept request's twin, else None; either way nothing stays kept."""
        kept, self._kept = self._kept, None
        if kept is None:
            return None
        if same_request(kept[0], request):
            self.used += 1
            return kept[1]
        self.discarded += 1
        return None

    def clear(self) -> None:
        """Forget a kept output (the utterance it was for is gone)."""
        if self._kept is not None:
            self.discarded += 1
        self._kept = None
