"""Feature front ends (models/frontend) and the ``features`` node on real recordings.

References: faster-whisper's FeatureExtractor and librosa's mel filters (Whisper mode); a plain
float64 numpy implementation written here, and kaldi-native-fbank (k2-fsa's C++ port of Kaldi's
feature code, the front end of sherpa-onnx and icefall) for the Kaldi mode, whole-signal and streaming.
"""

from __future__ import annotations

import logging
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import soxr
from faster_whisper.feature_extractor import FeatureExtractor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kikimimi.engine.clock import ManualClock
from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import Control, ControlKind, Header, Message
from kikimimi.engine.msgs.audio import AudioChunk, Features
from kikimimi.engine.registry import load_kind
from kikimimi.engine.testing import run_node, run_source
from kikimimi.models.frontend import (
    FeatureFrontEnd,
    FrontEndConfig,
    KaldiFbankStream,
    WhisperMelStream,
    kaldi_fbank,
    kaldi_mel_banks,
    kernels,
    whisper_frontend,
    whisper_log10_mel,
    whisper_mel_filters,
    whisper_normalize,
)
from kikimimi.nodes.features import FeatureNode
from kikimimi.nodes.file_source import FileSource

CLIPS = [
    "en/librispeech/1688/1688-142285-0000.flac",
    "en/librispeech/1998/1998-15444-0007.flac",
    "en/librispeech/2414/2414-128291-0005.flac",
    "en/librispeech/3752/3752-4944-0000.flac",
]
JFK = "en/jfk/jfk.flac"
FLEURS = "ja/fleurs/fleurs_ja_1837.wav"
EPS32 = float(np.finfo(np.float32).eps)


