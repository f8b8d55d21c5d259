"""Reading audio and video files as the graph's ``file_source`` plays them.

:class:`MediaReader` reads a file in the order ``file_source`` emits it, without pacing: files libsndfile
reads (wav, flac, ogg ...) block by block with soundfile, resampled with a streaming
``soxr.ResampleStream`` (the chunks join seamlessly, a long file is never loaded whole); anything else FFmpeg
reads (mp3, mp4, m4a, webm, mpg, mkv ...) packet by packet with PyAV (which one is decided by the content,
:func:`media_kind`, not the file name), the audio through ``av.AudioResampler`` to the target rate and (with
``video``) the pictures as bgr24. Audio comes in :class:`AudioPiece` s of exactly ``chunk_ms`` (the last
may be shorter) whose sample indices count from 0 with no gaps. A :class:`VideoPicture` 's sample index is
the audio sample at its presentation time, counted from the start of the audio track (pictures before it
are pinned to sample 0); pictures are held back until the audio before them is out (at most
:data:`MAX_HELD_FRAMES`), so the items come in time order. A packet FFmpeg cannot decode gives a
:class:`PacketSkipped` and the reading goes on; a file that cannot be read further (truncated or damaged)
ends there, what was decoded before is kept, and :attr:`MediaReader.broken` says why.

:func:`read_container_audio` reads a container's whole audio at once, mixed to mono the way the reader
does it: resampled with the file's own channel layout, channels averaged ((L + R) / 2). PyAV's own
``layout="mono"`` downmix follows FFmpeg's pan law instead ((L + R) * 0.707), 3 dB louder for stereo, so
features computed offline (training, enrollment, tests) would not equal those the graph computes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from kikimimi.engine.clock import NS_PER_S
from kikimimi.engine.errors import KikimimiError, MissingDependency, ParamError
from kikimimi.models.pcm import downmix
from kikimimi.models.rechunk import CHUNK_MS_CHOICES, Rechunker

SOUNDFILE_BUT_BETTER_AV = ("MP3", "MPEG")
"""libsndfile formats read with FFmpeg instead when PyAV is there (libsndfile's mpg123 mis-decodes some MP3s)."""
NOT_MEDIA_FORMATS = ("tty", "image2", "ansi", "bin", "xbin", "idf", "adf")
"""FFmpeg demuxers whose "video" is a picture or text (with ``*_pipe``): such a file is not a recording."""
MAX_HELD_FRAMES = 64
"""Video frames held back waiting for audio before they are released anyway (badly interleaved files)."""


def media_kind(path: str | Path) -> str:
    """How ``path`` is read, decided by its content, not its name: ``"soundfile"`` (libsndfile reads it: wav,
    flac, ogg ...; MP3 only without PyAV) or ``"av"`` (FFmpeg through PyAV finds an audio or video track in it:
    mp3, mp4, m4a, webm, mpg ...). FileNotFoundError if it is missing; ParamError if it is a directory or not
    an audio or video file; MissingDependency if only PyAV could tell and it is not installed."""
    p = Path(path)
    if p.is_dir():
        raise ParamError(f"{str(path)!r} is a directory, not an audio or video file")
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    sf_format = None
    try:
        import soundfile

        sf_format = soundfile.info(str(p)).format
    except (RuntimeError, OSError, ImportError):
        pass
    if sf_format is not None and sf_format not in SOUNDFILE_BUT_BETTER_AV:
        return "soundfile"
    try:
        import av
    except ImportError:
        if sf_format is not None:
            return "soundfile"
        raise MissingDependency(f"{str(path)!r} is not an audio file libsndfile reads; PyAV (for video containers "
                                "and other compressed audio)", "pip install 'kikimimi[av]'") from None
    try:
        with av.open(str(p)) as c:
            fmt = c.format.name
            if c.streams.audio or (c.streams.video and fmt not in NOT_MEDIA_FORMATS and not fmt.endswith("_pipe")):
                return "av"
    except (av.error.FFmpegError, OSError, ValueError):
        pass
    raise ParamError(f"{str(path)!r} is not an audio or video file (neither libsndfile nor FFmpeg can read "
                     "an audio or video track from it)")


def check_media_path(path: str | Path) -> Path:
    """The path as a Path, if it is an audio or video file (see :func:`media_kind`); FileNotFoundError or
    ParamError (saying what is wrong) if not."""
    media_kind(path)
    return Path(path)


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """How a file is read (``file_source``'s parameters of the same meaning): output ``sample_rate`` (8-48 kHz),
    ``mono`` (channels averaged; else the file's channels), ``chunk_ms`` (one of CHUNK_MS_CHOICES) and
    ``video`` (also the pictures of a video container)."""

    sample_rate: int = 16000
    mono: bool = True
    chunk_ms: int = 20
    video: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.sample_rate, int) or not 8000 <= self.sample_rate <= 48000:
            raise ParamError(f"sample_rate={self.sample_rate!r} is not allowed; allowed: an int, 8000 <= "
                             "sample_rate <= 48000")
        if self.chunk_ms not in CHUNK_MS_CHOICES:
            raise ParamError(f"chunk_ms={self.chunk_ms!r} is not allowed; allowed: "
                             f"{', '.join(map(str, CHUNK_MS_CHOICES))}")


