"""Whole-file audio of video containers equals what file_source streams (channels averaged, not pan law)."""

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
