"""Settings of the streaming speaker model, and the enrolled speakers it starts with.

:class:`SpeakerConfig` is the frozen, self-checking configuration of a
:class:`~kikimimi.models.speaker.streaming.SpeakerModel` (a bad value raises ParamError naming it and
what is allowed). :func:`read_enrollment` reads the enrollment database for one encoder: the gallery
of enrolled speakers and the threshold calibrated for that encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kikimimi.engine.errors import ParamError
from kikimimi.models.speaker.encoder import SpeakerEncoder
from kikimimi.models.speaker.identify import Gallery

DEVICES = ("auto", "cpu", "cuda")


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ParamError(f"speaker {name}={value!r} is not allowed; allowed: {allowed}")


def _check_similarity(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1.0 <= float(value) <= 1.0:
        raise ParamError(f"speaker {name}={value!r} is not allowed; allowed: a cosine similarity in [-1, 1]")


@dataclass(frozen=True, slots=True)
class SpeakerConfig:
    """Settings of a :class:`SpeakerModel` (see the module docstring); checked when made (ParamError)."""

    encoder: str = "ge2e"            # 'ge2e', a GE2E .pt checkpoint, or a local encoder directory
    device: str = "auto"             # auto, cpu, cuda
    threads: int = 1                 # CPU threads of the encoder (0: torch's default)
    hop_ms: int = 800                # a window starts every this many ms of speech
    threshold: float | None = None   # similarity that names an enrolled speaker (None: calibrated / default)
    cluster_unknown: bool = True     # unknown voices get session ids voice_1, voice_2, ...
    cluster_threshold: float = 0.7   # similarity an utterance needs to join a voice cluster
    split: bool = True               # split an utterance where the speaker changes
    provisional: bool = True         # give a part's label while it goes on
    min_windows: int = 1             # parts with fewer windows are 'unknown'
    ring_s: int = 60                 # seconds of audio kept per stream
    max_windows: int = 2000          # windows kept per utterance part (and for the utterance's embedding)

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, str) or not self.encoder:
            raise ParamError(f"speaker encoder={self.encoder!r} is not allowed; allowed: 'ge2e', a GE2E .pt "
                             "checkpoint, or a local encoder directory")
        if self.device not in DEVICES:
            raise ParamError(f"speaker device={self.device!r} is not allowed; allowed: {', '.join(DEVICES)}")
        _check_int("threads", self.threads, 0, 256)
        _check_int("hop_ms", self.hop_ms, 1)
        if self.threshold is not None:
            _check_similarity("threshold", self.threshold)
        _check_similarity("cluster_threshold", self.cluster_threshold)
        for name in ("cluster_unknown", "split", "provisional"):
            if not isinstance(getattr(self, name), bool):
                raise ParamError(f"speaker {name}={getattr(self, name)!r} is not allowed; allowed: true or false")
        _check_int("min_windows", self.min_windows, 1)
        _check_int("ring_s", self.ring_s, 1)
        _check_int("max_windows", self.max_windows, 1)


@dataclass(frozen=True, slots=True)
class Enrollment:
    """The enrolled speakers of a database for one encoder, its calibrated threshold (or None), and the
    database path asked for when it does not exist (else None)."""

    gallery: Gallery
    threshold: float | None
    missing: Path | None = None


def read_enrollment(encoder: SpeakerEncoder, db: str) -> Enrollment:
    """The enrollment of ``encoder`` in database ``db``: a path, '' (the default path, if it exists) or
    'none' (nobody enrolled). A named path that does not exist gives an empty gallery and ``missing``."""
    if db == "none":
        return Enrollment(Gallery(encoder.dim), None)
    from kikimimi.models.speaker.db import SpeakerDB, default_db_path

    path = Path(db).expanduser() if db else default_db_path()
    if not path.exists():
        return Enrollment(Gallery(encoder.dim), None, path if db else None)
    speaker_db = SpeakerDB(path)
    vectors = speaker_db.vectors(encoder.id)
    return Enrollment(Gallery.from_vectors(vectors) if vectors else Gallery(encoder.dim),
                      speaker_db.threshold(encoder.id))