@dataclass(frozen=True, slots=True, eq=False)
class AudioPiece:
    """float32 ``samples`` (n, channels) in [-1, 1] from sample ``sample_index``; ``end_ns``: the media time of
    their end (one past the last sample)."""

    sample_index: int
    samples: np.ndarray
    end_ns: int


@dataclass(frozen=True, slots=True, eq=False)
class VideoPicture:
    """A bgr24 ``image`` (h, w, 3), the ``frame_index``-th picture read (from 0), at media time ``media_ns`` =
    audio sample ``sample_index``."""

    frame_index: int
    sample_index: int
    media_ns: int
    image: np.ndarray


@dataclass(frozen=True, slots=True)
class PacketSkipped:
    """A packet FFmpeg could not decode (``error`` says why); the reading went on."""

    error: str


MediaItem = AudioPiece | VideoPicture | PacketSkipped


class _Frame:
    __slots__ = ("image", "media_ns", "sample_index")

    def __init__(self, media_ns: int, sample_index: int, image: np.ndarray) -> None:
        self.media_ns, self.sample_index, self.image = media_ns, sample_index, image


class _SoundfileDecoder:
    """Reads an audio file one block at a time, downmixes and resamples it to the target format."""

    def __init__(self, path: Path, rate: int, mono: bool, block_ms: int) -> None:
        import soundfile as sf
        import soxr

        self._f = sf.SoundFile(str(path))
        self.channels = 1 if mono else self._f.channels
        self._mono = mono
        self._block = max(1, self._f.samplerate * block_ms // 1000)
        self._rs = None
        if self._f.samplerate != rate:
            self._rs = soxr.ResampleStream(self._f.samplerate, rate, self.channels, dtype="float32")
        self.has_audio = True
        self.has_video = False
        self.done = False
        self.broken: str | None = None

    def read(self) -> tuple[np.ndarray, list[_Frame], str | None]:
        """The next block of float32 audio at the target rate (possibly empty); sets ``done`` at the end, and at
        a decoding error (a damaged or truncated file), with ``broken`` saying why: what was read is kept."""
        try:
            x = self._f.read(self._block, dtype="float32", always_2d=True)
        except RuntimeError as e:   # soundfile.LibsndfileError: "flac decoder lost sync" and the like
            self.broken = str(e) or type(e).__name__
            x = np.zeros((0, self._f.channels), np.float32)
        last = self.broken is not None or x.shape[0] < self._block
        if self._mono:
            x = downmix(x)
        if self._rs is not None:
            x = self._rs.resample_chunk(x, last=last)
        self.done = last
        return x, [], None

    def close(self) -> None:
        self._f.close()


class _AvDecoder:
    """Demuxes a container with PyAV one packet at a time: audio at the target rate, frames as bgr24."""

    def __init__(self, path: Path, rate: int, mono: bool, video: bool) -> None:
        try:
            import av
        except ImportError as e:
            raise MissingDependency("PyAV", "pip install 'kikimimi[av]'") from e
        self._av: Any = av
        self._rate = rate
        self._mono = mono
        self._c = av.open(str(path))
        self._a = self._c.streams.audio[0] if self._c.streams.audio else None
        self._v = self._c.streams.video[0] if video and self._c.streams.video else None
        if self._a is None and self._v is None:
            self._c.close()
            what = "audio or video track" if video else "audio track (set video: true to read its video)"
            raise ParamError(f"{str(path)!r} has no {what}")
        first = self._a if self._a is not None else self._v
        self._t0 = Fraction(first.start_time or 0) * first.time_base  # media time 0 (seconds)
        self._resampler = av.AudioResampler(format="flt", layout=None, rate=rate)
        self._packets = self._c.demux(*(s for s in (self._a, self._v) if s is not None))
        self._last_v: Fraction | None = None
        self.has_audio = self._a is not None
        self.has_video = self._v is not None
        self.channels = 1 if mono or self._a is None else len(self._a.layout.channels)
        self.done = False
        self.broken: str | None = None

    def read(self) -> tuple[np.ndarray, list[_Frame], str | None]:
        """Audio and video decoded from the next packet (and why it could not be, if so); at the end, what
        the resampler still holds."""
        audio: list[np.ndarray] = []
        frames: list[_Frame] = []
        error = None
        try:
            pkt = next(self._packets, None)
        except self._av.error.FFmpegError as e:   # the container itself is damaged: end here, keep what was read
            self.broken = str(e) or type(e).__name__
            pkt = None
        if pkt is None:
            self.done = True
            if self._a is not None:
                audio += [self._samples(f) for f in self._resampler.resample(None)]
        else:
            try:
                decoded = pkt.decode()
            except self._av.error.FFmpegError as e:
                error = str(e)
                decoded = []
            for f in decoded:
                if pkt.stream is self._a:
                    audio += [self._samples(r) for r in self._resampler.resample(f)]
                else:
                    frames.append(self._frame(f))
        x = np.concatenate(audio) if audio else np.zeros((0, self.channels), np.float32)
        return x, frames, error

    def _samples(self, frame: Any) -> np.ndarray:
        x = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
        return downmix(x) if self._mono else x

    def _frame(self, frame: Any) -> _Frame:
        if frame.pts is not None:
            t = Fraction(frame.pts) * frame.time_base
        else:  # no timestamp: one frame period after the previous frame
            step = Fraction(1, int(self._v.average_rate or 25))
            t = self._last_v + step if self._last_v is not None else self._t0
        self._last_v = t
        rel = max(Fraction(0), t - self._t0)
        image = np.ascontiguousarray(frame.to_ndarray(format="bgr24"))
        return _Frame(int(rel * NS_PER_S), math.floor(rel * self._rate + Fraction(1, 2)), image)

    def close(self) -> None:
        self._c.close()


class MediaReader:
    """A file's audio pieces and video pictures in time order; see the module docstring. ``read()`` gives the
    next item (None at the end); iterating gives them all. Close it (or use ``with``) when done.

    How it is read is decided by the content (:func:`media_kind`), not the file name. Raises FileNotFoundError /
    ParamError for an unusable path (a directory, not an audio or video file) or a container without the tracks
    asked for,
    :class:`MissingDependency` for a video container without PyAV. ``missing_video``: video was asked for but
    the file has none (only its audio is read)."""

    def __init__(self, path: str | Path, config: MediaConfig | None = None) -> None:
        self.path = Path(path)
        self.config = c = config if config is not None else MediaConfig()
        self._dec: _SoundfileDecoder | _AvDecoder
        if media_kind(self.path) == "soundfile":
            self._dec = _SoundfileDecoder(self.path, c.sample_rate, c.mono, c.chunk_ms)
        else:
            self._dec = _AvDecoder(self.path, c.sample_rate, c.mono, c.video)
        self.missing_video = c.video and not self._dec.has_video
        self.channels = self._dec.channels
        self._chunks = Rechunker(c.sample_rate, c.chunk_ms, self._dec.channels, np.float32)
        self._video: deque[_Frame] = deque()
        self._frame_index = 0
        self._closed = False

    @property
    def broken(self) -> str | None:
        """Why the file ended early (it is damaged or truncated: what was decoded before is read as usual), or
        None while it reads (or read) to its end."""
        return self._dec.broken

    @property
    def position_s(self) -> float:
        """Seconds of audio given out so far."""
        return self._chunks.end / self.config.sample_rate

    def read(self) -> MediaItem | None:
        """The next audio piece, picture or skipped packet, reading as much of the file as that takes."""
        dec, chunks, video = self._dec, self._chunks, self._video
        while not self._closed:
            a_end = chunks.next_end(final=dec.done)
            v = video[0] if video else None
            if v is not None and (a_end is None or v.media_ns < self._ns(a_end)) and (
                dec.done or not dec.has_audio or chunks.end >= v.sample_index or len(video) > MAX_HELD_FRAMES
            ):
                video.popleft()
                self._frame_index += 1
                return VideoPicture(self._frame_index - 1, v.sample_index, v.media_ns, v.image)
            if a_end is not None:
                got = chunks.pop(final=dec.done)
                if got is not None:
                    start, x = got
                    return AudioPiece(start, x, self._ns(start + x.shape[0]))
                continue
            if dec.done:
                return None
            x, frames, error = dec.read()
            chunks.push(x)
            video.extend(frames)
            if error is not None:
                return PacketSkipped(error)
        return None

    def __iter__(self) -> Iterator[MediaItem]:
        while (item := self.read()) is not None:
            yield item

    def _ns(self, sample_index: int) -> int:
        return sample_index * NS_PER_S // self.config.sample_rate

    def close(self) -> None:
        """Close the file (reading afterwards gives None)."""
        if not self._closed:
            self._closed = True
            self._dec.close()

    def __enter__(self) -> MediaReader:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def read_container_audio(path: str | Path, rate: int = 16000) -> np.ndarray:
    """The first audio track of ``path``, resampled to ``rate``, channels averaged: float32 (n,) in [-1, 1].

    A file without an audio track gives an empty array. :class:`KikimimiError` when PyAV is missing (with the
    install command) or FFmpeg cannot decode the file.
    """
    try:
        import av
    except ImportError as exc:
        raise KikimimiError(f"cannot read {path}: video containers need PyAV; install it with: "
                            "pip install 'kikimimi[av]'") from exc
    parts: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return np.zeros(0, np.float32)
            channels = len(container.streams.audio[0].layout.channels) or 1
            resampler = av.AudioResampler(format="flt", layout=None, rate=rate)
            for frame in container.decode(audio=0):
                parts += [f.to_ndarray().reshape(-1, channels) for f in resampler.resample(frame)]
            parts += [f.to_ndarray().reshape(-1, channels) for f in resampler.resample(None)]
    except av.error.FFmpegError as exc:
        raise KikimimiError(f"cannot read audio from {path}: {exc}") from exc
    if not parts:
        return np.zeros(0, np.float32)
    x = np.concatenate(parts)
    return np.ascontiguousarray(x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0], np.float32)