def load16k(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz (mean over channels, soxr resampling where needed)."""
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1, dtype=np.float32)
    if sr != 16000:
        x = soxr.resample(x, sr, 16000).astype(np.float32)
    return np.ascontiguousarray(x)


@pytest.fixture(scope="module")
def clip(data_dir: Path) -> np.ndarray:
    return load16k(data_dir / CLIPS[0])


# ---------------------------------------------------------------------------- mel filterbanks
@pytest.mark.parametrize("n_mels", [40, 80, 128])
def test_whisper_mel_filters_equal_librosa(n_mels: int) -> None:
    ours = whisper_mel_filters(n_mels)
    ref = librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels)
    assert ours.shape == ref.shape == (n_mels, 201) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


def reference_kaldi_banks(n_mels: int, n_fft: int = 512, sr: int = 16000, low: float = 20.0) -> np.ndarray:
    """Kaldi's MelBanks written out bin by bin (float64): HTK mel, unit-peak triangles, Nyquist bin 0."""
    def mel(f: float) -> float:
        return 1127.0 * np.log(1.0 + f / 700.0)

    lo, hi = mel(low), mel(sr / 2)
    step = (hi - lo) / (n_mels + 1)
    banks = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        left, centre, right = lo + m * step, lo + (m + 1) * step, lo + (m + 2) * step
        for k in range(n_fft // 2):
            f = mel(k * sr / n_fft)
            if left < f < right:
                banks[m, k] = (f - left) / (centre - left) if f <= centre else (right - f) / (right - centre)
    return banks


@pytest.mark.parametrize("n_mels", [23, 80, 126])
def test_kaldi_mel_banks_equal_a_bin_by_bin_reference(n_mels: int) -> None:
    np.testing.assert_allclose(kaldi_mel_banks(n_mels), reference_kaldi_banks(n_mels), atol=1e-6)


def test_bad_n_mels_name_the_allowed_values() -> None:
    with pytest.raises(ParamError, match="n_mels=100 is not allowed; allowed: 40, 80, 128"):
        whisper_log10_mel(np.zeros(1000, np.float32), 100)
    with pytest.raises(ParamError, match="n_mels=0 is not allowed; allowed: an int from 1 to 256"):
        kaldi_fbank(np.zeros(1000, np.float32), 0)
    with pytest.raises(ParamError, match="dtype int16 is not allowed; allowed: float32, float64"):
        whisper_log10_mel(np.zeros(1000, np.int16))


# ---------------------------------------------------------------------------- Whisper vs faster-whisper
@pytest.mark.parametrize("name", [*CLIPS, JFK, FLEURS])
@pytest.mark.parametrize("n_mels", [80, 128])
def test_whisper_matches_faster_whisper(data_dir: Path, name: str, n_mels: int) -> None:
    x = load16k(data_dir / name)
    ref = FeatureExtractor(feature_size=n_mels)(x).T   # normalized over the whole clip
    ours = whisper_normalize(whisper_log10_mel(x, n_mels))
    assert ours.shape == ref.shape == (x.shape[0] // 160 + 1, n_mels)
    assert np.abs(ours - ref).max() <= 1e-3


@pytest.mark.parametrize("n", [1, 7, 40, 41, 42, 199, 200, 201, 359, 360, 361, 399, 400, 401, 560, 561, 1000])
def test_whisper_short_signals_match_faster_whisper(clip: np.ndarray, n: int) -> None:
    """The padding edge cases: numpy's multiple reflection below 41 samples, frames reaching both ends."""
    x = clip[16000:16000 + n].copy()
    ref = FeatureExtractor(feature_size=80)(x).T
    ours = whisper_normalize(whisper_log10_mel(x))
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-3


def test_whisper_normalize_is_whispers_clamp_and_scale(clip: np.ndarray) -> None:
    m = whisper_log10_mel(clip)
    want = (np.maximum(m, m.max() - np.float32(8.0)) + np.float32(4.0)) / np.float32(4.0)
    np.testing.assert_array_equal(whisper_normalize(m), want)
    inplace = m.copy()
    assert whisper_normalize(inplace, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, want)


# ---------------------------------------------------------------------------- Kaldi fbank
def reference_fbank(x: np.ndarray, n_mels: int) -> np.ndarray:
    """torchaudio.compliance.kaldi.fbank defaults in float64: framing (snip edges), DC removal,
    pre-emphasis 0.97 with x[-1] = x[0], Povey window, |rfft 512|^2, mel banks, ln max(e, eps)."""
    x = x.astype(np.float64)
    n = 1 + (x.shape[0] - 400) // 160
    frames = x[np.arange(400)[None, :] + 160 * np.arange(n)[:, None]]
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames = frames - 0.97 * np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    povey = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 399)) ** 0.85
    power = np.abs(np.fft.rfft(frames * povey, n=512)) ** 2
    return np.log(np.maximum(power @ reference_kaldi_banks(n_mels).T, EPS32))


def check_fbank_close(ours: np.ndarray, ref: np.ndarray) -> None:
    """Log-energy differences are relative energy errors. Within 70 dB of a frame's loudest bin they
    are <= 1e-3; further down, float32 FFT rounding (which kaldi-native-fbank's float32 code shares) allows 0.05."""
    assert ours.shape == ref.shape
    diff = np.abs(ours - ref)
    loud = ref >= ref.max(axis=1, keepdims=True) - np.log(1e7)
    assert loud.mean() > 0.95
    assert diff[loud].max() <= 1e-3
    assert diff.max() <= 0.05


@pytest.mark.parametrize("name", [CLIPS[0], CLIPS[1], FLEURS])
@pytest.mark.parametrize("n_mels", [23, 80, 126])
def test_kaldi_fbank_matches_numpy_reference(data_dir: Path, name: str, n_mels: int) -> None:
    x = load16k(data_dir / name) * np.float32(32768.0)   # int16 range, as Kaldi-trained models expect
    check_fbank_close(kaldi_fbank(x, n_mels), reference_fbank(x, n_mels))


def knf_fbank(x: np.ndarray, n_mels: int, chunks: list[int] | None = None) -> np.ndarray:
    """kaldi-native-fbank's frames of ``x`` (int16 range), fed whole or in ``chunks`` (cycled)."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = n_mels
    fbank = knf.OnlineFbank(opts)
    sizes, pos, i = chunks or [x.shape[0]], 0, 0
    while pos < x.shape[0]:
        k = sizes[i % len(sizes)]
        fbank.accept_waveform(16000, x[pos:pos + k].tolist())
        pos, i = pos + k, i + 1
    fbank.input_finished()
    return np.array([fbank.get_frame(t) for t in range(fbank.num_frames_ready)], np.float32).reshape(-1, n_mels)


@pytest.mark.parametrize("name", [CLIPS[1], CLIPS[3], FLEURS])
@pytest.mark.parametrize("n_mels", [23, 80, 126])
def test_kaldi_fbank_matches_kaldi_native_fbank(data_dir: Path, name: str, n_mels: int) -> None:
    x = load16k(data_dir / name) * np.float32(32768.0)
    ref = knf_fbank(x, n_mels)
    assert ref.shape[0] == (x.shape[0] - 400) // 160 + 1   # snip_edges, as ours
    check_fbank_close(kaldi_fbank(x, n_mels), ref)


def test_kaldi_refuses_mel_bins_with_no_fft_bin_as_kaldi_native_fbank_does() -> None:
    """At 16 kHz with a 512-point FFT the 127th bin would hold no FFT bin: a constant log(eps) channel."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.mel_opts.num_bins = 127
    with pytest.raises(ValueError, match="num_mel_bins too large"):
        knf.OnlineFbank(opts)
    with pytest.raises(ParamError, match=r"n_mels=127 is not allowed at 16000 Hz .* allowed: 1 to 126"):
        kaldi_fbank(np.zeros(1000, np.float32), 127)
    with pytest.raises(ParamError, match="n_mels=127 is not allowed for kaldi_fbank; allowed: 1 to 126"):
        FrontEndConfig(kind="kaldi_fbank", n_mels=127)
    opts.mel_opts.num_bins = 126
    knf.OnlineFbank(opts)


def test_streaming_kaldi_fbank_matches_kaldi_native_fbank_online(data_dir: Path) -> None:
    """Both fed the same odd chunk sizes: every frame as soon as its samples are in, equal to the reference."""
    x = load16k(data_dir / JFK)[: 16000 * 4] * np.float32(32768.0)
    sizes = [160, 1, 399, 1000, 37]
    ours, _ = stream_all(KaldiFbankStream(80), x, sizes)
    check_fbank_close(ours, knf_fbank(x, 80, sizes))


def test_kaldi_short_signals() -> None:
    assert kaldi_fbank(np.zeros(399, np.float32)).shape == (0, 80)
    assert kaldi_fbank(np.zeros(400, np.float32)).shape == (1, 80)
    assert kaldi_fbank(np.zeros(1000, np.float32)).shape == (4, 80)
    assert np.all(kaldi_fbank(np.zeros(400, np.float32)) == np.float32(np.log(EPS32)))


# ---------------------------------------------------------------------------- streaming == whole signal
def stream_all(stream: WhisperMelStream | KaldiFbankStream, x: np.ndarray, sizes: list[int],
               flush_after: set[int] = frozenset()) -> tuple[np.ndarray, list[int]]:
    """Feed ``x`` in chunks of ``sizes`` (cycled), flushing after the chunks in ``flush_after`` and at the end.
    Returns every frame, in order, and the sample positions where utterances ended."""
    out, cuts, pos, i = [], [], 0, 0
    while pos < x.shape[0]:
        k = sizes[i % len(sizes)]
        out.append(np.array(stream.accept(x[pos:pos + k])))
        pos = min(pos + k, x.shape[0])
        if i in flush_after and pos < x.shape[0]:
            out.append(np.array(stream.flush()))
            cuts.append(pos)
        i += 1
    out.append(np.array(stream.flush()))
    return np.concatenate(out), [*cuts, x.shape[0]]


def whole(kind: str, x: np.ndarray, cuts: list[int]) -> np.ndarray:
    fn = whisper_log10_mel if kind == "whisper" else kaldi_fbank
    parts, a = [], 0
    for b in cuts:
        parts.append(fn(x[a:b]))
        a = b
    return np.concatenate(parts)


def new_stream(kind: str) -> WhisperMelStream | KaldiFbankStream:
    return WhisperMelStream() if kind == "whisper" else KaldiFbankStream()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["whisper", "kaldi"]),
       sizes=st.lists(st.one_of(st.integers(1, 3), st.integers(1, 4000)), min_size=1, max_size=40),
       start=st.integers(0, 100_000), length=st.integers(1, 30_000),
       flush_after=st.sets(st.integers(0, 40), max_size=3))
