"""``mic_source``: live audio from a capture device through sounddevice (PortAudio).

The PortAudio callback (its own thread) copies each block into a bounded backlog, tagged with the
absolute index of its first sample and the clock time at which it arrived (the capture time of its
last sample). When the backlog exceeds ``max_backlog_ms`` the oldest blocks are dropped and counted
(``overflow``). Sample indices count every frame the device delivered, dropped ones included, so they
stay on the device's audio clock: a drop shows downstream as a jump in ``header.sample_index``.

``produce`` cuts the backlog into chunks on the stream's chunk grid (a chunk never spans a gap; the
chunk before a gap may be short) and emits them with ``header.t_ns`` = arrival time of the chunk's
last sample.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections import deque
from typing import Any

import numpy as np

from kikimimi.engine.clock import Clock
from kikimimi.engine.errors import DeviceUnavailable, MissingDependency, ParamError
from kikimimi.engine.metrics import DROP_OVERFLOW
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.node import PortSpec, Source
from kikimimi.engine.params import Param, ParamValues
from kikimimi.models.pcm import DTYPE_CHOICES
from kikimimi.models.rechunk import CHUNK_MS_CHOICES, Rechunker

PIP_INSTALL = "pip install 'kikimimi[mic]'"
APT_INSTALL = "apt-get install libportaudio2 && pip install 'kikimimi[mic]'"
WAIT_S = 0.05
"""Longest real-time wait in one ``produce`` call when no audio has arrived (keeps ``stop`` responsive)."""


def import_sounddevice() -> Any:
    """The sounddevice module, or MissingDependency with the command that installs what is missing."""
    try:
        return importlib.import_module("sounddevice")
    except ImportError as e:
        raise MissingDependency("sounddevice", PIP_INSTALL) from e
    except OSError as e:  # sounddevice is installed but the PortAudio shared library is not
        if "PortAudio" in str(e):
            raise MissingDependency("the PortAudio library", APT_INSTALL) from e
        raise


def input_devices(sd: Any) -> list[str]:
    """Capture devices PortAudio reports, as "index: name" strings."""
    try:
        devices = sd.query_devices()
    except Exception as e:  # PortAudioError and friends: no usable audio system at all
        raise DeviceUnavailable(f"cannot list audio devices: {e}") from e
    return [f"{i}: {d['name']}" for i, d in enumerate(devices) if d.get("max_input_channels", 0) > 0]


class MicSource(Source):
    """Captures audio from a microphone (default input device, or one named by index or name)."""

    kind = "mic_source"
    help = "Live microphone capture through sounddevice/PortAudio, as AudioChunks."
    outputs = (PortSpec("audio", (AudioChunk,), help="captured audio; a gap in sample_index marks a drop"),)
    params = (
        Param("device", str, None, "input device index or (part of its) name; null = the default input",
              nullable=True),
        Param("stream_id", str, "mic", "stream id written into every header"),
        Param("sample_rate", int, 16000, "capture sample rate (Hz)", min=8000, max=48000),
        Param("channels", int, 1, "channels to capture", min=1, max=32),
        Param("dtype", str, "int16", "sample format of the chunks", choices=DTYPE_CHOICES),
        Param("chunk_ms", int, 20, "chunk length in milliseconds", choices=CHUNK_MS_CHOICES),
        Param("max_backlog_ms", int, 2000, "captured audio held before the oldest is dropped (ms)", min=10),
    )

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        if not self.p.stream_id:
            raise ParamError(f"node {name!r} (mic_source): stream_id must be a non-empty string")
        self._max_backlog = self.p.max_backlog_ms * self.p.sample_rate // 1000
        self._lock = threading.Lock()
        self._arrived = threading.Event()
        self._backlog: deque[tuple[int, int, np.ndarray]] = deque()  # (first index, arrival t_ns, samples)
        self._held = 0          # samples in the backlog
        self._captured = 0      # samples delivered by the device so far (dropped ones included)
        self._chunks = Rechunker(self.p.sample_rate, self.p.chunk_ms, self.p.channels, np.dtype(self.p.dtype))
        self._pending_t: list[tuple[int, int]] = []  # (end index, arrival t_ns) of blocks in the rechunker
        self._stream: Any = None

    def _device(self, sd: Any) -> int | str | None:
        """The device to open, checked against the input devices PortAudio knows."""
        found = input_devices(sd)
        asked = self.p.device
        listing = "; ".join(found) or "(none)"
        if not found:
            raise DeviceUnavailable(f"mic_source: no audio input device found (asked for {asked!r}); "
                                    f"input devices: {listing}")
        device: int | str | None = int(asked) if asked is not None and asked.isdigit() else asked
        try:
            sd.query_devices(device, "input")
        except Exception as e:  # ValueError (no such device) or PortAudioError
            raise DeviceUnavailable(
                f"mic_source: input device {asked!r} is not available ({e}); input devices: {listing}"
            ) from e
        return device

    def on_start(self) -> None:
        """Open and start the input stream; MissingDependency / DeviceUnavailable say what to do."""
        sd = import_sounddevice()
        device = self._device(sd)
        try:
            self._stream = sd.InputStream(
                samplerate=self.p.sample_rate, channels=self.p.channels, dtype=self.p.dtype, device=device,
                blocksize=self.p.sample_rate * self.p.chunk_ms // 1000, callback=self._callback,
            )
            self._stream.start()
        except Exception as e:  # PortAudioError: busy device, unsupported rate or channel count
            raise DeviceUnavailable(
                f"mic_source: cannot open input device {self.p.device!r} at {self.p.sample_rate} Hz, "
                f"{self.p.channels} channel(s): {e}; "
                f"input devices: {'; '.join(input_devices(sd)) or '(none)'}"
            ) from e

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio thread: copy the block into the backlog, dropping the oldest blocks past the limit."""
        if status:
            self.throttled(logging.WARNING, "status", "mic_source %s: PortAudio reports %s",
                           self.name, status)
        t_ns = self.clock.now_ns()
        block = np.array(indata[:frames], copy=True)
        dropped = 0
        with self._lock:
            self._backlog.append((self._captured, t_ns, block))
            self._captured += frames
            self._held += frames
            while self._held > self._max_backlog and len(self._backlog) > 1:
                old = self._backlog.popleft()[2]
                self._held -= old.shape[0]
                dropped += 1
                self.stats.count_drop(DROP_OVERFLOW)
        if dropped:
            self.throttled(logging.WARNING, "overflow", "mic_source %s: backlog over %d ms, dropped the "
                           "oldest audio (consumer too slow)", self.name, self.p.max_backlog_ms)
        self._arrived.set()

    def _take(self) -> bool:
        """Move the oldest backlog block into the re-chunker. False if the backlog is empty."""
        with self._lock:
            if not self._backlog:
                self._arrived.clear()
                return False
            start, t_ns, block = self._backlog.popleft()
            self._held -= block.shape[0]
        if start != self._chunks.end:  # a gap: what is pending leaves as a short chunk first
            self._emit_pending(final=True)
            self._chunks.reset(start)
        self._chunks.push(block)
        self._pending_t.append((start + block.shape[0], t_ns))
        return True

    def _emit_pending(self, final: bool) -> bool:
        """Emit one chunk from the re-chunker if one is ready."""
        got = self._chunks.pop(final=final)
        if got is None:
            return False
        start, x = got
        end = start + x.shape[0]
        t_ns = next((t for e, t in self._pending_t if e >= end), self.clock.now_ns())
        self._pending_t = [(e, t) for e, t in self._pending_t if e > end]
        header = self.header("audio", self.p.stream_id, start, t_ns)
        self.emit("audio", AudioChunk(header, x, self.p.sample_rate))
        return True

    def produce(self, stop: threading.Event) -> bool:
        """Emit the next chunk if one is ready, else wait briefly for the device. False once it stopped."""
        if self._emit_pending(final=False):
            return True
        while self._take():  # bounded by the backlog
            if self._emit_pending(final=False):
                return True
        if self._stream is not None and not self._stream.active:
            self.log.warning("mic_source %s: the input stream stopped", self.name)
            return self._emit_pending(final=True)
        self._arrived.wait(WAIT_S)
        return not stop.is_set()

    def on_stop(self) -> None:
        """Stop the device, then emit what was captured before it stopped."""
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
        while self._take() or self._emit_pending(final=False):
            pass
        while self._emit_pending(final=True):
            pass
