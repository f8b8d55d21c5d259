"""file_source on real recordings: exact samples, resampling, video, pacing and errors."""

from __future__ import annotations

import itertools
import sys
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from kikimimi.engine.clock import ManualClock
from kikimimi.engine.errors import MissingDependency, ParamError
from kikimimi.engine.messages import Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.vision import VideoFrame
from kikimimi.engine.testing import run_source
from kikimimi.nodes.file_source import FileSource

LIBRI = "en/librispeech/1688/1688-142285-0002.flac"  # 2.835 s, 16 kHz mono
JFK = "en/jfk/jfk.flac"  # 11 s, 44.1 kHz stereo
GRID = "av/grid/bbaf2n.mpg"  # 3 s, 25 fps, 44.1 kHz stereo mp2


def run(node: FileSource) -> list[tuple[str, Message]]:
    """Drive a source to its end without a runner; returns (port, message) in emission order."""
    return run_source(node)


def audio(out: list[tuple[str, Message]]) -> list[AudioChunk]:
    return [m for p, m in out if p == "audio" and isinstance(m, AudioChunk)]


def check_contiguous(chunks: list[AudioChunk], size: int) -> None:
    assert chunks[0].header.sample_index == 0
    for i, (a, b) in enumerate(itertools.pairwise(chunks)):
        assert b.header.sample_index == a.end_index
        assert a.n_samples == size
        assert a.header.seq == i
    assert 0 < chunks[-1].n_samples <= size


def test_librispeech_flac_is_exact_and_contiguous(data_dir: Path) -> None:
    path = data_dir / LIBRI
    chunks = audio(run(FileSource("src", {"path": str(path), "speed": 0}, clock=ManualClock())))
    check_contiguous(chunks, 320)
    ref = sf.read(str(path), dtype="int16")[0]
    assert sum(c.n_samples for c in chunks) == sf.info(str(path)).frames
    got = np.concatenate([c.samples for c in chunks])
    assert got.dtype == np.int16 and got.shape == (ref.shape[0], 1)
    np.testing.assert_array_equal(got[:, 0], ref)
    assert {c.header.stream_id for c in chunks} == {"file"} and {c.sample_rate for c in chunks} == {16000}


def test_jfk_stereo_44k_resampled_to_16k_mono(data_dir: Path) -> None:
    path = str(data_dir / JFK)
    node = FileSource("src", {"path": path, "speed": 0, "dtype": "float32"}, clock=ManualClock())
    chunks = audio(run(node))
    check_contiguous(chunks, 320)
    got = np.concatenate([c.samples for c in chunks])[:, 0]
    raw, rate = sf.read(path, dtype="float32", always_2d=True)
    ref = soxr.resample(raw.mean(axis=1), rate, 16000)
    assert abs(got.shape[0] - ref.shape[0]) <= 320
    n = min(got.shape[0], ref.shape[0])
    assert np.corrcoef(got[:n], ref[:n])[0, 1] > 0.999  # streaming == whole-file resampling, no seams


def test_keep_channels_float32_100ms_chunks(data_dir: Path) -> None:
    params = {"path": str(data_dir / JFK), "speed": 0, "channels": 0, "dtype": "float32", "chunk_ms": 100,
              "sample_rate": 48000}
    chunks = audio(run(FileSource("src", params, clock=ManualClock())))
    check_contiguous(chunks, 4800)
    assert chunks[0].samples.shape == (4800, 2) and chunks[0].samples.dtype == np.float32
    assert abs(sum(c.n_samples for c in chunks) - 11 * 48000) <= 4800


@pytest.mark.parametrize(("ext", "subtype", "rate"), [(".ogg", "VORBIS", 22050), (".wav", "PCM_16", 8000)])
def test_other_formats_and_rates_keep_pitch_and_length(tmp_path: Path, ext: str, subtype: str,
                                                       rate: int) -> None:
    path = tmp_path / f"tone{ext}"
    t = np.arange(2 * rate) / rate
    sf.write(str(path), 0.5 * np.sin(2 * np.pi * 440.0 * t), rate, subtype=subtype)
    chunks = audio(run(FileSource("src", {"path": str(path), "speed": 0}, clock=ManualClock())))
    check_contiguous(chunks, 320)
    x = np.concatenate([c.samples[:, 0] for c in chunks]).astype(np.float64)
    assert abs(x.shape[0] - 32000) <= 320
    spectrum = np.abs(np.fft.rfft(x[1000:17000]))
    assert np.argmax(spectrum) == pytest.approx(440, abs=2)  # 16000-sample window: 1 Hz per bin
    assert 0.45 * 32768 < np.abs(x).max() < 0.55 * 32768


