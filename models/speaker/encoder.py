"""The speaker-encoder interface: shared weights, one batched ``embed`` call for many windows.

A :class:`SpeakerEncoder` maps fixed-rate input windows to L2-normalised embeddings, so a dot product
is a cosine similarity. Its :attr:`~SpeakerEncoder.id` names the weights (a content hash): embeddings
and calibrated thresholds are only comparable under the same id, and the enrollment database stores
both with it. Windows come in one of two input kinds:

* ``mel40_power``: (batch, frames, 40) float32 mel power (not log), 10 ms frames of 25 ms windows at
  16 kHz, as the GE2E encoder was trained on; :func:`~kikimimi.models.speaker.windows.mel_power`
  computes it with the numba front end.
* ``audio``: (batch, samples) float32 16 kHz audio in [-1, 1] (encoders with their own front end,
  such as x-vector heads loaded through transformers).

:func:`load_encoder` resolves a name or a local directory to an encoder; :func:`shared_encoder` loads
it once per process for every user asking for the same one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from kikimimi.engine.errors import ParamError

MEL40 = "mel40_power"
AUDIO = "audio"
INPUT_KINDS = (MEL40, AUDIO)
SAMPLE_RATE = 16000
HOP = 160                       # samples per mel frame (10 ms)


class SpeakerEncoder:
    """Base of every speaker encoder; subclasses set the attributes and implement :meth:`embed`."""

    id: str = ""                 # e.g. "ge2e-3f2a9c1d0b7e": family plus a hash of the weights
    dim: int = 0
    input_kind: str = MEL40
    sample_rate: int = SAMPLE_RATE
    window_s: float = 1.6        # the window length the encoder was trained on
    min_window_s: float = 0.5    # shorter spans are not embedded
    default_threshold: float = 0.75   # used until a calibrated threshold is stored for this id

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(batch, dim) float32 L2-normalised embeddings of a batch of equal-length windows."""
        raise NotImplementedError

    def warmup(self) -> None:
        """Run one window so the first real call is not slow."""
        n = int(self.window_s * self.sample_rate)
        if self.input_kind == MEL40:
            self.embed(np.full((1, n // HOP, 40), 1e-4, np.float32))
        else:
            self.embed(np.zeros((1, n), np.float32))


def file_digest(path: Path, n: int = 12) -> str:
    """The first ``n`` hex digits of the SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (all-zero rows stay zero), float32."""
    x = np.asarray(x, np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


ENCODERS = ("ge2e",)


def shared_encoder(name: str = "ge2e", device: str = "auto", threads: int = 0) -> SpeakerEncoder:
    """:func:`load_encoder` through the process-wide weights cache
    (:func:`kikimimi.models.weights.shared`): every caller asking for the same encoder (``ge2e``, or the
    resolved path of a checkpoint or directory), device and thread count gets the one object loaded
    first. Encoders are read-only while they embed."""
    from kikimimi.models.weights import shared

    where = name if name in ENCODERS else str(Path(name).expanduser().resolve())
    return shared(("speaker-encoder", where, device, threads), lambda: load_encoder(name, device, threads))


def load_encoder(name: str = "ge2e", device: str = "auto", threads: int = 0) -> SpeakerEncoder:
    """The encoder ``name``: ``ge2e`` (the pretrained GE2E weights in the resemblyzer package), a
    ``.pt`` GE2E checkpoint, or a local directory holding another encoder (see
    :mod:`~kikimimi.models.speaker.external`)."""
    from kikimimi.models.speaker.ge2e import Ge2eEncoder

    if name == "ge2e":
        return Ge2eEncoder(None, device, threads)
    path = Path(name).expanduser()
    if path.is_file():
        return Ge2eEncoder(path, device, threads)
    if path.is_dir():
        from kikimimi.models.speaker.external import load_external

        return load_external(path, device, threads)
    raise ParamError(f"speaker encoder {name!r} is not allowed; allowed: {', '.join(ENCODERS)}, a GE2E .pt "
                     f"checkpoint file, or a local encoder directory (tried the path {path})")
