"""``camera_source``: live video from a camera (or a video URL) through OpenCV's VideoCapture.

A reader thread grabs frames as fast as the camera delivers them and keeps only the newest one;
``produce`` emits it once. A frame that is replaced before it was emitted is stale: it is dropped and
counted (``dropped``/``stale``), never queued, so a slow graph sees the camera's present, not its past.

Time: ``header.t_ns`` is the injected clock's time when the frame was read (its capture time as far as
the host can tell). ``header.sample_index`` is NO_SAMPLE: a camera has no audio clock. Nodes that take
audio and faces together (``active_speaker``, ``avsr``) place such frames on the audio clock through
the capture times of the audio chunks (:class:`~kikimimi.engine.timemap.ClockMap`), so the microphone
and the camera must run on the same host clock (one machine, the monotonic clock).

No camera: ``on_start`` raises :class:`~kikimimi.engine.errors.DeviceUnavailable` naming the device
it asked for; no OpenCV: :class:`~kikimimi.engine.errors.MissingDependency` with the install command.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from kikimimi.engine.clock import Clock
from kikimimi.engine.errors import DeviceUnavailable, MissingDependency
from kikimimi.engine.messages import NO_SAMPLE
from kikimimi.engine.msgs.vision import VideoFrame
from kikimimi.engine.node import PortSpec, Source
from kikimimi.engine.params import Param, ParamValues

INSTALL = "pip install 'kikimimi[vision]'"


class CameraSource(Source):
    """Newest-frame-only camera capture; see the module docstring."""

    kind = "camera_source"
    help = "Live camera frames through OpenCV VideoCapture (newest frame only; stale frames dropped and counted)."
    outputs = (PortSpec("video", (VideoFrame,), help="bgr24 frames; sample_index NO_SAMPLE, t_ns = capture time"),)
    params = (
        Param("device", str, "0", "camera index (0, 1, ...) or a stream URL (a video file works but is read as "
              "fast as it decodes, keeping only the newest frame: play files with file_source)"),
        Param("stream_id", str, "cam", "stream id written into every header (use the microphone's for AV graphs)"),
        Param("width", int, 0, "requested frame width (0 = the camera's default)", min=0, max=8192),
        Param("height", int, 0, "requested frame height (0 = the camera's default)", min=0, max=8192),
        Param("fps", float, 0.0, "requested frame rate (0 = the camera's default)", min=0.0, max=240.0),
        Param("max_frames", int, 0, "stop after this many frames (0 = run until stopped)", min=0),
        Param("wait_ms", int, 5000, "give up when no frame arrives for this long (ms, on the node's clock)", min=10),
    )

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        self._cap: Any = None
        self._lock = threading.Condition()
        self._latest: tuple[int, np.ndarray] | None = None  # (capture t_ns, frame)
        self._ended = False
        self._thread: threading.Thread | None = None
        self._index = 0
        self._waiting_since: int | None = None     # clock time when produce began to wait for a frame

    def on_start(self) -> None:
        """Open the camera and start the reader thread."""
        try:
            import cv2
        except ImportError as e:
            raise MissingDependency(f"camera_source needs OpenCV ({e}); install it with: {INSTALL}") from e
        dev = self.p.device
        cap = cv2.VideoCapture(int(dev) if dev.isdigit() else dev)
        if not cap.isOpened():
            cap.release()
            raise DeviceUnavailable(f"camera_source {self.name!r}: cannot open camera {dev!r} (no such device, or it "
                                    "is busy); allowed: a camera index that exists (see `ls /dev/video*` on Linux) or "
                                    "a readable video file / URL")
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.p.width), (cv2.CAP_PROP_FRAME_HEIGHT, self.p.height),
                            (cv2.CAP_PROP_FPS, self.p.fps)):
            if value:
                cap.set(prop, value)
        self._cap = cap
        self._thread = threading.Thread(target=self._read_loop, name=f"{self.name}-camera", daemon=True)
        self._thread.start()

    def _read_loop(self) -> None:
        """Reader thread: grab frames until the camera ends, fails or the node stops; it owns the release."""
        import cv2

        cap = self._cap
        try:
            while True:
                try:
                    ok, frame = cap.read()
                except cv2.error as e:  # a camera unplugged, a broken stream: end the source
                    self.throttled(logging.ERROR, "read", "camera_source %s: reading %r failed: %s; stopping",
                                   self.name, self.p.device, e)
                    ok, frame = False, None
                t_ns = self.clock.now_ns()
                with self._lock:
                    if self._ended:
                        return
                    if not ok or frame is None:
                        self._ended = True
                        return
                    if self._latest is not None:
                        self.stats.count_drop("stale")
                    self._latest = (t_ns, np.ascontiguousarray(frame))
                    self._lock.notify_all()
        finally:
            with self._lock:
                self._ended = True
                self._lock.notify_all()
            cap.release()

    def produce(self, stop: threading.Event) -> bool:
        """Emit the newest frame once; False when the camera ended, ``max_frames`` were sent or ``stop``."""
        if stop.is_set() or (self.p.max_frames and self._index >= self.p.max_frames):
            return False
        with self._lock:
            if self._latest is None and not self._ended:
                self._lock.wait(timeout=0.05)
            got, self._latest = self._latest, None
            ended = self._ended
        if got is None:
            if ended:
                return False
            now = self.clock.now_ns()
            if self._waiting_since is None:
                self._waiting_since = now
            waited_ms = (now - self._waiting_since) // 1_000_000
            if waited_ms >= self.p.wait_ms:
                self.throttled(logging.WARNING, "nothing", "camera_source %s: no frame from %r for %d ms (wait_ms); "
                               "stopping", self.name, self.p.device, waited_ms)
                return False
            return True
        self._waiting_since = None
        t_ns, frame = got
        if frame.ndim == 2:
            frame = np.repeat(frame[:, :, None], 3, axis=2)
        header = self.header("video", self.p.stream_id, NO_SAMPLE, t_ns)
        self.emit("video", VideoFrame(header, frame, "bgr24", self._index))
        self._index += 1
        return True

    def on_stop(self) -> None:
        """Tell the reader to stop and wait for it; it releases the camera after its current read (never
        while another thread is inside ``read``)."""
        with self._lock:
            self._ended = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                self.log.warning("camera_source %s: the reader is still blocked in a read of %r; it will release "
                                 "the camera when that read returns", self.name, self.p.device)
