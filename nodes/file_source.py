"""``file_source``: plays an audio or video file as if it were a live capture device.

The file is read by a :class:`~kikimimi.models.media.MediaReader` (audio files with soundfile and a
streaming soxr resampler, video containers with PyAV; ``video: true`` adds the pictures as bgr24
:class:`VideoFrame` messages): audio in chunks of exactly ``chunk_ms`` (the last one may be shorter) whose
``header.sample_index`` counts samples from 0 with no gaps, and frames whose ``header.sample_index`` is the
audio sample index at their presentation time, counted from the start of the audio track (frames before
it are pinned to sample 0), in time order. This node only paces them: each chunk is released when its last
sample is "captured" on a :class:`ReplayClock` (real time at ``speed: 1``, as fast as possible at
``speed: 0``), each frame at its presentation time, and ``header.t_ns`` is that capture instant. An
undecodable packet is skipped, counted (``error``) and logged. A file that cannot be read to its end (truncated
or damaged) ends the stream where it breaks, with a warning: what was decoded before is played as usual.
Whether a file is read with soundfile or PyAV is decided by its content, not its extension.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from kikimimi.engine.clock import Clock, ReplayClock
from kikimimi.engine.errors import ParamError
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.vision import VideoFrame
from kikimimi.engine.node import PortSpec, Source
from kikimimi.engine.params import REQUIRED, Param, ParamValues
from kikimimi.models.media import AudioPiece, MediaConfig, MediaReader, PacketSkipped, check_media_path
from kikimimi.models.pcm import DTYPE_CHOICES, convert
from kikimimi.models.rechunk import CHUNK_MS_CHOICES


def check_path(path: str) -> Path:
    """The path as a Path; FileNotFoundError, or ParamError if it is a directory or not an audio or video file."""
    try:
        return check_media_path(path)
    except ParamError as e:
        raise ParamError(f"file_source: {e}") from None
    except FileNotFoundError as e:
        raise FileNotFoundError(f"file_source: {e}") from None


class FileSource(Source):
    """Plays an audio file (wav, flac, ogg, mp3, m4a, opus ...), or the audio (and optionally video) of a video
    file (mp4, mpg, mkv, webm, avi, mov ...)."""

    kind = "file_source"
    help = "Plays an audio or video file as a paced live stream of AudioChunks (and VideoFrames)."
    outputs = (
        PortSpec("audio", (AudioChunk,), help="audio in chunk_ms chunks, contiguous sample indices"),
        PortSpec("video", (VideoFrame,), help="bgr24 frames (only with video: true)"),
    )
    params = (
        Param("path", str, REQUIRED,
              "audio or video file to play (anything libsndfile or FFmpeg reads: wav, flac, mp3, m4a, mp4, ...)"),
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
        self._config = MediaConfig(self.p.sample_rate, self.p.channels == 1, self.p.chunk_ms, self.p.video)
        self._reader: MediaReader | None = None
        self._replay = ReplayClock(self.p.speed, base=self.clock)

    def on_start(self) -> None:
        """Open the file (checking again that it is there)."""
        path = check_path(self.p.path)
        try:
            self._reader = MediaReader(path, self._config)
        except ParamError as e:
            raise ParamError(f"file_source: {e}") from None
        if self._reader.missing_video:
            self.log.warning("file_source: %s has no video track; emitting audio only", path)

    def on_stop(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def produce(self, stop: threading.Event) -> bool:
        """Emit the next audio chunk or video frame once it is due (reading the file as far as that takes).

        Returns False at the end of the file (everything emitted) or when ``stop`` is set.
        """
        reader = self._reader
        if reader is None:
            raise RuntimeError(
                f"file_source {self.name!r}: produce() called before on_start() or after on_stop()"
            )
        if stop.is_set():
            return False
        item = reader.read()
        if item is None:
            if reader.broken is not None:
                self.log.warning("file_source: %s ends early, it is truncated or damaged (%s); kept the first %.1f s",
                                 self.p.path, reader.broken, reader.position_s)
            return False
        if isinstance(item, PacketSkipped):
            self.stats.count_drop("error")
            self.throttled(logging.WARNING, "decode", "file_source: skipping an undecodable packet: %s", item.error)
            return True
        if isinstance(item, AudioPiece):
            if not self._replay.wait_for_media(item.end_ns, stop):
                return False
            header = self.header("audio", self.p.stream_id, item.sample_index, self._replay.capture_ns(item.end_ns))
            self.emit("audio", AudioChunk(header, convert(item.samples, self.p.dtype), self.p.sample_rate))
            return True
        if not self._replay.wait_for_media(item.media_ns, stop):
            return False
        header = self.header("video", self.p.stream_id, item.sample_index, self._replay.capture_ns(item.media_ns))
        self.emit("video", VideoFrame(header, item.image, "bgr24", item.frame_index))
        return True