def test_streaming_gives_exactly_the_whole_signal_frames(clip: np.ndarray, kind: str, sizes: list[int], start: int,
                                                         length: int, flush_after: set[int]) -> None:
    """Bit-identical: each frame is computed once, by the same kernel, from the same 400 samples."""
    x = clip[start:start + length]
    stream = new_stream(kind)
    got, cuts = stream_all(stream, x, sizes, flush_after)
    ref = whole(kind, x, cuts)
    assert got.shape == ref.shape
    assert np.array_equal(got, ref)
    assert stream.n_frames == ref.shape[0]


@pytest.mark.parametrize("kind", ["whisper", "kaldi"])
def test_single_sample_chunks(clip: np.ndarray, kind: str) -> None:
    x = clip[5000:8000]
    stream = new_stream(kind)
    firsts = [i for i in range(x.shape[0]) if stream.accept(x[i:i + 1]).shape[0]]
    got = np.concatenate([stream.features.view(0, stream.n_frames), stream.flush()])
    assert np.array_equal(got, whole(kind, x, [x.shape[0]]))
    assert firsts[:2] == ([200, 359] if kind == "whisper" else [399, 559])  # frame 0 needs sample 200 / 399


@pytest.mark.parametrize("kind", ["whisper", "kaldi"])
def test_short_utterances_back_to_back(clip: np.ndarray, kind: str) -> None:
    """Utterances shorter than a window, than the reflection (41 samples), and one sample long."""
    lengths = [1, 5, 40, 41, 150, 201, 300, 399, 400, 561]
    cuts = list(np.cumsum(lengths))
    x = clip[3000:3000 + cuts[-1]]
    stream = new_stream(kind)
    got = []
    for a, b in zip([0, *cuts[:-1]], cuts, strict=True):
        got += [np.array(stream.accept(x[a:b])), np.array(stream.flush())]
    assert np.array_equal(np.concatenate(got), whole(kind, x, cuts))


