"""Training data of the AV model: a folder of talking-face videos, each with a same-stem ``.txt`` transcript.

:func:`find_pairs` walks the folder (recursively, in sorted order) for ``*.mp4 *.mpg *.mkv *.avi *.webm *.mov``
files; a video without a ``.txt`` of the same stem next to it is skipped (and said so). :class:`AvDataset`
reads each pair: the transcript, normalised to the model's vocabulary, and per clip the Kaldi fbank
(int16-range input, ``n_mels`` bins) of its 16 kHz mono audio and the mouth crop of the main face in
every video frame, from :func:`kikimimi.models.vision.clip.read_av_clip`. A clip is skipped, with the
reason logged and kept in ``AvDataset.skipped``, when it cannot be read, its transcript is empty after
normalisation, or it is too short for its transcript under CTC. No usable clip at all raises
:class:`AvDataError`.

Features are cached per clip as ``.npz`` files (``np.savez``; read back with ``allow_pickle=False``) in
``cache_dir`` (default ``$XDG_CACHE_HOME/kikimimi/avsr`` or ``~/.cache/kikimimi/avsr``), named by a hash of
the video's resolved path, size and modification time, the feature settings and :data:`FEATURE_VERSION`,
so repeated training runs skip the video decoding and face tracking.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kikimimi.engine.errors import KikimimiError
from kikimimi.models.avsr.model import (
    FRAME_SAMPLES,
    INT16_SCALE,
    STACK,
    VOCAB,
    encode_text,
    model_inputs,
    normalize_text,
)
from kikimimi.models.frontend.kaldi import kaldi_fbank

log = logging.getLogger("kikimimi.avsr.data")

VIDEO_SUFFIXES = (".mp4", ".mpg", ".mkv", ".avi", ".webm", ".mov")
FEATURE_VERSION = 1
SAMPLE_RATE = 16000
_ARRAYS = ("fbank", "mouths", "has_face", "frame_samples")


class AvDataError(KikimimiError, ValueError):
    """A training folder holds no usable (video, transcript) pair."""


@dataclass(frozen=True)
class Skipped:
    """A file left out of the data set, and why."""

    path: Path
    reason: str


@dataclass(frozen=True, eq=False)
class ClipFeatures:
    """One clip: normalised transcript, fbank (n, n_mels) float32, mouths (T, 96, 96) uint8, has_face (T,) bool,
    frame_samples (T,) int64 (each video frame's audio sample index)."""

    path: Path
    text: str
    fbank: np.ndarray
    mouths: np.ndarray
    has_face: np.ndarray
    frame_samples: np.ndarray

    @property
    def n_frames(self) -> int:
        """Model frames (40 ms) of the clip."""
        return self.fbank.shape[0] // STACK

    def inputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The model's per-frame inputs: stacked fbank, mouths, face present (see ``model.model_inputs``)."""
        return model_inputs(self.fbank, self.mouths, self.has_face, self.frame_samples)


def find_pairs(folder: str | Path) -> tuple[list[tuple[Path, Path]], list[Skipped]]:
    """(video, transcript) pairs under ``folder`` (sorted), and the videos skipped for lack of a transcript."""
    root = Path(folder)
    if not root.is_dir():
        raise AvDataError(f"training data folder {root} does not exist or is not a directory")
    pairs, skipped = [], []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in VIDEO_SUFFIXES or not p.is_file():
            continue
        txt = p.with_suffix(".txt")
        if txt.is_file():
            pairs.append((p, txt))
        else:
            skipped.append(Skipped(p, f"no transcript {txt.name} next to it"))
    return pairs, skipped


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kikimimi" / "avsr"


def cache_path(video: Path, cache_dir: Path, n_mels: int) -> Path:
    """The cache file of ``video``'s features: keyed by resolved path, size, mtime and feature settings."""
    real = video.resolve()
    st = real.stat()
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}|v{FEATURE_VERSION}|{n_mels}|{SAMPLE_RATE}"
    return cache_dir / f"{real.stem}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


def extract_features(video: Path, n_mels: int = 80) -> dict[str, np.ndarray]:
    """Decode ``video`` and compute its fbank and mouth crops (no cache)."""
    from kikimimi.models.vision.clip import read_av_clip

    clip = read_av_clip(video, SAMPLE_RATE)
    if clip.sample_rate != SAMPLE_RATE:
        raise KikimimiError(f"{video}: audio came at {clip.sample_rate} Hz; allowed: {SAMPLE_RATE}")
    audio = np.asarray(clip.audio, np.float32) * np.float32(INT16_SCALE)
    return {"fbank": kaldi_fbank(audio, n_mels), "mouths": np.asarray(clip.mouths, np.uint8),
            "has_face": np.asarray(clip.has_face, bool), "frame_samples": np.asarray(clip.frame_samples, np.int64)}


def load_features(video: Path, cache_dir: Path | None, n_mels: int = 80) -> dict[str, np.ndarray]:
    """``video``'s features from the cache, or extracted and then cached (``cache_dir`` None: no cache)."""
    if cache_dir is None:
        return extract_features(video, n_mels)
    path = cache_path(video, cache_dir, n_mels)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in _ARRAYS}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("feature cache %s is unreadable (%s); extracting again", path, exc)
    feats = extract_features(video, n_mels)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **feats)
    tmp.replace(path)
    return feats


def _read_errors() -> tuple[type[Exception], ...]:
    errors: tuple[type[Exception], ...] = (KikimimiError, OSError, ValueError)
    try:
        import av
    except ImportError:
        return errors
    return (*errors, av.FFmpegError)


class AvDataset:
    """The usable clips of a folder (``items``) and what was skipped (``skipped``); see the module docstring."""

    def __init__(self, folder: str | Path, cache_dir: str | Path | None = None, n_mels: int = 80,
                 vocab: str = VOCAB, use_cache: bool = True) -> None:
        pairs, self.skipped = find_pairs(folder)
        cache = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) if use_cache else None
        self.items: list[ClipFeatures] = []
        errors = _read_errors()
        for video, txt in pairs:
            try:
                text = normalize_text(txt.read_text(encoding="utf-8"), vocab)
            except (OSError, UnicodeDecodeError) as exc:
                self.skipped.append(Skipped(video, f"transcript {txt.name} is unreadable: {exc}"))
                continue
            if not text:
                self.skipped.append(Skipped(video, f"transcript {txt.name} has no characters of the vocabulary"))
                continue
            try:
                f = load_features(video, cache, n_mels)
            except errors as exc:
                self.skipped.append(Skipped(video, f"could not be read: {exc}"))
                continue
            clip = ClipFeatures(video, text, f["fbank"], f["mouths"], f["has_face"], f["frame_samples"])
            ids = encode_text(text, vocab)
            need = len(ids) + sum(a == b for a, b in itertools.pairwise(ids))
            if clip.n_frames < need:
                self.skipped.append(Skipped(video, f"{clip.n_frames} frames ({clip.n_frames * FRAME_SAMPLES} samples) "
                                                   f"are too few for its {len(ids)}-character transcript under CTC"))
                continue
            self.items.append(clip)
        for s in self.skipped:
            log.warning("skipped %s: %s", s.path, s.reason)
        if not self.items:
            why = "".join(f"\n  {s.path}: {s.reason}" for s in self.skipped)
            raise AvDataError(f"no usable (video, transcript) pair in {folder}: need video files "
                              f"({', '.join(VIDEO_SUFFIXES)}) each with a same-stem .txt transcript; "
                              f"skipped {len(self.skipped)}{why}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> ClipFeatures:
        return self.items[i]
