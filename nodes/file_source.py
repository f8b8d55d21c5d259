"""``file_source``: plays an audio or video file as if it were a live capture device.

Audio files (wav, flac, ogg) are read block by block with soundfile and resampled with a streaming
``soxr.ResampleStream``, so the chunks join seamlessly and a long file is never loaded whole. Video
containers (mp4, mpg, mkv, webm, avi, mov) go through PyAV: the audio through ``av.AudioResampler`` to
the target rate, and (with ``video: true``) the picture as bgr24 :class:`VideoFrame` messages.

Audio leaves in chunks of exactly ``chunk_ms`` (the last one may be shorter) whose
``header.sample_index`` counts samples from 0 with no gaps. Each chunk is released when its last
sample is "captured" on a :class:`ReplayClock` (real time at ``speed: 1``, as fast as possible at
``speed: 0``), and ``header.t_ns`` is that capture instant. A video frame's ``header.sample_index`` is
the audio sample index at its presentation time, counted from the start of the audio track (frames
before it are pinned to sample 0); frames are held back until the audio before them is out, so the
two ports leave in time order.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from kikimimi.engine.clock import NS_PER_S, Clock, ReplayClock
from kikimimi.engine.errors import MissingDependency, ParamError
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.vision import VideoFrame
from kikimimi.engine.node import PortSpec, Source
from kikimimi.engine.params import REQUIRED, Param, ParamValues
from kikimimi.models.pcm import DTYPE_CHOICES, convert, downmix
from kikimimi.nodes._audio import CHUNK_MS_CHOICES, Rechunker

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
AV_EXTENSIONS = (".mp4", ".mpg", ".mkv", ".webm", ".avi", ".mov")
MAX_HELD_FRAMES = 64
"""Video frames held back waiting for audio before they are released anyway (badly interleaved files)."""


class _Frame(NamedTuple):
    """A decoded video frame waiting to be emitted."""

    media_ns: int
    sample_index: int
    image: np.ndarray


def check_path(path: str) -> Path:
    """The path as a Path; FileNotFoundError or ParamError (naming the allowed extensions) if unusable."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in AUDIO_EXTENSIONS + AV_EXTENSIONS:
        raise ParamError(
            f"file_source: path {path!r} has unsupported extension {ext or '(none)'!r}; allowed: "
            f"{', '.join(AUDIO_EXTENSIONS + AV_EXTENSIONS)}"
        )
    if not p.is_file():
        raise FileNotFoundError(f"file_source: no such file: {path!r}")
    return p


class _SoundfileReader:
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
        self.done = False

    def read(self) -> tuple[np.ndarray, list[_Frame]]:
        """The next block of float32 audio at the target rate (possibly empty); sets ``done`` at the end."""
        x = self._f.read(self._block, dtype="float32", always_2d=True)
        last = x.shape[0] < self._block
        if self._mono:
            x = downmix(x)
        if self._rs is not None:
            x = self._rs.resample_chunk(x, last=last)
        self.done = last
        return x, []

    def close(self) -> None:
        self._f.close()


class _AvReader:
    """Demuxes a container with PyAV one packet at a time: audio at the target rate, frames as bgr24."""

    def __init__(self, path: Path, rate: int, mono: bool, video: bool, node: FileSource) -> None:
        try:
            import av
        except ImportError as e:
            raise MissingDependency("PyAV", "pip install 'kikimimi[av]'") from e
        self._av: Any = av
        self._node = node
        self._rate = rate
        self._mono = mono
        self._c = av.open(str(path))
        self._a = self._c.streams.audio[0] if self._c.streams.audio else None
        self._v = self._c.streams.video[0] if video and self._c.streams.video else None
        if self._a is None and self._v is None:
            what = "audio or video track" if video else "audio track (set video: true to read its video)"
            raise ParamError(f"file_source: {str(path)!r} has no {what}")
        if video and self._v is None:
            node.log.warning("file_source: %s has no video track; emitting audio only", path)
        first = self._a if self._a is not None else self._v
        self._t0 = Fraction(first.start_time or 0) * first.time_base  # media time 0 (seconds)
        self._resampler = av.AudioResampler(format="flt", layout=None, rate=rate)
        self._packets = self._c.demux(*(s for s in (self._a, self._v) if s is not None))
        self._last_v: Fraction | None = None
        self.has_audio = self._a is not None
        self.channels = 1 if mono or self._a is None else len(self._a.layout.channels)
        self.done = False

    def read(self) -> tuple[np.ndarray, list[_Frame]]:
        """Audio and video decoded from the next packet; at the end, what the resampler still holds."""
        audio: list[np.ndarray] = []
        frames: list[_Frame] = []
        pkt = next(self._packets, None)
        if pkt is None:
            self.done = True
            if self._a is not None:
                audio += [self._samples(f) for f in self._resampler.resample(None)]
        else:
            try:
                decoded = pkt.decode()
            except self._av.error.FFmpegError as e:
                self._node.stats.count_drop("error")
                self._node.throttled(logging.WARNING, "decode",
                                     "file_source: skipping an undecodable packet: %s", e)
                decoded = []
            for f in decoded:
                if pkt.stream is self._a:
                    audio += [self._samples(r) for r in self._resampler.resample(f)]
                else:
                    frames.append(self._frame(f))
        x = np.concatenate(audio) if audio else np.zeros((0, self.channels), np.float32)
        return x, frames

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


