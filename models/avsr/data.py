"""Training data of the AV model: a folder of talking-face videos, each with a same-stem ``.txt`` transcript.

:func:`find_pairs` walks the folder (recursively, in sorted order) for ``*.mp4 *.mpg *.mkv *.avi *.webm *.mov``
files; a video without a ``.txt`` of the same stem next to it is skipped (and said so). :class:`AvDataset`
reads each pair: the transcript, normalised to the model's vocabulary, and one training example per clip,
built from what the ``avsr`` node receives in the graph and decodes for that clip.

* **The node's inputs** (:func:`read_graph_clip`): the clip is read by the code ``file_source`` plays it
  with (:class:`~kikimimi.models.media.MediaReader`, video on, 16 kHz mono in 20 ms chunks, int16 as the
  node sends them) and its frames go through the code the ``vision`` node runs (a
  :class:`~kikimimi.models.vision.faces.FaceAnalyzer` stream, the node's default config as in
  ``launch/av.yaml``), so the audio (the mean of the channels, int16-rounded), each frame's ``sample_index``
  and the faces are exactly those of the graph (``kikimimi.models.vision.clip.read_av_clip`` reads the
  same audio and frame times whole, its own way, and runs
  the vision front end directly, not the node). Per frame the mouth of the face the node follows (:func:`follow_face`).
* **The span** (``segment``): ``"vad"`` (default) runs OUR two-stage VAD over the audio exactly as the
  ``vad`` node does in the graph (:func:`kikimimi.models.vad.speech_spans`: the same VAD model,
  over the int16 audio from sample 0, ``vad_params`` as the graph's ``vad`` node params, default = the node's
  defaults = ``launch/av.yaml``'s) and takes the span from the first SPEECH_START's start to the last
  SPEECH_END's end: what the node decodes between ``begin`` and ``endpoint``. A clip in which the VAD finds
  several segments under ONE transcript is taken as that one span (logged): the node would decode it as
  several utterances, so such clips train a span the node never sees whole. A clip without speech is
  skipped. ``"whole"`` takes the whole clip, ``[0, len)``: what a stream decodes after ``begin(0)`` and
  ``endpoint(len)`` (the original behaviour, now on the graph's audio).
* **The features** (:func:`span_features`): the Kaldi fbank (int16-range input, ``n_mels`` bins) of the
  span's audio alone, i.e. frame ``t`` = samples ``[start + 160 t, start + 160 t + 400)``, and the frames
  near the span with their sample indices; :meth:`ClipFeatures.inputs` pairs model frame ``k`` with the
  video frame nearest to ``start + 640 k`` (``model.model_inputs`` with ``start_sample``). This is what
  :class:`~kikimimi.models.avsr.chunked_stream.ChunkedAvStream` computes after ``begin(start)`` ...
  ``endpoint(end)`` (``tests/test_avsr_train.py`` checks it input for input).

A clip is skipped, with the reason logged and kept in ``AvDataset.skipped``, when it cannot be read, the
VAD finds no speech in it, its transcript is empty after normalisation, or its span is too short for its
transcript under CTC. No usable clip at all raises :class:`AvDataError`.

Features are cached per clip as ``.npz`` files (``np.savez``; read back with ``allow_pickle=False``) in
``cache_dir`` (default ``$XDG_CACHE_HOME/kikimimi/avsr`` or ``~/.cache/kikimimi/avsr``), named by the
segmentation and a hash of the video's resolved path, size and modification time, the feature settings,
the segmentation and its VAD parameters and :data:`FEATURE_VERSION`, so the two modes never share a file
and repeated training runs skip the video decoding, face tracking and VAD.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.engine.errors import KikimimiError, ParamError
from kikimimi.engine.msgs.vision import MOUTH_SIZE, NO_FACE, Face
from kikimimi.models.avsr.model import (
    FRAME_SAMPLES,
    STACK,
    VOCAB,
    encode_text,
    model_inputs,
    normalize_text,
)
from kikimimi.models.frontend.kaldi import kaldi_fbank
from kikimimi.models.vision.faces import VisionConfig

log = logging.getLogger("kikimimi.avsr.data")

VIDEO_SUFFIXES = (".mp4", ".mpg", ".mkv", ".avi", ".webm", ".mov")
FEATURE_VERSION = 2
"""2: the graph's audio (file_source) and faces (vision node), and a span per clip (``segment``)."""
SAMPLE_RATE = 16000
CHUNK_MS = 20
SEGMENTS = ("vad", "whole")
_ARRAYS = ("fbank", "mouths", "has_face", "frame_samples")
_OPTIONAL = ("span",)


class AvDataError(KikimimiError, ValueError):
    """A training folder holds no usable (video, transcript) pair."""


class NoSpeechError(KikimimiError):
    """The VAD found no speech in a clip: the avsr node would never decode it."""


@dataclass(frozen=True)
class Skipped:
    """A file left out of the data set, and why."""

    path: Path
    reason: str


