"""Vision family: video frames, the faces seen in each, and who of them is speaking.

Like every message (see :mod:`kikimimi.engine.messages`) they are frozen, slotted dataclasses with a
:class:`~kikimimi.engine.messages.Header` carrying integer time: for faces and active-speaker messages
``header.sample_index`` is the audio sample index at the frame's instant (the same clock as the
stream's audio) and ``header.t_ns`` the frame's capture time in monotonic nanoseconds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kikimimi.engine.errors import MessageError
from kikimimi.engine.messages import Message, message_type

PIXEL_FORMATS = {"bgr24": 3, "rgb24": 3, "gray": 1}


@message_type
@dataclass(frozen=True, slots=True, eq=False)
class VideoFrame(Message):
    """One video frame, shape (height, width, channels) uint8.

    header.t_ns is the frame's presentation time on the stream clock; header.sample_index is the audio
    sample index at that instant (NO_SAMPLE when the stream has no audio clock).
    """

    image: np.ndarray
    pixel_format: str
    frame_index: int

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3:
            raise MessageError(
                "VideoFrame.image must be a uint8 array of shape (height, width, channels), got "
                f"{getattr(img, 'dtype', type(img).__name__)} {getattr(img, 'shape', '')}"
            )
        want = PIXEL_FORMATS.get(self.pixel_format)
        if want is None:
            raise MessageError(
                f"VideoFrame.pixel_format {self.pixel_format!r} is not allowed; allowed: {sorted(PIXEL_FORMATS)}"
            )
        if img.shape[2] != want:
            raise MessageError(
                f"VideoFrame with pixel_format {self.pixel_format!r} needs {want} channels, got {img.shape[2]}"
            )
        if self.frame_index < 0:
            raise MessageError(f"VideoFrame.frame_index must be >= 0, got {self.frame_index}")



MOUTH_SIZE = 96
"""Side of the square grayscale mouth crop (the input AV-HuBERT-style models expect)."""
N_LANDMARKS = 68
NO_FACE = -1
"""``face_id`` meaning: no face (e.g. a transcript that no visible face was found to speak)."""


def _box(name: str, b: object) -> None:
    if not isinstance(b, np.ndarray) or b.dtype != np.int32 or b.shape != (4,):
        raise MessageError(f"Face.{name} must be an int32 array (x, y, width, height), got "
                           f"{getattr(b, 'dtype', type(b).__name__)} {getattr(b, 'shape', '')}")
    if b[2] < 0 or b[3] < 0:
        raise MessageError(f"Face.{name} {b.tolist()} has a negative size; allowed: width, height >= 0")


@dataclass(frozen=True, slots=True, eq=False)
class Face:
    """One tracked face in one frame.

    face_id: stable across frames while the tracker keeps the face (a new id when a face is found again
    after it was lost). box / mouth_box: int32 (x, y, width, height) in pixels of the frame.
    landmarks: float32 (68, 2) dlib/iBUG 68-point (x, y) positions. mouth: uint8 (96, 96) grayscale
    mouth region centred on the mouth, rotated so the eyes are level and scaled so its side is a fixed
    multiple of the eye distance (see :mod:`kikimimi.models.vision.mouth`).
    aperture: inner-lip opening divided by mouth width (0 = closed, about 0.3-0.5 wide open).
    detected: true when the face detector found the face in this frame, false when it was tracked.
    """

    face_id: int
    box: np.ndarray
    landmarks: np.ndarray
    mouth_box: np.ndarray
    mouth: np.ndarray
    aperture: float
    detected: bool

    def __post_init__(self) -> None:
        if self.face_id < 0:
            raise MessageError(f"Face.face_id must be >= 0, got {self.face_id}")
        _box("box", self.box)
        _box("mouth_box", self.mouth_box)
        lm = self.landmarks
        if not isinstance(lm, np.ndarray) or lm.dtype != np.float32 or lm.shape != (N_LANDMARKS, 2):
            raise MessageError(f"Face.landmarks must be float32 of shape ({N_LANDMARKS}, 2), got "
                               f"{getattr(lm, 'dtype', type(lm).__name__)} {getattr(lm, 'shape', '')}")
        m = self.mouth
        if not isinstance(m, np.ndarray) or m.dtype != np.uint8 or m.shape != (MOUTH_SIZE, MOUTH_SIZE):
            raise MessageError(f"Face.mouth must be uint8 of shape ({MOUTH_SIZE}, {MOUTH_SIZE}), got "
                               f"{getattr(m, 'dtype', type(m).__name__)} {getattr(m, 'shape', '')}")
        if not np.isfinite(self.aperture) or self.aperture < 0:
            raise MessageError(f"Face.aperture must be a finite number >= 0, got {self.aperture}")


@message_type
@dataclass(frozen=True, slots=True, eq=False)
class Faces(Message):
    """Every face tracked in video frame ``frame_index`` (possibly none) of ``width`` x ``height`` pixels.

    One message per processed frame, so a frame without faces is visible downstream as ``faces == ()``.
    ``fps``: the frame rate the vision node measured from the frames' capture times (frames per second).
    """

    frame_index: int
    width: int
    height: int
    fps: float
    faces: tuple[Face, ...] = ()

    def __post_init__(self) -> None:
        if self.frame_index < 0:
            raise MessageError(f"Faces.frame_index must be >= 0, got {self.frame_index}")
        if self.width <= 0 or self.height <= 0:
            raise MessageError(f"Faces frame size {self.width}x{self.height} is not allowed; need positive sizes")
        if not np.isfinite(self.fps) or self.fps <= 0:
            raise MessageError(f"Faces.fps must be a positive number, got {self.fps}")
        ids = [f.face_id for f in self.faces]
        if len(set(ids)) != len(ids):
            raise MessageError(f"Faces of frame {self.frame_index} repeat a face_id: {ids}")


@message_type
@dataclass(frozen=True, slots=True)
class ActiveSpeaker(Message):
    """How likely face ``face_id`` is speaking over ``[start_sample, end_sample)`` of the stream's audio.

    probability: from the agreement of the face's lip motion with the audio envelope over a sliding
    window ending at ``end_sample``; 0.5 means the window holds too little to tell. speaking: the
    node's decision (probability above its threshold, with hysteresis). ``face_id`` -1 (NO_FACE, with
    probability 0 and an empty span at the frame's instant) says that no face was in view at that frame.
    """

    face_id: int
    probability: float
    speaking: bool
    start_sample: int
    end_sample: int
    sample_rate: int

    def __post_init__(self) -> None:
        if self.face_id < NO_FACE or (self.face_id == NO_FACE and (self.probability != 0.0 or self.speaking)):
            raise MessageError(f"ActiveSpeaker.face_id must be >= 0, or -1 (no face) with probability 0 and not "
                               f"speaking; got face_id {self.face_id}, probability {self.probability}")
        if not 0.0 <= self.probability <= 1.0:
            raise MessageError(f"ActiveSpeaker.probability must be in [0, 1], got {self.probability}")
        if self.start_sample < 0 or self.end_sample < self.start_sample:
            raise MessageError(f"ActiveSpeaker span [{self.start_sample}, {self.end_sample}) is not allowed; "
                               "need 0 <= start <= end")
        if self.sample_rate <= 0:
            raise MessageError(f"ActiveSpeaker.sample_rate must be positive, got {self.sample_rate}")
