"""models.media: whole-file container audio and the MediaReader equal what file_source streams (channels averaged, not
pan law; the same chunks and frames in the same order), and read_graph_clip equals file_source + the vision node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kikimimi.engine.testing import run_source
from kikimimi.models.media import read_container_audio
from kikimimi.nodes.file_source import FileSource


@pytest.mark.data
def test_container_audio_equals_the_file_sources_stream(data_dir: Path) -> None:
    path = data_dir / "av" / "grid" / "pwij3p.mpg"          # MP2 stereo at 44.1 kHz
    src = FileSource("src", {"path": str(path), "speed": 0.0, "dtype": "float32"})
    streamed = np.concatenate([m.samples[:, 0] for port, m in run_source(src) if port == "audio"])
    whole = read_container_audio(path, 16000)
    assert whole.dtype == np.float32 and whole.shape == streamed.shape
    np.testing.assert_array_equal(whole, streamed)
    assert 0.5 < float(np.abs(whole).max()) <= 1.0


@pytest.mark.data
def test_clip_frame_instants_equal_the_file_sources(data_dir: Path) -> None:
    from kikimimi.engine.msgs.vision import VideoFrame
    from kikimimi.models.vision.clip import read_audio_video

    path = data_dir / "av" / "grid" / "bbaf2n.mpg"
    src = FileSource("src", {"path": str(path), "speed": 0.0, "video": True})
    streamed = [m.header.sample_index for _, m in run_source(src) if isinstance(m, VideoFrame)]
    _, frames, times, fps = read_audio_video(path)
    assert len(frames) == len(streamed) == 75 and fps == 25.0
    assert np.round(times * 16000).astype(np.int64).tolist() == streamed


# ------------------------------------------------------------------------------------------ the reader
def test_media_config_and_path_checks_name_the_value_and_what_is_allowed(tmp_path: Path) -> None:
    from kikimimi.engine.errors import ParamError
    from kikimimi.models.media import MediaConfig, check_media_path

    with pytest.raises(ParamError, match=r"chunk_ms=25 is not allowed; allowed: 10, 20, 30, 40, 50, 100"):
        MediaConfig(chunk_ms=25)
    with pytest.raises(ParamError, match=r"sample_rate=4000 is not allowed; allowed: an int, 8000 <= "):
        MediaConfig(sample_rate=4000)
    (tmp_path / "a.txt").write_text("not a recording\n")
    with pytest.raises(ParamError, match=r"'.*a\.txt' is not an audio or video file"):
        check_media_path(tmp_path / "a.txt")
    with pytest.raises(ParamError, match=r"is a directory, not an audio or video file"):
        check_media_path(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        check_media_path(tmp_path / "a.wav")


@pytest.mark.data
@pytest.mark.parametrize("name, params", [
    ("av/grid/pwij3p.mpg", {"video": True}),
    ("av/grid/bbaf2n.mpg", {"video": False, "chunk_ms": 30, "sample_rate": 22050, "channels": 0}),
    ("en/jfk/jfk.flac", {"dtype": "float32"}),
])
def test_reader_gives_what_file_source_plays_in_the_same_order(data_dir: Path, name: str, params: dict) -> None:
    from kikimimi.engine.msgs.audio import AudioChunk
    from kikimimi.engine.msgs.vision import VideoFrame
    from kikimimi.models.media import AudioPiece, MediaConfig, MediaReader, VideoPicture
    from kikimimi.models.pcm import convert

    path = data_dir / name
    played = run_source(FileSource("src", {"path": str(path), "speed": 0.0, **params}))
    cfg = MediaConfig(params.get("sample_rate", 16000), params.get("channels", 1) == 1, params.get("chunk_ms", 20),
                      params.get("video", False))
    with MediaReader(path, cfg) as reader:
        items = list(reader)
    assert len(items) == len(played) and reader.read() is None
    for item, (port, msg) in zip(items, played, strict=True):
        if isinstance(item, AudioPiece):
            assert port == "audio" and isinstance(msg, AudioChunk)
            assert item.sample_index == msg.header.sample_index
            assert item.end_ns == (item.sample_index + len(item.samples)) * 1_000_000_000 // cfg.sample_rate
            np.testing.assert_array_equal(convert(item.samples, params.get("dtype", "int16")), msg.samples)
        else:
            assert isinstance(item, VideoPicture) and port == "video" and isinstance(msg, VideoFrame)
            assert (item.frame_index, item.sample_index) == (msg.frame_index, msg.header.sample_index)
            np.testing.assert_array_equal(item.image, msg.image)
    assert any(isinstance(i, VideoPicture) for i in items) == params.get("video", False)


@pytest.mark.data
def test_graph_clip_is_what_file_source_and_the_vision_node_give(data_dir: Path) -> None:
    """The training reader (models level) against the two nodes it stands for, driven by the test harness."""
    from kikimimi.engine.msgs.vision import Faces
    from kikimimi.engine.testing import run_node
    from kikimimi.models.avsr.data import read_graph_clip
    from kikimimi.nodes.vision import VisionNode

    path = data_dir / "av" / "grid" / "lbax4n.mpg"
    clip = read_graph_clip(path)
    played = run_source(FileSource("src", {"path": str(path), "speed": 0.0, "video": True}))
    audio = np.concatenate([m.samples[:, 0] for p, m in played if p == "audio"])
    faces = [m for _, m in run_node(VisionNode("vision"), [(p, m) for p, m in played if p == "video"])]
    assert clip.audio.dtype == np.int16
    np.testing.assert_array_equal(clip.audio, audio)
    assert clip.frame_samples.tolist() == [m.header.sample_index for m in faces] and len(faces) == 75
    for got, msg in zip(clip.faces, faces, strict=True):
        assert isinstance(msg, Faces)
        assert [f.face_id for f in got] == [f.face_id for f in msg.faces]
        for a, b in zip(got, msg.faces, strict=True):
            np.testing.assert_array_equal(a.landmarks, b.landmarks)
            np.testing.assert_array_equal(a.mouth, b.mouth)