@dataclass(frozen=True, eq=False)
class ClipFeatures:
    """One training example: normalised transcript, fbank (n, n_mels) float32 of the span's audio, mouths
    (T, 96, 96) uint8, has_face (T,) bool, frame_samples (T,) int64 (each video frame's sample index on the
    clip's clock), and the span ``[start_sample, end_sample)`` the fbank starts at (end None: unknown)."""

    path: Path
    text: str
    fbank: np.ndarray
    mouths: np.ndarray
    has_face: np.ndarray
    frame_samples: np.ndarray
    start_sample: int = 0
    end_sample: int | None = None

    @property
    def n_frames(self) -> int:
        """Model frames (40 ms) of the example."""
        return self.fbank.shape[0] // STACK

    def inputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The model's per-frame inputs: stacked fbank, mouths, face present (see ``model.model_inputs``)."""
        return model_inputs(self.fbank, self.mouths, self.has_face, self.frame_samples, self.start_sample)


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


def _check_segment(segment: object) -> str:
    if segment not in SEGMENTS:
        raise ParamError(f"segment={segment!r} is not allowed; allowed: {', '.join(map(repr, SEGMENTS))}")
    return str(segment)


def cache_path(video: Path, cache_dir: Path, n_mels: int, segment: str = "vad",
               vad_params: dict[str, Any] | None = None) -> Path:
    """The cache file of ``video``'s features: keyed by resolved path, size, mtime, feature settings and the
    segmentation (with its VAD parameters), so the modes never collide."""
    real = video.resolve()
    st = real.stat()
    vad = json.dumps(vad_params or {}, sort_keys=True) if segment == "vad" else ""
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}|v{FEATURE_VERSION}|{n_mels}|{SAMPLE_RATE}|{segment}|{vad}"
    return cache_dir / f"{real.stem}-{segment}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


# ---------------------------------------------------------------------------------------------- the node's inputs
@dataclass(frozen=True, eq=False)
class GraphClip:
    """A clip as the avsr node receives it from ``file_source(video: true)`` and ``vision``: audio int16 (n,)
    mono at 16 kHz (sample 0 = the first chunk's), each video frame's ``sample_index`` (T,) int64 and its
    faces (as the vision node emitted them, largest first)."""

    audio: np.ndarray
    frame_samples: np.ndarray
    faces: list[tuple[Face, ...]]

    @property
    def float_audio(self) -> np.ndarray:
        """The audio as float32 in [-1, 1), as the avsr node converts int16 chunks."""
        return self.audio.astype(np.float32) * np.float32(1.0 / 32768.0)


def read_graph_clip(video: str | Path, vision: VisionConfig | None = None) -> GraphClip:
    """Read ``video`` as ``file_source`` plays it (video on, 16 kHz mono, 20 ms chunks converted to int16) and
    its frames through a vision front-end stream (``vision``; default: the vision node's defaults), the
    model-level code those nodes run, offline."""
    from kikimimi.models.media import AudioPiece, MediaConfig, MediaReader, PacketSkipped
    from kikimimi.models.pcm import convert
    from kikimimi.models.vision.faces import FaceAnalyzer

    stream = FaceAnalyzer(vision).new_stream()
    audio: list[np.ndarray] = []
    samples: list[int] = []
    faces: list[tuple[Face, ...]] = []
    with MediaReader(video, MediaConfig(SAMPLE_RATE, True, CHUNK_MS, video=True)) as reader:
        if reader.missing_video:
            log.warning("%s has no video track; reading its audio only", video)
        for item in reader:
            if isinstance(item, AudioPiece):
                audio.append(convert(item.samples, "int16")[:, 0])
            elif isinstance(item, PacketSkipped):
                log.warning("%s: skipping an undecodable packet: %s", video, item.error)
            else:
                samples.append(item.sample_index)
                faces.append(stream.accept(item.image, "bgr24", item.frame_index).faces)
    pcm = np.concatenate(audio) if audio else np.zeros(0, np.int16)
    return GraphClip(pcm.astype(np.int16, copy=False), np.asarray(samples, np.int64), faces)


def follow_face(faces: list[tuple[Face, ...]], frame_samples: np.ndarray, start: int) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """Per frame, the mouth (T, 96, 96) uint8 and face present (T,) bool of the face the avsr node follows in
    an utterance from ``start`` (its rule without ActiveSpeaker input): before ``start`` each frame's largest
    face (box area), from ``start`` on the face followed then (the first one picked if none was). The node
    switches at the frame where the audio given reaches ``start``, up to a chunk later: with one face in view
    (a GRID clip) the two agree exactly."""
    n = len(faces)
    mouths = np.zeros((n, MOUTH_SIZE, MOUTH_SIZE), np.uint8)
    has = np.zeros(n, bool)
    followed = NO_FACE
    for i, (fs, fc) in enumerate(zip(np.asarray(frame_samples).tolist(), faces, strict=True)):
        face: Face | None
        if fs >= start and followed != NO_FACE:
            face = next((f for f in fc if f.face_id == followed), None)
        elif not fc:
            if fs < start:
                followed = NO_FACE
            face = None
        else:
            face = max(fc, key=lambda f: int(f.box[2]) * int(f.box[3]))
            followed = face.face_id
        if face is not None:
            mouths[i], has[i] = face.mouth, True
    return mouths, has


