"""The vision node (faces per video frame) and the camera source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kikimimi.engine.errors import DeviceUnavailable
from kikimimi.engine.messages import NO_SAMPLE, Header, Message
from kikimimi.engine.msgs.vision import Faces, VideoFrame
from kikimimi.engine.testing import run_node, run_source
from kikimimi.nodes.camera_source import CameraSource
from kikimimi.nodes.file_source import FileSource
from kikimimi.nodes.vision import VisionNode


@pytest.fixture(scope="module")
def grid_frames(data_dir: Path) -> list[tuple[str, Message]]:
    src = FileSource("src", {"path": str(data_dir / "av" / "grid" / "lbax4n.mpg"), "video": True, "speed": 0.0,
                             "stream_id": "grid"})
    return [(p, m) for p, m in run_source(src) if p == "video"]


@pytest.mark.data
def test_vision_node_emits_one_faces_message_per_frame_with_the_frame_time(
        grid_frames: list[tuple[str, Message]]) -> None:
    node = VisionNode("vision")
    out = [m for _, m in run_node(node, grid_frames)]
    assert len(out) == len(grid_frames) == 75
    ids = set()
    for (_, frame), faces in zip(grid_frames, out, strict=True):
        assert isinstance(faces, Faces) and isinstance(frame, VideoFrame)
        assert faces.frame_index == frame.frame_index
        assert faces.header.sample_index == frame.header.sample_index
        assert faces.header.t_ns == frame.header.t_ns
        assert (faces.width, faces.height) == (360, 288)
        ids.update(f.face_id for f in faces.faces)
    assert ids == {0}
    assert sum(len(f.faces) == 1 for f in out if isinstance(f, Faces)) >= 72
    assert out[-1].header.sample_index == 74 * 640                  # type: ignore[union-attr]


def test_frames_out_of_order_are_rejected_and_counted() -> None:
    img = np.zeros((120, 160, 3), np.uint8)
    frames: list[tuple[str, Message]] = [("video", VideoFrame(Header("c", i, NO_SAMPLE, 40_000_000 * i, "cam"), img,
                                                              "bgr24", idx)) for i, idx in enumerate((0, 1, 1, 0, 2))]
    node = VisionNode("vision", {"fps": 30.0})
    out = [m for _, m in run_node(node, frames)]
    assert [m.frame_index for m in out if isinstance(m, Faces)] == [0, 1, 2]
    assert node.stats.rejected_by_kind["frame_order"] == 2
    assert all(isinstance(m, Faces) and m.faces == () for m in out)
    assert out[1].fps == pytest.approx(25.0)                        # type: ignore[union-attr]  # from the frame times


def test_camera_source_without_a_camera_says_which_device_it_tried() -> None:
    src = CameraSource("cam", {"device": "63"})
    with pytest.raises(DeviceUnavailable, match="cannot open camera '63'"):
        src.on_start()


@pytest.mark.data
def test_camera_source_emits_the_newest_frame_and_counts_stale_ones(data_dir: Path) -> None:
    """A video file stands in for the camera: the reader runs to the end before anyone asks for a frame, so
    every frame but the newest is stale."""
    import threading

    src = CameraSource("cam", {"device": str(data_dir / "av" / "grid" / "bbaf2n.mpg")})
    out: list[tuple[str, Message]] = []
    src.bind(lambda port, m: out.append((port, m)))
    src.on_start()
    assert src._thread is not None
    src._thread.join(timeout=30)
    stop = threading.Event()
    while src.produce(stop):
        pass
    src.on_stop()
    assert len(out) == 1
    frame = out[0][1]
    assert isinstance(frame, VideoFrame) and frame.header.sample_index == NO_SAMPLE and frame.frame_index == 0
    assert frame.image.shape == (288, 360, 3)
    assert src.stats.dropped["stale"] == 74


class _FakeCapture:
    """Stands in for cv2.VideoCapture: ``frames`` good reads, then a cv2.error."""

    def __init__(self, frames: int) -> None:
        self.left = frames
        self.released = False

    def isOpened(self) -> bool:
        return True

    def set(self, prop: int, value: float) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        import cv2

        if self.left <= 0:
            raise cv2.error("camera unplugged")
        self.left -= 1
        return True, np.zeros((4, 6, 3), np.uint8)

    def release(self) -> None:
        self.released = True


def test_a_camera_read_error_ends_the_source_and_the_reader_releases_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import cv2

    fake = _FakeCapture(3)
    monkeypatch.setattr(cv2, "VideoCapture", lambda dev: fake)
    src = CameraSource("cam", {"device": "0"})
    out: list[tuple[str, Message]] = []
    src.bind(lambda port, m: out.append((port, m)))
    src.on_start()
    assert src._thread is not None
    src._thread.join(timeout=10)
    assert not src._thread.is_alive() and fake.released
    stop = threading.Event()
    while src.produce(stop):
        pass
    src.on_stop()
    assert len(out) == 1 and src.stats.dropped["stale"] == 2       # the newest of the 3 frames, then the end


# ------------------------------------------------------------------------------------------ the model contract
def test_vision_config_validates_itself_naming_the_value_and_what_is_allowed() -> None:
    from kikimimi.engine.errors import ParamError
    from kikimimi.models.vision.faces import VisionConfig

    for kwargs, pattern in (({"detect_every": 0}, r"detect_every=0 is not allowed; allowed: an int, 1 <= "),
                            ({"max_faces": 33}, r"max_faces=33 is not allowed"),
                            ({"min_face": 0.01}, r"min_face=0.01 is not allowed; allowed: 0.02 <= min_face <= 0.9"),
                            ({"scale_factor": 1.0}, r"scale_factor=1.0 is not allowed"),
                            ({"fps": 0.0}, r"fps=0.0 is not allowed")):
        with pytest.raises(ParamError, match=pattern):
            VisionConfig(**kwargs)


@pytest.mark.slow
@pytest.mark.data
def test_face_stream_gives_what_the_node_emits(grid_frames: list[tuple[str, Message]]) -> None:
    from kikimimi.models.vision.faces import FaceAnalyzer, FrameOrderError, VisionConfig

    config = VisionConfig(detect_every=3)
    node_out = [m for _, m in run_node(VisionNode("vision", {"detect_every": 3}), grid_frames)]
    st = FaceAnalyzer(config).new_stream()
    got = []
    for _, frame in grid_frames:
        assert isinstance(frame, VideoFrame)
        got.append(st.accept(frame.image, frame.pixel_format, frame.frame_index, frame.header.t_ns))
    assert len(got) == len(node_out) == 75
    for a, b in zip(got, node_out, strict=True):
        assert isinstance(b, Faces)
        assert (a.frame_index, a.width, a.height, a.fps) == (b.frame_index, b.width, b.height, b.fps)
        assert [f.face_id for f in a.faces] == [f.face_id for f in b.faces]
        for fa, fb in zip(a.faces, b.faces, strict=True):
            np.testing.assert_array_equal(fa.landmarks, fb.landmarks)
            np.testing.assert_array_equal(fa.mouth, fb.mouth)
            assert fa.aperture == fb.aperture and fa.detected == fb.detected
    assert st.timings.frames == 75 and st.timings.detections >= 25
    with pytest.raises(FrameOrderError, match="frame 3 comes after frame 74"):
        st.accept(grid_frames[3][1].image, "bgr24", 3)                    # type: ignore[union-attr]
    assert st.last_index == 74