def test_long_float_wav_in_100ms_chunks(data_dir: Path) -> None:
    path = str(data_dir / "diarization/ami/dev00.wav")  # 30 s, float32 wav
    chunks = audio(run(FileSource("src", {"path": path, "speed": 0, "chunk_ms": 100}, clock=ManualClock())))
    check_contiguous(chunks, 1600)
    ref = sf.read(path, dtype="float32")[0]
    expected = np.clip(np.rint(ref * 32768), -32768, 32767).astype(np.int16)
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks])[:, 0], expected)


def test_grid_video_frames_match_pts_and_audio(data_dir: Path) -> None:
    import av

    path = str(data_dir / GRID)
    with av.open(path) as c:
        pts = [Fraction(f.pts) * f.time_base for f in c.decode(video=0)]
    with av.open(path) as c:
        n_audio = sum(f.samples for f in c.decode(audio=0))
    out = run(FileSource("src", {"path": path, "speed": 0, "video": True}, clock=ManualClock()))
    frames = [m for p, m in out if p == "video" and isinstance(m, VideoFrame)]
    assert 70 <= len(frames) <= 80 and len(frames) == len(pts)
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    assert [f.header.sample_index for f in frames] == [round(t * 16000) for t in pts]
    assert frames[0].image.shape == (288, 360, 3) and frames[0].pixel_format == "bgr24"
    chunks = audio(out)
    check_contiguous(chunks, 320)
    assert abs(sum(c.n_samples for c in chunks) - n_audio * 16000 / 44100) <= 320


def test_grid_speed1_paces_both_ports_in_time(data_dir: Path) -> None:
    clock = ManualClock()
    out = run(FileSource("src", {"path": str(data_dir / GRID), "video": True}, clock=clock))
    for port in ("audio", "video"):
        t = [m.header.t_ns for p, m in out if p == port]
        assert t == sorted(t) and len(set(t)) == len(t)
    for f in (m for p, m in out if isinstance(m, VideoFrame)):
        assert f.header.t_ns == f.header.sample_index * 1_000_000_000 // 16000
    last = audio(out)[-1]
    assert clock.now_ns() == last.end_index * 1_000_000_000 // 16000


@pytest.mark.parametrize(("speed", "divisor"), [(1.0, 1), (2.0, 2)])
def test_pacing_advances_manual_clock_by_the_clip_duration(data_dir: Path, speed: float,
                                                            divisor: int) -> None:
    path = str(data_dir / LIBRI)
    clock = ManualClock(start_ns=1_000)
    chunks = audio(run(FileSource("src", {"path": path, "speed": speed}, clock=clock)))
    duration_ns = sf.info(path).frames * 1_000_000_000 // 16000
    assert clock.now_ns() == 1_000 + duration_ns // divisor
    # Each chunk is stamped when its last sample is "captured".
    assert [c.header.t_ns for c in chunks] == [
        1_000 + c.end_index * 1_000_000_000 // 16000 // divisor for c in chunks
    ]


def test_speed0_does_not_wait(data_dir: Path) -> None:
    clock = ManualClock(start_ns=5)
    chunks = audio(run(FileSource("src", {"path": str(data_dir / LIBRI), "speed": 0}, clock=clock)))
    assert clock.now_ns() == 5 and {c.header.t_ns for c in chunks} == {5}


def test_stop_event_ends_produce(data_dir: Path) -> None:
    node = FileSource("src", {"path": str(data_dir / LIBRI)}, clock=ManualClock())
    out: list[tuple[str, Message]] = []
    node.bind(lambda port, msg: out.append((port, msg)))
    node.on_start()
    stop = threading.Event()
    stop.set()
    assert node.produce(stop) is False and out == []
    node.on_stop()


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.flac"
    with pytest.raises(FileNotFoundError, match=r"nope\.flac"):
        FileSource("src", {"path": str(missing)}, clock=ManualClock())


