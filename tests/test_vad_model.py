"""The VAD models of kikimimi.models.vad, used directly: chunking, batching across streams, flush / close /
restart, the shared Silero session, config errors, and agreement with the nodes built on them."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from kikimimi.engine.errors import ParamError
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.engine.testing import header, run_node
from kikimimi.models import weights
from kikimimi.models.pcm import float_to_int16
from kikimimi.models.vad import (
    VadConfig,
    VadDecision,
    VadModel,
    WebrtcVadConfig,
    WebrtcVadStream,
    silero_session,
    speech_spans,
)
from kikimimi.nodes.vad import TwoStageVad
from kikimimi.nodes.webrtc_vad import WebrtcVad

CLIPS = ["en/librispeech/1998/1998-15444-0007.flac", "en/librispeech/2414/2414-128291-0005.flac"]
START, END, PROGRESS = SpeechEventKind.SPEECH_START, SpeechEventKind.SPEECH_END, SpeechEventKind.PROGRESS


def load(path: Path, rate: int = 16000) -> np.ndarray:
    """A clip as int16 mono (n,) at ``rate``."""
    x, sr = sf.read(str(path), dtype="float32")
    if sr != rate:
        x = soxr.resample(x, sr, rate).astype(np.float32)
    return float_to_int16(x)


def pieces(x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """``x`` cut into consecutive pieces of the given sizes, cycled."""
    out, a = [], 0
    for n in itertools.cycle(sizes):
        if a >= x.shape[0]:
            return out
        out.append(x[a:a + n])
        a += n
    return out


def feed(model: VadModel, x: np.ndarray, sizes: list[int] | None = None, rate: int = 16000) -> list[VadDecision]:
    st = model.new_stream(rate)
    out: list[VadDecision] = []
    for p in pieces(x, sizes) if sizes else [x]:
        out += st.accept(p)
    return out + st.close()


@pytest.fixture(scope="module")
def clip(data_dir: Path) -> np.ndarray:
    return load(data_dir / CLIPS[1])


# ---------------------------------------------------------------------------------------------- chunking
@pytest.mark.parametrize("rate", [16000, 48000, 8000])
def test_streamed_in_odd_chunks_equals_fed_in_one_piece(data_dir: Path, rate: int) -> None:
    x = load(data_dir / CLIPS[1], rate)
    whole = feed(VadModel(), x, rate=rate)
    assert [d.kind for d in whole if d.kind is not PROGRESS][:2] == [START, END]
    assert sum(d.kind is PROGRESS for d in whole) > 20
    for sizes in ([1], [7, 333, 1201], [rate * 3 + 17]) if rate == 16000 else ([7, 333, 1201],):
        y = x if sizes != [1] else x[:rate]  # one sample at a time: the first second only
        ref = whole if sizes != [1] else feed(VadModel(), y, rate=rate)
        assert feed(VadModel(), y, sizes, rate) == ref, sizes


def test_decisions_are_well_formed_and_match_the_settings(clip: np.ndarray) -> None:
    out = feed(VadModel(VadConfig(min_silence_ms=500, speech_pad_ms=0)), clip, [320])
    segs = [d for d in out if d.kind is not PROGRESS]
    assert [d.kind for d in segs] == [START, END] * (len(segs) // 2)
    for s, e in zip(segs[::2], segs[1::2], strict=True):
        assert s.start == e.start < e.end <= clip.shape[0] and s.decision >= s.start and e.decision >= e.end
    marks = [d.decision for d in out if d.kind is PROGRESS]
    assert marks == sorted(marks) and all(d.start == d.decision and d.end == -1 for d in out if d.kind is PROGRESS)
    assert all(0 < b - a < 1600 + 512 for a, b in itertools.pairwise(marks))  # on window boundaries,
    assert len(marks) <= clip.shape[0] // 1600 + 1                            # one per 100 ms on average
    assert [d for d in feed(VadModel(VadConfig(progress_ms=0)), clip) if d.kind is PROGRESS] == []


# ---------------------------------------------------------------------------------------------- batching
def test_two_streams_batched_equal_each_alone(data_dir: Path) -> None:
    a, b = load(data_dir / CLIPS[0]), load(data_dir / CLIPS[1], 48000)
    alone_a = feed(VadModel(VadConfig(gate=False)), a, [320])
    alone_b = feed(VadModel(VadConfig(gate=False)), b, [960], rate=48000)
    model = VadModel(VadConfig(gate=False))
    sa, sb = model.new_stream(16000, key="a"), model.new_stream(48000, key="b")
    got: dict[str, list[VadDecision]] = {"a": [], "b": []}
    for pa, pb in itertools.zip_longest(pieces(a, [320]), pieces(b, [960])):
        for st, p in ((sa, pa), (sb, pb)):
            if p is not None:
                st.feed(p)
                for s, d in model.take_all():
                    got[s.key].append(d)
    model.step()
    for s, d in model.take_all():
        got[s.key].append(d)
    got["a"] += sa.close()
    got["b"] += sb.close()
    assert got["a"] == alone_a and got["b"] == alone_b
    two = VadModel(VadConfig(gate=False))  # both at 16 kHz: their windows share session calls
    s1, s2 = two.new_stream(16000), two.new_stream(16000)
    out1: list[VadDecision] = []
    for p in pieces(a, [512]):
        out1 += s1.accept(p)
        s2.feed(p)
    assert out1 + s1.close() == alone_a
    assert two.calls < two.windows_run == two.windows_decided


def test_a_window_waits_for_the_other_stream_until_step(clip: np.ndarray) -> None:
    model = VadModel(VadConfig(gate=False))
    quiet, st = model.new_stream(16000), model.new_stream(16000)
    quiet.feed(clip[:100])
    st.feed(clip[:512])
    assert model.waiting == 1 and st.waiting and st.take() == []
    model.step()
    assert not model.waiting and [d.kind for d in st.take()] == [PROGRESS]
    unbatched = VadModel(VadConfig(gate=False, batch=False))
    unbatched.new_stream(16000)
    st = unbatched.new_stream(16000)
    assert [d.kind for d in st.accept(clip[:512])] == [PROGRESS] and not unbatched.waiting


# ---------------------------------------------------------------------------------------------- flush, close, restart
def test_close_ends_the_open_segment_at_the_last_sample_seen(clip: np.ndarray) -> None:
    st = VadModel().new_stream(16000)
    out = st.accept(clip[:80000])  # mid-sentence (speech from 4.3 to 6.0 s)
    assert [d.kind for d in out if d.kind is not PROGRESS] == [START, END, START, END, START]
    end = [d for d in st.close() if d.kind is END]
    assert len(end) == 1 and end[0].decision == 80000 and end[0].start < end[0].end <= 80000
    assert st.closed and st.model.open_streams == 0
    with pytest.raises(ParamError, match="closed"):
        st.accept(clip[:10])


def test_flush_ends_the_segment_and_the_stream_goes_on(clip: np.ndarray) -> None:
    st = VadModel().new_stream(16000)
    out = st.accept(clip[:80000]) + st.flush()
    assert [d.kind for d in out if d.kind is not PROGRESS] == [START, END] * 3
    assert out[-1].kind is END and out[-1].decision == 80000 and not st.closed
    out += st.accept(clip[80000:]) + st.close()
    segs = [d for d in out if d.kind is not PROGRESS]
    assert [d.kind for d in segs] == [START, END] * (len(segs) // 2) and len(segs) >= 8
    assert segs[5].decision == 80000 and segs[6].start >= segs[5].end  # speech after the flush: a new segment


def test_a_jump_forward_restarts_the_stream_at_the_new_index(clip: np.ndarray) -> None:
    st = VadModel().new_stream(16000)
    out = st.accept(clip[:40000], 0) + st.accept(clip[48000:], 48000) + st.close()
    ref_model = VadModel()
    first = ref_model.new_stream(16000)
    ref = first.accept(clip[:40000]) + first.close()
    second = ref_model.new_stream(16000, origin=48000)
    ref += second.accept(clip[48000:]) + second.close()
    assert out == ref
    assert any(d.kind is END and d.decision == 40000 for d in out)
    overlap = VadModel().new_stream(16000)  # samples already seen are skipped
    again = overlap.accept(clip[:20000], 0) + overlap.accept(clip[10000:], 10000) + overlap.close()
    assert again == feed(VadModel(), clip)


def test_silero_session_is_shared_per_thread_count() -> None:
    weights.clear()
    a, b, c = VadModel(), VadModel(VadConfig(min_silence_ms=100)), VadModel(VadConfig(threads=2))
    assert a.silero is b.silero is silero_session(1) and c.silero is not a.silero
    assert weights.loads()[("silero", "onnx", 1)] == 1
    assert VadModel(VadConfig(neural=False)).silero is None


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("settings", "message"), [
    ({"neg_threshold": 0.6}, r"neg_threshold=0\.6 is above threshold=0\.5; allowed: neg_threshold <= threshold"),
    ({"webrtc_mode": 4}, "webrtc_mode=4 is not allowed; allowed: 0, 1, 2, 3"),
    ({"frame_ms": 25}, "frame_ms=25 is not allowed; allowed: 10, 20, 30"),
    ({"threshold": 1.5}, r"threshold=1\.5 is not allowed; allowed: a number from 0\.0 to 1\.0"),
    ({"lead_in_windows": 17}, "lead_in_windows=17 is not allowed; allowed: an int from 0 to 16"),
    ({"threads": 0}, "threads=0 is not allowed; allowed: an int from 1 to 64"),
    ({"min_silence_ms": -1}, "min_silence_ms=-1 is not allowed; allowed: an int >= 0"),
    ({"min_speech_ms": 2.5}, r"min_speech_ms=2\.5 is not allowed; allowed: an int >= 0"),
    ({"gate": "yes"}, "gate='yes' is not allowed; allowed: true or false"),
])
def test_config_errors_name_the_value_and_what_is_allowed(settings: dict, message: str) -> None:
    with pytest.raises(ParamError, match=message):
        VadConfig(**settings)
    with pytest.raises(ParamError, match=message):
        VadConfig.from_params(settings)


def test_from_params_rejects_unknown_names_and_takes_whole_floats() -> None:
    with pytest.raises(ParamError, match="unknown VAD setting 'min_silence'; settings: batch, frame_ms"):
        VadConfig.from_params({"min_silence": 300})
    assert VadConfig.from_params({"min_silence_ms": 300.0, "threshold": 1}) == VadConfig(min_silence_ms=300,
                                                                                          threshold=1.0)
    assert VadConfig.from_params(None) == VadConfig()
    assert VadConfig(threshold=0.3).silence_threshold == pytest.approx(0.15)
    assert VadConfig(threshold=0.1).silence_threshold == 0.01


def test_stream_errors_name_the_value_and_what_is_allowed() -> None:
    model = VadModel(VadConfig(neural=False))
    with pytest.raises(ParamError, match="sample_rate=44100 is not allowed; allowed: 8000, 16000, 32000, 48000"):
        model.new_stream(44100)
    with pytest.raises(ParamError, match="origin=-1 is not allowed; allowed: an int >= 0"):
        model.new_stream(16000, origin=-1)
    st = model.new_stream(16000)
    with pytest.raises(ParamError, match=r"dtype float32 .* allowed: int16 mono"):
        st.accept(np.zeros(320, np.float32))
    with pytest.raises(ParamError, match=r"shape \(320, 2\) .* allowed: int16 mono"):
        st.accept(np.zeros((320, 2), np.int16))
    with pytest.raises(ParamError, match="mode=5 is not allowed; allowed: 0, 1, 2, 3"):
        WebrtcVadConfig(mode=5)
    with pytest.raises(ParamError, match=r"end_ratio=1\.2 is not allowed"):
        WebrtcVadConfig.from_params({"end_ratio": 1.2})


# ---------------------------------------------------------------------------------------------- the nodes agree
def test_the_vad_node_sends_the_model_decisions_as_events(clip: np.ndarray) -> None:
    chunks = [AudioChunk(header("s", a, seq=i), clip[a:a + 320].reshape(-1, 1), 16000)
              for i, a in enumerate(range(0, clip.shape[0], 320))]
    events = [m for _, m in run_node(TwoStageVad("vad", {"min_silence_ms": 200}), [("audio", c) for c in chunks])
              if isinstance(m, VadEvent)]
    decisions = feed(VadModel(VadConfig(min_silence_ms=200)), clip)
    assert [(e.kind, e.start_sample, e.end_sample, e.header.sample_index, e.probability) for e in events] == \
           [(d.kind, d.start, d.end, d.decision, d.probability) for d in decisions]
    assert [e.header.seq for e in events] == list(range(len(events)))
    spans = speech_spans(clip, 16000, VadConfig(min_silence_ms=200))
    assert spans == [(e.start_sample, e.end_sample) for e in events if e.kind is END] and spans


def test_webrtc_stream_chunking_and_its_node(clip: np.ndarray) -> None:
    cfg = WebrtcVadConfig(frame_ms=20, start_window_ms=200, min_speech_ms=100)
    st = WebrtcVadStream(cfg, 16000)
    whole = st.accept(clip) + st.flush()
    assert [d.kind for d in whole][:2] == [START, END]
    st = WebrtcVadStream(cfg, 16000)
    streamed = [d for p in pieces(clip, [7, 333, 1201]) for d in st.accept(p)] + st.flush()
    assert streamed == whole
    chunks = [AudioChunk(header("s", a, seq=i), clip[a:a + 480].reshape(-1, 1), 16000)
              for i, a in enumerate(range(0, clip.shape[0], 480))]
    node = WebrtcVad("vad", {"frame_ms": 20, "start_window_ms": 200, "min_speech_ms": 100})
    events = [m for _, m in run_node(node, [("audio", c) for c in chunks]) if isinstance(m, VadEvent)]
    assert [(e.kind, e.start_sample, e.end_sample, e.header.sample_index, e.probability) for e in events] == \
           [(d.kind, d.start, d.end, d.decision, d.probability) for d in whole]
