"""The two-stage VAD's configuration: one frozen dataclass that validates itself.

:class:`VadConfig` holds every setting that shapes the algorithm (the ``vad`` node's parameters carry
the same names, defaults and limits). Building one with a value that is not allowed raises
:class:`~kikimimi.engine.errors.ParamError` naming the value and what is allowed; :meth:`VadConfig.from_params`
builds one from a mapping of those names (a graph's ``vad`` params), rejecting unknown names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from kikimimi.engine.errors import ParamError

SAMPLE_RATES = (8000, 16000, 32000, 48000)
"""Input rates a stream may have."""
SILERO_RATE = {8000: (8000, 1), 16000: (16000, 1), 32000: (16000, 2), 48000: (16000, 3)}
"""Input rate -> (Silero rate, decimation factor)."""
WEBRTC_MODES = (0, 1, 2, 3)
FRAME_MS = (10, 20, 30)
MAX_LEAD_IN = 16
MAX_THREADS = 64
_INT_SETTINGS = frozenset({"webrtc_mode", "frame_ms", "min_speech_ms", "min_silence_ms", "speech_pad_ms",
                           "gate_hangover_ms", "lead_in_windows", "warmup_ms", "threads", "progress_ms"})


def _allowed(name: str, value: Any, allowed: str) -> ParamError:
    return ParamError(f"{name}={value!r} is not allowed; allowed: {allowed}")


@dataclass(frozen=True, slots=True)
class VadConfig:
    """Settings of the two-stage VAD (webrtcvad gate, Silero confirmation, segmenter); durations in ms."""

    webrtc_mode: int = 3
    """webrtcvad aggressiveness, 0 (least) to 3 (most aggressive at rejecting non-speech)."""
    frame_ms: int = 10
    """webrtcvad frame length: 10, 20 or 30 ms."""
    gate: bool = True
    """Run Silero only on windows near a webrtcvad-voiced frame."""
    neural: bool = True
    """Use Silero VAD; False = webrtcvad frames alone decide."""
    threshold: float = 0.5
    """Speech starts (or resumes) at a probability >= this."""
    neg_threshold: float | None = None
    """Silence starts at a probability below this; None = max(threshold - 0.15, 0.01)."""
    min_speech_ms: int = 250
    """Segments with less speech than this are dropped."""
    min_silence_ms: int = 300
    """Hangover: silence needed to end a segment."""
    speech_pad_ms: int = 30
    """Segments are widened by this much each side."""
    gate_hangover_ms: int = 300
    """The gate stays open this long after a voiced frame."""
    lead_in_windows: int = 4
    """When the gate reopens, Silero is first warmed on up to this many skipped windows (0 to 16)."""
    warmup_ms: int = 500
    """Silero runs ungated on a stream's first this many ms."""
    batch: bool = True
    """Windows of several streams may wait to run in one Silero call (the caller decides when)."""
    threads: int = 1
    """onnxruntime intra-op threads for Silero (1 to 64)."""
    progress_ms: int = 100
    """A PROGRESS watermark at most this often per stream (ms of audio); 0 = never."""

    def __post_init__(self) -> None:
        for name in ("gate", "neural", "batch"):
            if not isinstance(getattr(self, name), bool):
                raise _allowed(name, getattr(self, name), "true or false")
        for name in ("threshold", "neg_threshold"):
            v = getattr(self, name)
            if v is None and name == "neg_threshold":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise _allowed(name, v, f"a number from 0.0 to 1.0{' (or null)' if name == 'neg_threshold' else ''}")
            object.__setattr__(self, name, float(v))
        if self.neg_threshold is not None and self.neg_threshold > self.threshold:
            raise ParamError(f"neg_threshold={self.neg_threshold} is above threshold={self.threshold}; "
                             "allowed: neg_threshold <= threshold (or null)")
        ints: tuple[tuple[str, int, int | None], ...] = (
            ("min_speech_ms", 0, None), ("min_silence_ms", 0, None), ("speech_pad_ms", 0, None),
            ("gate_hangover_ms", 0, None), ("lead_in_windows", 0, MAX_LEAD_IN), ("warmup_ms", 0, None),
            ("threads", 1, MAX_THREADS), ("progress_ms", 0, None))
        for name, lo, hi in ints:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                raise _allowed(name, v, f"an int from {lo} to {hi}" if hi is not None else f"an int >= {lo}")
        for name, choices in (("webrtc_mode", WEBRTC_MODES), ("frame_ms", FRAME_MS)):
            v = getattr(self, name)
            if isinstance(v, bool) or v not in choices:
                raise _allowed(name, v, ", ".join(map(str, choices)))

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> VadConfig:
        """A config from a mapping of setting names (the ``vad`` node's parameter names) to values; names
        left out keep their defaults. An unknown name raises ParamError listing the known ones."""
        given = dict(params or {})
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ParamError(f"unknown VAD setting {unknown[0]!r}; settings: {', '.join(sorted(names))}")
        for name, v in given.items():  # whole numbers written as floats (300.0) count as ints, as in node params
            if name in _INT_SETTINGS and isinstance(v, float) and v.is_integer():
                given[name] = int(v)
        return cls(**given)

    @property
    def silence_threshold(self) -> float:
        """The hysteresis' lower threshold in effect: ``neg_threshold``, or max(threshold - 0.15, 0.01), at most
        ``threshold``."""
        neg = self.neg_threshold if self.neg_threshold is not None else max(self.threshold - 0.15, 0.01)
        return min(neg, self.threshold)

    @property
    def uses_webrtc(self) -> bool:
        """True when webrtcvad runs: as the gate, or as the only stage."""
        return self.gate or not self.neural


def check_rate(sample_rate: int) -> int:
    """``sample_rate`` if a stream may have it, else ParamError naming it and the allowed rates."""
    if isinstance(sample_rate, bool) or sample_rate not in SAMPLE_RATES:
        raise _allowed("sample_rate", sample_rate, ", ".join(map(str, SAMPLE_RATES)))
    return int(sample_rate)
