"""External AV recognizers through transformers remote code: a tiny AVista-style model directory written by
the test itself (tests/avsr_tiny.py; nothing is downloaded), loaded, decoded, and streamed chunk by chunk."""

from __future__ import annotations

import dataclasses
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from avsr_tiny import expected_text, make_tiny_av

from kikimimi.engine.errors import KikimimiError, MissingDependency, ParamError
from kikimimi.models.avsr.base import AvStream, Revision
from kikimimi.models.avsr.external import (
    ExternalAvError,
    ExternalAvRecognizer,
    ExternalAvStream,
    load_external_av,
)

torch = pytest.importorskip("torch", reason="external AV models run on PyTorch")
pytest.importorskip("transformers", reason="transformers is not installed (pip install 'kikimimi[avsr]')")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

RATE = 16000
P = 640                 # samples per video frame at 25 fps
CHUNK = 320             # 20 ms


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return make_tiny_av(tmp_path_factory.mktemp("tinyav"))


@pytest.fixture(scope="module")
def rec(tiny_dir: Path) -> ExternalAvRecognizer:
    return load_external_av(tiny_dir, device="cpu", threads=1)


def session(n_blocks: int, seed: int = 0, lead: int = 24, trail: int = 25) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Audio and 25 fps mouth frames: ``lead`` quiet dark frames, ``n_blocks`` 0.4 s blocks of random loudness and
    brightness, ``trail`` quiet dark frames. Returns audio, video, and the speech span [a, b) in samples."""
    rng = np.random.default_rng(seed)
    loud = rng.random(n_blocks) < 0.5
    bright = rng.random(n_blocks) < 0.5
    n_frames = lead + 10 * n_blocks + trail
    audio = rng.normal(0, 0.005, n_frames * P).astype(np.float32)
    video = rng.integers(20, 60, (n_frames, 96, 96)).astype(np.uint8)
    for j in range(n_blocks):
        f0 = lead + 10 * j
        if loud[j]:
            audio[f0 * P:(f0 + 10) * P] = rng.normal(0, 0.2, 10 * P)
        if bright[j]:
            video[f0:f0 + 10] = rng.integers(180, 230, (10, 96, 96))
    return audio, video, lead * P, (lead + 10 * n_blocks) * P


def reference(rec: ExternalAvRecognizer, audio: np.ndarray, video: np.ndarray) -> str:
    """The processor and generate run once, as a user of the checkpoint would."""
    inputs = rec.processor(audio=audio, video=video, sampling_rate=RATE, return_tensors="pt")
    out = rec.model.generate(**inputs)
    return rec.processor.batch_decode(out, skip_special_tokens=True)[0]


def stream_through(st: AvStream, audio: np.ndarray, video: list[np.ndarray | None], a: int, b: int) -> list[Revision]:
    """Drive ``st`` as the node does: 20 ms chunks, each frame once the audio up to it is in, begin / endpoint
    when the audio reaches them, a step after every chunk."""
    revs: list[Revision] = []
    fed_frames = 0
    for s in range(0, len(audio), CHUNK):
        st.accept_audio(audio[s:s + CHUNK], s)
        end = min(s + CHUNK, len(audio))
        while fed_frames < len(video) and fed_frames * P < end:
            st.accept_video(video[fed_frames], fed_frames * P)
            fed_frames += 1
        if s <= a < end:
            st.begin(a)
        if s < b <= end:
            st.endpoint(b)
        while (rev := st.step()) is not None:
            revs.append(rev)
    return revs


def check(revs: list[Revision]) -> Revision:
    """Committed text only grows, only the last revision is final; returns it."""
    assert revs and revs[-1].final
    for x, y in itertools.pairwise(revs):
        assert y.committed.startswith(x.committed), (x, y)
        assert not x.final
    return revs[-1]


@pytest.mark.slow
def test_loads_and_decodes_like_transformers(rec: ExternalAvRecognizer) -> None:
    assert (rec.audio_arg, rec.video_arg, rec.video_channels, rec.fps, rec.sample_rate) == ("audio", "video", 1, 25.0,
                                                                                          RATE)
    audio, video, a, b = session(6)
    text, timings = rec.transcribe(audio[a:b], video[a // P:b // P])
    assert timings is None
    assert text == reference(rec, audio[a:b], video[a // P:b // P]) == expected_text(audio[a:b], video[a // P:b // P])
    assert len(text.split()) == 6


def test_bad_directories_are_refused(tmp_path: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ExternalAvError, match="does not exist"):
        load_external_av(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExternalAvError, match=r"has no config.json"):
        load_external_av(tmp_path / "empty")
    with pytest.raises(ExternalAvError, match="no auto_map entry for AutoModelForSpeechSeq2Seq"):
        load_external_av(make_tiny_av(tmp_path / "no_model_map", model_map=False))
    with pytest.raises(ExternalAvError, match="no auto_map entry for AutoProcessor"):
        load_external_av(make_tiny_av(tmp_path / "no_processor_map", processor_map=False))
    with pytest.raises(ParamError, match="unknown AV option 'beams'"):
        load_external_av(tiny_dir, beams=3)
    assert issubclass(ExternalAvError, KikimimiError)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependency, match=r"pip install 'kikimimi\[avsr\]'") as info:
        load_external_av(tiny_dir)
    assert info.value.install == "pip install 'kikimimi[avsr]'"


def test_stream_partials_grow_and_the_final_is_the_whole_utterance_decode(rec: ExternalAvRecognizer) -> None:
    audio, video, a, b = session(12)
    st = rec.new_stream()
    revs = stream_through(st, audio, list(video), a, b)
    final = check(revs)
    want = reference(rec, audio[a:b], video[a // P:b // P])
    assert final.committed == want == expected_text(audio[a:b], video[a // P:b // P])
    partials = revs[:-1]
    assert len(partials) >= 3
    assert any(r.committed for r in partials) and any(r.unstable for r in partials)
    assert all(r.start_sample == a and r.end_sample <= b for r in revs)
    assert (final.start_sample, final.end_sample) == (a, b)
    assert [w.text for w in final.words] == want.split()
    span = (b - a) / 12
    assert [(w.start_sample, w.end_sample) for w in final.words] == [
        (a + round(i * span), a + round((i + 1) * span)) for i in range(12)]
    assert not st.utterance_open and st.result() is final and st.conflicts == 0


def test_the_video_reaches_the_model(rec: ExternalAvRecognizer) -> None:
    audio, video, a, b = session(8, seed=3)
    texts = []
    for frames in (video, np.full_like(video, 220), np.full_like(video, 30)):
        final = check(stream_through(rec.new_stream(), audio, list(frames), a, b))
        assert final.committed == expected_text(audio[a:b], frames[a // P:b // P])
        texts.append(final.committed)
    assert len(set(texts)) == 3
    # the face is lost for the second half: its frames are None and reach the model as zero (dark) crops
    lost: list[np.ndarray | None] = [np.full((96, 96), 220, np.uint8)] * len(video)
    half = (a + b) // 2 // P
    lost[half:] = [None] * (len(video) - half)
    final = check(stream_through(rec.new_stream(), audio, lost, a, b))
    zeroed = np.stack([m if m is not None else np.zeros((96, 96), np.uint8) for m in lost])
    assert final.committed == expected_text(audio[a:b], zeroed[a // P:b // P])
    assert "mi" in final.committed or "ko" in final.committed
    assert "mu" in final.committed or "ka" in final.committed


def test_a_long_utterance_advances_window_by_window(rec: ExternalAvRecognizer, tiny_dir: Path) -> None:
    opts = dataclasses.replace(rec.opts, max_window_s=1.6)
    short = ExternalAvRecognizer(tiny_dir, rec.processor, rec.model, torch, "cpu", opts, {})
    audio, video, a, b = session(15, seed=5)
    final = check(stream_through(short.new_stream(), audio, list(video), a, b))
    assert final.committed == expected_text(audio[a:b], video[a // P:b // P])
    assert len(final.words) == 15
    assert all(a <= w.start_sample <= w.end_sample <= b for w in final.words)


def test_video_alignment_by_sample_index(rec: ExternalAvRecognizer) -> None:
    st = ExternalAvStream(rec)
    st.accept_audio(np.zeros(RATE, np.float32), 0)
    m = [np.full((96, 96), v, np.uint8) for v in (10, 20, 30, 40)]
    # a 15 fps source, a frame without a face, then nothing for half a second
    st.accept_video(m[0], 0)
    st.accept_video(m[1], 1067)
    st.accept_video(None, 2133)
    st.accept_video(m[2], 3200)
    st.accept_video(m[3], 3200)                     # not after the newest frame: ignored
    assert st.video_late == 1
    got = st.frames(0, 12800)[:, 0, 0].tolist()
    assert len(got) == 20
    assert got[:6] == [10, 10, 20, 0, 0, 30]       # slots at 0, 640, 1280, 1920, 2560, 3200
    assert got[6:11] == [30] * 5 and got[11:] == [0] * 9    # held up to 0.2 s, then zero crops
    with pytest.raises(ParamError, match="uint8"):
        st.accept_video(np.zeros((88, 88), np.uint8), 4000)


def test_nothing_recognized_publishes_nothing(rec: ExternalAvRecognizer) -> None:
    st = rec.new_stream()
    st.accept_audio(np.zeros(3000, np.float32), 0)
    st.begin(1000)
    st.endpoint(3000)                               # shorter than one 0.4 s block: the model says nothing
    assert st.step() is None
    assert not st.utterance_open and st.result() is None