def test_files_are_judged_by_content_not_extension(data_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "notes.wav"
    bad.write_text("hello, these are notes, not a recording\n" * 20)
    with pytest.raises(ParamError, match=r"file_source: '.*notes\.wav' is not an audio or video file"):
        FileSource("src", {"path": str(bad)}, clock=ManualClock())
    with pytest.raises(ParamError, match=r"file_source: '.*' is a directory, not an audio or video file"):
        FileSource("src", {"path": str(tmp_path)}, clock=ManualClock())
    renamed = tmp_path / "librispeech.data"           # a FLAC file with a name that says nothing
    renamed.write_bytes((data_dir / LIBRI).read_bytes())
    got = audio(run(FileSource("src", {"path": str(renamed)}, clock=ManualClock())))
    want = audio(run(FileSource("src", {"path": str(data_dir / LIBRI)}, clock=ManualClock())))
    assert np.array_equal(np.concatenate([c.samples for c in got]), np.concatenate([c.samples for c in want]))


def test_a_truncated_file_keeps_what_was_decoded_with_a_warning(data_dir: Path, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    whole = (data_dir / LIBRI).read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole[:len(whole) // 2])
    chunks = audio(run(FileSource("src", {"path": str(cut), "chunk_ms": 100}, clock=ManualClock())))
    full = audio(run(FileSource("src", {"path": str(data_dir / LIBRI), "chunk_ms": 100}, clock=ManualClock())))
    assert 0.3 * len(full) < len(chunks) < 0.7 * len(full)
    for a, b in zip(chunks[:-1], full, strict=False):          # what was decoded is the file's own audio
        assert np.array_equal(a.samples, b.samples)
    assert any("ends early, it is truncated or damaged" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("params", "pattern"), [
    ({"chunk_ms": 15}, "chunk_ms=15 is not allowed; allowed: 10, 20"),
    ({"sample_rate": 4000}, "sample_rate=4000 is below the minimum 8000"),
    ({"dtype": "int32"}, "allowed: 'int16', 'float32'"),
    ({"speed": -1.0}, "speed=-1.0 is below the minimum 0"),
    ({"channels": 2}, "channels=2 is not allowed; allowed: 1, 0"),
])
def test_bad_params_name_value_and_allowed(data_dir: Path, params: dict, pattern: str) -> None:
    with pytest.raises(ParamError, match=pattern):
        FileSource("src", {"path": str(data_dir / LIBRI), **params})


def test_missing_pyav_gives_install_command(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(MissingDependency, match=r"pip install 'kikimimi\[av\]'"):
        FileSource("src", {"path": str(data_dir / GRID)}, clock=ManualClock())


def test_real_clock_paces_at_the_requested_speed(data_dir: Path) -> None:
    import time

    path = str(data_dir / JFK)
    node = FileSource("src", {"path": path, "speed": 8.0})  # MonotonicClock: really waits
    t0 = time.monotonic()
    chunks = audio(run(node))
    elapsed = time.monotonic() - t0
    expected = sf.info(path).duration / 8.0
    # Never early (deadlines are absolute); late by 0.001-0.09 s measured at load 6 on 2 cores. The upper bound
    # leaves room for a descheduled process and still fails a source at half the speed (2.75 s) or at 1x (11 s).
    assert expected * 0.95 <= elapsed <= expected * 1.3 + 0.4, (elapsed, expected)
    # The first chunk is due one chunk (20 ms / 8) after the start, not at once.
    assert chunks[1].header.t_ns - chunks[0].header.t_ns == pytest.approx(2_500_000, abs=1)


def make_video_only(path: Path, n: int = 10, fps: int = 25) -> None:
    """A small silent video (mpeg4 in Matroska) written with PyAV."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), format="bgr24")
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def test_video_only_file(tmp_path: Path) -> None:
    path = tmp_path / "silent.mkv"
    make_video_only(path)
    with pytest.raises(ParamError, match=r"has no audio track \(set video: true"):
        FileSource("src", {"path": str(path)}, clock=ManualClock()).on_start()
    clock = ManualClock()
    out = run(FileSource("src", {"path": str(path), "video": True}, clock=clock))
    assert all(p == "video" for p, _ in out)
    frames = [m for _, m in out if isinstance(m, VideoFrame)]
    assert [f.frame_index for f in frames] == list(range(10))
    assert [f.header.sample_index for f in frames] == [i * 640 for i in range(10)]
    assert abs(int(frames[5].image.mean()) - 100) <= 3  # the picture survives the round trip
    assert clock.now_ns() == 9 * 40_000_000  # paced by the frames' timestamps