def speech_span(clip: GraphClip, vad_params: dict[str, Any] | None = None, name: str = "") -> tuple[int, int]:
    """``[start, end)`` from the first SPEECH_START to the last SPEECH_END of our VAD over the clip (as the vad
    node decides them in the graph); :class:`NoSpeechError` without speech."""
    from kikimimi.models.vad import VadConfig, speech_spans

    spans = speech_spans(clip.audio, SAMPLE_RATE, VadConfig.from_params(vad_params))
    if not spans:
        raise NoSpeechError(f"{name or 'clip'}: the VAD found no speech in {len(clip.audio) / SAMPLE_RATE:.2f} s")
    if len(spans) > 1:
        log.warning("%s: the VAD found %d speech segments %s; training on one span from %d to %d (the node decodes "
                 "them as %d utterances)", name or "clip", len(spans), spans, spans[0][0], spans[-1][1], len(spans))
    return spans[0][0], spans[-1][1]


def span_features(audio: np.ndarray, frame_samples: np.ndarray, mouths: np.ndarray, has_face: np.ndarray,
                  start: int, end: int, n_mels: int = 80) -> dict[str, np.ndarray]:
    """The features of the utterance ``[start, end)`` as a stream computes them after ``begin(start)`` ...
    ``endpoint(end)``: the fbank of ``audio[start:end]`` (int16 values, the int16-range input the stream's
    fbank gets) and the video frames within a model frame of the span; ``span`` = [start, end]."""
    if not 0 <= start <= end <= len(audio):
        raise ParamError(f"span [{start}, {end}) is not allowed; allowed: 0 <= start <= end <= {len(audio)}")
    x = np.asarray(audio[start:end]).astype(np.float32)
    fs = np.asarray(frame_samples, np.int64)
    near = (fs >= start - FRAME_SAMPLES) & (fs <= end + FRAME_SAMPLES)
    return {"fbank": kaldi_fbank(x, n_mels), "mouths": np.ascontiguousarray(mouths[near], np.uint8),
            "has_face": np.asarray(has_face, bool)[near], "frame_samples": fs[near],
            "span": np.array([start, end], np.int64)}


def extract_features(video: Path, n_mels: int = 80, segment: str = "vad",
                     vad_params: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Read ``video`` as the graph does, find its span (``segment``) and compute its features (no cache)."""
    _check_segment(segment)
    clip = read_graph_clip(video)
    if segment == "vad":
        start, end = speech_span(clip, vad_params, Path(video).name)
    else:
        start, end = 0, len(clip.audio)
    mouths, has = follow_face(clip.faces, clip.frame_samples, start)
    return span_features(clip.audio, clip.frame_samples, mouths, has, start, end, n_mels)


def load_features(video: Path, cache_dir: Path | None, n_mels: int = 80, segment: str = "vad",
                  vad_params: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """``video``'s features from the cache, or extracted and then cached (``cache_dir`` None: no cache)."""
    _check_segment(segment)
    # Only options that differ from extract_features' defaults are passed, so a stand-in with the
    # (video, n_mels) signature of feature version 1 (the tests' fakes) still works.
    opts: dict[str, Any] = {}
    if segment != "vad":
        opts["segment"] = segment
    if vad_params and segment == "vad":
        opts["vad_params"] = vad_params
    if cache_dir is None:
        return extract_features(video, n_mels, **opts)
    path = cache_path(video, cache_dir, n_mels, segment, vad_params)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in _ARRAYS + tuple(k for k in _OPTIONAL if k in z.files)}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("feature cache %s is unreadable (%s); extracting again", path, exc)
    feats = extract_features(video, n_mels, **opts)
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
    """The usable clips of a folder (``items``) and what was skipped (``skipped``); see the module docstring.

    ``segment``: "vad" (default: the span our VAD finds, as the avsr node decodes it) or "whole" (the whole
    clip); ``vad_params``: the graph's ``vad`` node params (default: the node's defaults)."""

    def __init__(self, folder: str | Path, cache_dir: str | Path | None = None, n_mels: int = 80,
                 vocab: str = VOCAB, use_cache: bool = True, segment: str = "vad",
                 vad_params: dict[str, Any] | None = None) -> None:
        self.segment = _check_segment(segment)
        if vad_params and segment == "vad":          # wrong names or values fail here, not once per clip
            from kikimimi.models.vad import VadConfig

            try:
                VadConfig.from_params(vad_params)
            except ParamError as exc:
                raise ParamError(f"vad_params (the vad node's): {exc}") from None
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
                f = load_features(video, cache, n_mels, segment, vad_params)
            except NoSpeechError as exc:
                self.skipped.append(Skipped(video, f"{exc} (the avsr node would not decode it)"))
                continue
            except errors as exc:
                self.skipped.append(Skipped(video, f"could not be read: {exc}"))
                continue
            span = f.get("span")
            start, end = (int(span[0]), int(span[1])) if span is not None else (0, None)
            clip = ClipFeatures(video, text, f["fbank"], f["mouths"], f["has_face"], f["frame_samples"], start, end)
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