@pytest.mark.parametrize("kind", ["whisper", "kaldi"])
def test_chunk_larger_than_the_feature_ring(data_dir: Path, kind: str) -> None:
    x = load16k(data_dir / "diarization/ami/dev00.wav")   # 30 s in one call, ring of 2 s
    stream = WhisperMelStream(ring_frames=200) if kind == "whisper" else KaldiFbankStream(ring_frames=200)
    got = np.concatenate([stream.accept(x), stream.flush()])
    assert np.array_equal(got, whole(kind, x, [x.shape[0]]))
    assert stream.features.capacity == 200


@pytest.mark.parametrize("kind", ["whisper", "kaldi"])
def test_cost_per_chunk_does_not_grow_with_the_stream(clip: np.ndarray, kind: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Accepting a 20 ms chunk after 1 s and after 60 s runs the kernel on the same amount of audio,
    and the rings keep their sizes: the work per frame is constant."""
    calls: list[tuple[int, int]] = []
    real = kernels.mel_frames_kernel

    def spy(src: np.ndarray, offset: int, hop: int, n_frames: int, *rest: object) -> None:
        calls.append((src.shape[0], n_frames))
        real(src, offset, hop, n_frames, *rest)

    monkeypatch.setattr(kernels, "mel_frames_kernel", spy)
    stream = new_stream(kind)
    audio_cap, feat_cap = stream.audio.capacity, stream.features.capacity
    x = np.tile(clip, 61 * 16000 // clip.shape[0] + 1)
    work: dict[int, list[tuple[int, int]]] = {}
    for i in range(61 * 50):
        calls.clear()
        new = stream.accept(x[i * 320:(i + 1) * 320])
        if i in (50, 3000):   # 1 s and 60 s into the stream
            work[i] = list(calls)
            assert new.shape[0] == 2
        assert sum(s for s, _ in calls) <= 320 + 400 + 160   # the chunk plus less than a window and a hop
    assert work[50] == work[3000]
    assert (stream.audio.capacity, stream.features.capacity) == (audio_cap, feat_cap)


def test_reset_starts_over(clip: np.ndarray) -> None:
    stream = WhisperMelStream()
    stream.accept(clip[:5000])
    stream.reset()
    assert stream.n_frames == 0 and stream.audio.write_index == 0
    got = np.concatenate([stream.accept(clip[:3000]), stream.flush()])
    assert np.array_equal(got, whisper_log10_mel(clip[:3000]))


# ---------------------------------------------------------------------------- the streaming contract
def reference_utterances(x: np.ndarray, chunks: list[tuple[int, int]], max_gap: int) -> list[tuple[int, np.ndarray]]:
    """What the contract should make of chunks (start, length) of ``x``: (origin, audio) per utterance,
    gaps up to ``max_gap`` zero-filled, longer ones starting a new utterance, overlaps skipped."""
    utts: list[tuple[int, list[np.ndarray]]] = []
    nxt: int | None = None
    for a, n in chunks:
        if nxt is None or a - nxt > max_gap:
            utts.append((a, [x[a:a + n]]))
        elif a > nxt:
            utts[-1][1].extend([np.zeros(a - nxt, np.float32), x[a:a + n]])
        else:
            utts[-1][1].append(x[nxt:a + n])
        nxt = a + n if nxt is None or a - nxt > max_gap else max(nxt, a + n)
    return [(o, np.concatenate(parts)) for o, parts in utts]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["whisper_log10_mel", "kaldi_fbank"]),
       steps=st.lists(st.tuples(st.one_of(st.integers(1, 3), st.integers(1, 4000)),
                                st.sampled_from([0, 0, 0, 1, 500, 1700, -1, -300, -5000])), min_size=1, max_size=30),
       start=st.integers(0, 50_000), int16=st.booleans(), stereo=st.booleans())
def test_contract_streamed_with_gaps_and_overlaps_gives_the_whole_signal_frames(
        clip: np.ndarray, kind: str, steps: list[tuple[int, int]], start: int, int16: bool, stereo: bool) -> None:
    """Odd chunk sizes, zero-filled and utterance-ending gaps (max_gap 100 ms = 1600 samples) and
    overlaps, int16 or float32, mono or stereo: frame for frame the whole-signal function of each
    utterance, at the sample index the clock says; each gap is reported."""
    fe = FeatureFrontEnd(FrontEndConfig(kind, 80, max_gap_ms=100))
    stream = fe.new_stream()
    x = clip.copy()
    if int16:
        x = np.round(x * 32768).clip(-32768, 32767).astype(np.int16).astype(np.float32) / np.float32(32768)
    chunks, parts, gaps, pos = [], [], [], start
    for n, jump in steps:
        a = max(0, pos + jump)
        chunks.append((a, n))
        c = x[a:a + n]
        pcm = (c * 32768).astype(np.int16) if int16 else c
        pcm = np.stack([pcm, pcm], axis=1) if stereo else pcm
        expected = stream.next_sample
        res = stream.accept(pcm, a)
        if res is not None:
            parts += res.frames
            if res.gap is not None:
                gaps.append((res.gap.expected, res.gap.got, res.gap.zero_filled))
        if expected is not None and a > expected:
            assert gaps[-1] == (expected, a, a - expected <= 1600)
        pos = max(pos, a + n)
    tail = stream.flush()
    parts += [tail] if tail is not None else []
    fn = whisper_log10_mel if kind == "whisper_log10_mel" else kaldi_fbank
    scale = np.float32(32768.0 if kind == "kaldi_fbank" else 1.0)
    utts = reference_utterances(x, chunks, 1600)
    refs = [fn(u * scale) for _, u in utts]
    got = np.concatenate([p.frames for p in parts]) if parts else np.zeros((0, 80), np.float32)
    assert np.array_equal(got, np.concatenate(refs))
    assert [p.start_frame for p in parts] == list(np.cumsum([0] + [p.n_frames for p in parts]))[:-1]
    firsts = np.cumsum([0] + [r.shape[0] for r in refs])
    for p in parts:    # each part lies in one utterance, at origin + (frames since it began) * hop
        u = int(np.searchsorted(firsts, p.start_frame, side="right")) - 1
        assert p.start_frame + p.n_frames <= firsts[u + 1] and p.hop == 160
        assert p.sample_index == utts[u][0] + (p.start_frame - firsts[u]) * 160
    assert stream.n_frames == firsts[-1] and stream.next_sample is None


def test_contract_feature_ring_scale_and_flush() -> None:
    fe = FeatureFrontEnd(FrontEndConfig("kaldi_fbank", 40, ring_seconds=5, int16_scale=False))
    assert fe.config.scale_int16 is False and FrontEndConfig("kaldi_fbank").scale_int16 is True
    assert fe.warmup().frames.shape[1] == 40
    stream = fe.new_stream()
    res = stream.accept(np.zeros(800, np.int16), 16000)
    assert res is not None and res.gap is None and len(res.frames) == 1
    part = res.frames[0]
    assert (part.start_frame, part.sample_index, part.n_frames) == (0, 16000, 3)
    ring = stream.feature_ring
    assert ring.capacity == 500 and ring.channels == 40 and ring.write_index == 3
    assert np.array_equal(ring.view(0, 3), part.frames)
    assert stream.flush() is None                  # Kaldi: no end padding frames
    assert stream.accept(np.zeros(100, np.float32), 99_000) is None   # a new utterance, too short for a frame


def test_contract_config_and_input_errors() -> None:
    with pytest.raises(ParamError, match="n_mels=100 is not allowed for whisper_log10_mel; allowed: 40, 80, 128"):
        FrontEndConfig(n_mels=100)
    with pytest.raises(ParamError, match="n_mels=300 is not allowed for kaldi_fbank; allowed: 1 to 126"):
        FrontEndConfig("kaldi_fbank", 300)
    with pytest.raises(ParamError, match="kind='mfcc' is not allowed; allowed: whisper_log10_mel, kaldi_fbank"):
        FrontEndConfig("mfcc")
    with pytest.raises(ParamError, match="ring_seconds=1 is not allowed; allowed: a number from 2 to 3600"):
        FrontEndConfig(ring_seconds=1)
    with pytest.raises(ParamError, match="max_gap_ms=-1 is not allowed; allowed: an int >= 0"):
        FrontEndConfig(max_gap_ms=-1)
    with pytest.raises(ParamError, match="int16_scale=1 is not allowed"):
        FrontEndConfig(int16_scale=1)  # type: ignore[arg-type]
    stream = FeatureFrontEnd(FrontEndConfig()).new_stream()
    with pytest.raises(ParamError, match=r"samples of shape \(2, 2, 2\) are not allowed"):
        stream.accept(np.zeros((2, 2, 2), np.float32), 0)
    with pytest.raises(ParamError, match="samples of dtype int32 are not allowed; allowed: int16, float32, float64"):
        stream.accept(np.zeros(10, np.int32), 0)
    with pytest.raises(ParamError, match=r"sample_index=0\.5 is not allowed; allowed: an int"):
        stream.accept(np.zeros(10, np.float32), 0.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- the node
def load_chunks(path: Path, stream_id: str = "file", **params: object) -> list[AudioChunk]:
    node = FileSource("src", {"path": str(path), "speed": 0, "stream_id": stream_id, **params}, clock=ManualClock())
    return [m for _, m in run_source(node) if isinstance(m, AudioChunk)]


def features_of(out: list[tuple[str, Message]], sid: str | None = None) -> list[Features]:
    return [m for _, m in out if isinstance(m, Features) and (sid is None or m.header.stream_id == sid)]


def eos(sid: str = "all") -> tuple[str, Control]:
    return "audio", Control(Header(sid, 0, -1, 0, "src"), ControlKind.END_OF_STREAM)


@pytest.mark.parametrize(("kind", "scale"), [("whisper_log10_mel", 1 / 32768), ("kaldi_fbank", 1.0)])
def test_node_gives_the_whole_signal_frames(data_dir: Path, kind: str, scale: float) -> None:
    chunks = load_chunks(data_dir / CLIPS[1])
    node = FeatureNode("feat", {"kind": kind}, clock=ManualClock())
    msgs = features_of(run_node(node, [("audio", c) for c in chunks]))
    x = np.concatenate([c.samples[:, 0] for c in chunks]).astype(np.float32) * np.float32(scale)
    ref = whisper_log10_mel(x) if kind == "whisper_log10_mel" else kaldi_fbank(x)
    assert np.array_equal(np.concatenate([m.frames for m in msgs]), ref)
    assert [m.start_frame for m in msgs] == list(np.cumsum([0] + [m.n_frames for m in msgs[:-1]]))
    assert all(m.header.sample_index == m.start_frame * 160 and m.hop == 160 and m.kind == kind for m in msgs)
    assert all(m.frames.flags.owndata for m in msgs)   # copies by default: messages outlive the ring


def test_node_flushes_on_end_of_stream_and_keeps_streams_apart(data_dir: Path) -> None:
    a = load_chunks(data_dir / CLIPS[2], "a")
    b = load_chunks(data_dir / FLEURS, "b", dtype="float32")
    node = FeatureNode("feat", {"zero_copy": True}, clock=ManualClock())
    out: list[tuple[str, Message]] = []
    node.bind(lambda port, msg: out.append((port, msg)))
    node.on_start()
    for i in range(max(len(a), len(b))):
        for c in a[i:i + 1] + b[i:i + 1]:
            node.on_message("audio", c)
    frames = {s: [m.frames.copy() for m in features_of(out, s)] for s in "ab"}
    node.on_control(*eos("a"))
    tail = features_of(out, "a")[-1]
    assert tail.start_frame + tail.n_frames == a[-1].end_index // 160 + 1 and not tail.frames.flags.writeable
    frames["a"].append(tail.frames.copy())
    node.on_control(*eos("b"))
    frames["b"].append(features_of(out, "b")[-1].frames.copy())
    node.on_stop()
    assert len(features_of(out)) == sum(len(v) for v in frames.values())  # nothing more after the flushes
    for s, chunks in (("a", a), ("b", b)):
        x = np.concatenate([c.samples[:, 0] for c in chunks])
        x = x.astype(np.float32) * np.float32(1 / 32768) if x.dtype == np.int16 else x
        assert np.array_equal(np.concatenate(frames[s]), whisper_log10_mel(x))


def test_flush_starts_a_new_utterance_and_frame_indices_go_on(data_dir: Path) -> None:
    chunks = load_chunks(data_dir / CLIPS[0])[:150]
    flush = Control(Header("file", 0, -1, 0, "src"), ControlKind.FLUSH)
    node = FeatureNode("feat", {}, clock=ManualClock())
    msgs = features_of(run_node(node, [("audio", c) for c in chunks[:100]] + [("audio", flush)]
                                + [("audio", c) for c in chunks[100:]]))
    x = np.concatenate([c.samples[:, 0] for c in chunks]).astype(np.float32) * np.float32(1 / 32768)
    cut = chunks[100].header.sample_index
    first, second = whisper_log10_mel(x[:cut]), whisper_log10_mel(x[cut:])
    assert np.array_equal(np.concatenate([m.frames for m in msgs]), np.concatenate([first, second]))
    assert [m.start_frame for m in msgs] == list(np.cumsum([0] + [m.n_frames for m in msgs[:-1]]))
    later = [m for m in msgs if m.start_frame >= first.shape[0]]
    assert later[0].start_frame == first.shape[0] and later[0].header.sample_index == cut


def test_wrong_sample_rate_is_rejected_counted_and_later_chunks_work(
        data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    chunks = load_chunks(data_dir / CLIPS[1])
    bad = AudioChunk(Header("file", 0, 0, 0, "src"), np.zeros((882, 1), np.int16), 44100)
    node = FeatureNode("feat", {}, clock=ManualClock())
    with caplog.at_level(logging.WARNING, logger="kikimimi.node.feat"):
        msgs = features_of(run_node(node, [("audio", bad)] + [("audio", c) for c in chunks]))
    assert node.stats.dropped["rejected"] == 1 and node.stats.rejected_by_kind["sample_rate"] == 1
    assert "dropping AudioChunk of stream 'file' at 44100 Hz; allowed sample rates: 16000" in caplog.text
    x = np.concatenate([c.samples[:, 0] for c in chunks]).astype(np.float32) * np.float32(1 / 32768)
    assert np.array_equal(np.concatenate([m.frames for m in msgs]), whisper_log10_mel(x))


def test_gap_is_zero_filled_and_overlap_skipped(clip: np.ndarray) -> None:
    def chunk(i: int, a: int, b: int) -> tuple[str, AudioChunk]:
        return "audio", AudioChunk(Header("s", i, a, 0, "src"), clip[a:b, None].copy(), 16000)

    node = FeatureNode("feat", {}, clock=ManualClock())
    msgs = features_of(run_node(node, [chunk(0, 0, 8000), chunk(1, 9000, 16000), chunk(2, 15000, 20000)]))
    x = clip[:20000].copy()
    x[8000:9000] = 0.0
    assert np.array_equal(np.concatenate([m.frames for m in msgs]), whisper_log10_mel(x))


def test_long_gap_starts_a_new_utterance(clip: np.ndarray) -> None:
    def chunk(i: int, a: int, b: int) -> tuple[str, AudioChunk]:
        return "audio", AudioChunk(Header("s", i, a, 0, "src"), clip[a:b, None].copy(), 16000)

    node = FeatureNode("feat", {"max_gap_ms": 100}, clock=ManualClock())
    msgs = features_of(run_node(node, [chunk(0, 0, 8000), chunk(1, 12000, 20000)]))
    first, second = whisper_log10_mel(clip[:8000]), whisper_log10_mel(clip[12000:20000])
    assert np.array_equal(np.concatenate([m.frames for m in msgs]), np.concatenate([first, second]))
    resumed = next(m for m in msgs if m.start_frame == first.shape[0])
    assert resumed.header.sample_index == 12000


def test_stereo_float32_gives_the_same_frames_as_mono_int16(data_dir: Path) -> None:
    chunks = load_chunks(data_dir / CLIPS[1])[:200]
    stereo = [AudioChunk(c.header, np.repeat(c.samples.astype(np.float32) / 32768, 2, axis=1), 16000)
              for c in chunks]
    for kind in ("whisper_log10_mel", "kaldi_fbank"):
        mono = features_of(run_node(FeatureNode("f", {"kind": kind}), [("audio", c) for c in chunks]))
        st2 = features_of(run_node(FeatureNode("f", {"kind": kind}), [("audio", c) for c in stereo]))
        assert np.array_equal(np.concatenate([m.frames for m in mono]), np.concatenate([m.frames for m in st2]))


def test_validating_kernel_wrapper(clip: np.ndarray) -> None:
    fe = whisper_frontend(80)
    sc = fe.scratch()
    b = fe.bank
    src = clip[920:2760].copy()   # windows of frames 7..16 of clip[:2760] (centred on 160 t)
    out = np.zeros((10, 80), np.float32)
    args = (fe.window, False, 0.0, b.lo, b.hi, b.offset, b.weights, 1e-10, True, sc.fbuf, sc.sbuf, sc.power)
    kernels.mel_frames(src, 0, 160, 10, *args, out)
    assert np.array_equal(out, whisper_log10_mel(clip[:2760])[7:17])
    with pytest.raises(ParamError, match="11 frames of 400 samples every 160 from offset 0 need 2000 samples; src has"):
        kernels.mel_frames(src, 0, 160, 11, *args, np.zeros((11, 80), np.float32))
    with pytest.raises(ParamError, match="src must be a C-contiguous float32 array"):
        kernels.mel_frames(src.astype(np.float64), 0, 160, 1, *args, out)
    with pytest.raises(ValueError, match="frames reach outside src"):
        kernels.mel_frames_kernel(src, 0, 160, 11, *args, np.zeros((11, 80), np.float32))


def test_node_params_and_registry() -> None:
    with pytest.raises(ParamError, match="n_mels=100 is not allowed for whisper_log10_mel; allowed: 40, 80, 128"):
        FeatureNode("feat", {"n_mels": 100})
    with pytest.raises(ParamError, match="n_mels=300 is not allowed for kaldi_fbank; allowed: 1 to 126"):
        FeatureNode("feat", {"kind": "kaldi_fbank", "n_mels": 300})
    with pytest.raises(ParamError, match="kind='mfcc' is not allowed"):
        FeatureNode("feat", {"kind": "mfcc"})
    assert load_kind("features") is FeatureNode
    node = FeatureNode("feat", {"kind": "kaldi_fbank", "n_mels": 40, "ring_seconds": 5})
    node.on_start()
    node.on_message("audio", AudioChunk(Header("s", 0, 0, 0, "src"), np.zeros((800, 1), np.int16), 16000))
    ring = node.feature_ring("s")
    assert ring is not None and ring.capacity == 500 and ring.channels == 40 and ring.write_index == 3
