"""Read a talking-face video file into arrays: 16 kHz audio, and per frame the main face's mouth and lips.

Used by training (:mod:`kikimimi.models.avsr.data`), tests and benchmarks, where whole clips are at
hand; the graph uses the streaming nodes instead. The "main face" of a frame is the one the tracker
has followed longest (the first one found, in a one-talker clip).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kikimimi.engine.errors import KikimimiError
from kikimimi.engine.msgs.vision import MOUTH_SIZE
from kikimimi.models.media import read_container_audio
from kikimimi.models.vision.frontend import VisionFrontEnd


@dataclass(frozen=True)
class AvClip:
    """A clip's audio and its main face per video frame (see the field comments)."""

    audio: np.ndarray          # float32 mono, sample_rate, in [-1, 1]
    sample_rate: int
    fps: float
    frame_samples: np.ndarray  # int64 (T,): audio sample index of each video frame's instant
    mouths: np.ndarray         # uint8 (T, 96, 96) aligned grayscale mouth crops; zeros where no face
    has_face: np.ndarray       # bool (T,)
    aperture: np.ndarray       # float32 (T,) inner-lip aperture / mouth width, NaN where no face
    landmarks: np.ndarray      # float32 (T, 68, 2), NaN where no face
    boxes: np.ndarray          # int32 (T, 4) face boxes, zeros where no face
    mouth_boxes: np.ndarray    # int32 (T, 4) mouth crop regions, zeros where no face


def read_audio_video(path: str | Path, sample_rate: int = 16000) -> tuple[np.ndarray, list[np.ndarray], np.ndarray,
                                                                         float]:
    """Decode a video file: (mono float32 audio at ``sample_rate``, channels averaged as file_source does;
    bgr24 frames; frame times in s from the audio track's start, as file_source places them; fps)."""
    try:
        import av
    except ImportError as e:
        raise KikimimiError(f"reading video files needs PyAV ({e}); install it with: pip install 'kikimimi[av]'") \
            from e
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file {path} does not exist")
    frames: list[np.ndarray] = []
    times: list[float] = []
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        first = c.streams.audio[0] if c.streams.audio else vs
        t0 = float((first.start_time or 0) * first.time_base)   # media time 0, as file_source takes it
        fps = float(vs.average_rate) if vs.average_rate else 25.0
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="bgr24"))
            times.append(float(f.time) if f.time is not None else len(times) / fps)
    audio = read_container_audio(path, sample_rate)
    t = np.asarray(times, np.float64) - t0
    return audio, frames, t, fps


def read_av_clip(path: str | Path, sample_rate: int = 16000, front_end: VisionFrontEnd | None = None) -> AvClip:
    """Decode ``path`` and run the vision front end on every frame; see :class:`AvClip`."""
    audio, frames, times, fps = read_audio_video(path, sample_rate)
    fe = front_end or VisionFrontEnd()
    fe.reset()
    n = len(frames)
    mouths = np.zeros((n, MOUTH_SIZE, MOUTH_SIZE), np.uint8)
    has = np.zeros(n, bool)
    ap = np.full(n, np.nan, np.float32)
    lms = np.full((n, 68, 2), np.nan, np.float32)
    boxes = np.zeros((n, 4), np.int32)
    mboxes = np.zeros((n, 4), np.int32)
    main: int | None = None
    for i, img in enumerate(frames):
        faces = fe.process(img, "bgr24")
        if not faces:
            continue
        face = next((f for f in faces if f.face_id == main), None) or min(faces, key=lambda f: f.face_id)
        main = face.face_id
        mouths[i], has[i], ap[i], lms[i] = face.mouth, True, face.aperture, face.landmarks
        boxes[i], mboxes[i] = face.box, face.mouth_box
    frame_samples = np.round(times * sample_rate).astype(np.int64)
    return AvClip(audio, sample_rate, fps, frame_samples, mouths, has, ap, lms, boxes, mboxes)