class FileSource(Source):
    """Plays a wav/flac/ogg file, or the audio (and optionally video) of an mp4/mpg/mkv/webm/avi/mov."""

    kind = "file_source"
    help = "Plays an audio or video file as a paced live stream of AudioChunks (and VideoFrames)."
    outputs = (
        PortSpec("audio", (AudioChunk,), help="audio in chunk_ms chunks, contiguous sample indices"),
        PortSpec("video", (VideoFrame,), help="bgr24 frames (only with video: true)"),
    )
    params = (
        Param("path", str, REQUIRED, "file to play (wav, flac, ogg, mp4, mpg, mkv, webm, avi, mov)"),
        Param("stream_id", str, "file", "stream id written into every header"),
        Param("sample_rate", int, 16000, "output sample rate (Hz)", min=8000, max=48000),
        Param("channels", int, 1, "1 = downmix to mono (mean), 0 = keep the file's channels", choices=(1, 0)),
        Param("dtype", str, "int16", "sample format of the chunks", choices=DTYPE_CHOICES),
        Param("chunk_ms", int, 20, "chunk length in milliseconds", choices=CHUNK_MS_CHOICES),
        Param("speed", float, 1.0, "1.0 = real-time pacing, 2.0 = twice as fast, 0 = as fast as possible",
              min=0.0),
        Param("video", bool, False, "also emit the video track (video containers only)"),
    )

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        if not self.p.stream_id:
            raise ParamError(f"node {name!r} (file_source): stream_id must be a non-empty string")
        self._path = check_path(self.p.path)
        self._reader: _SoundfileReader | _AvReader | None = None
        self._chunks: Rechunker | None = None
        self._video: deque[_Frame] = deque()
        self._frame_index = 0
        self._replay = ReplayClock(self.p.speed, base=self.clock)

    def on_start(self) -> None:
        """Open the file (checking again that it is there) and set up the re-chunker."""
        path = check_path(self.p.path)
        mono = self.p.channels == 1
        if path.suffix.lower() in AUDIO_EXTENSIONS:
            self._reader = _SoundfileReader(path, self.p.sample_rate, mono, self.p.chunk_ms)
        else:
            self._reader = _AvReader(path, self.p.sample_rate, mono, self.p.video, self)
        self._chunks = Rechunker(self.p.sample_rate, self.p.chunk_ms, self._reader.channels, np.float32)

    def on_stop(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def produce(self, stop: threading.Event) -> bool:
        """Emit the next audio chunk or video frame once it is due, or read one more block/packet.

        Returns False at the end of the file (everything emitted) or when ``stop`` is set.
        """
        reader, chunks = self._reader, self._chunks
        if reader is None or chunks is None:
            raise RuntimeError(
                f"file_source {self.name!r}: produce() called before on_start() or after on_stop()"
            )
        if stop.is_set():
            return False
        a_end = chunks.next_end(final=reader.done)
        v = self._video[0] if self._video else None
        if v is not None and (a_end is None or v.media_ns < self._ns(a_end)) and (
            reader.done or not reader.has_audio or chunks.end >= v.sample_index
            or len(self._video) > MAX_HELD_FRAMES
        ):
            return self._emit_frame(self._video.popleft(), stop)
        if a_end is not None:
            return self._emit_chunk(stop)
        if reader.done:
            return False
        x, frames = reader.read()
        chunks.push(x)
        self._video.extend(frames)
        return True

    def _ns(self, sample_index: int) -> int:
        return sample_index * NS_PER_S // self.p.sample_rate

    def _emit_chunk(self, stop: threading.Event) -> bool:
        if self._chunks is None or self._reader is None:
            return False
        got = self._chunks.pop(final=self._reader.done)
        if got is None:
            return True
        start, x = got
        end_ns = self._ns(start + x.shape[0])
        if not self._replay.wait_for_media(end_ns, stop):
            return False
        header = self.header("audio", self.p.stream_id, start, self._replay.capture_ns(end_ns))
        self.emit("audio", AudioChunk(header, convert(x, self.p.dtype), self.p.sample_rate))
        return True

    def _emit_frame(self, f: _Frame, stop: threading.Event) -> bool:
        if not self._replay.wait_for_media(f.media_ns, stop):
            return False
        header = self.header("video", self.p.stream_id, f.sample_index, self._replay.capture_ns(f.media_ns))
        self.emit("video", VideoFrame(header, f.image, "bgr24", self._frame_index))
        self._frame_index += 1
        return True
