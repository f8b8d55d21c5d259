"""Our chunked AV Conformer-CTC on synthetic inputs: chunked = whole, streaming = one-shot, the chunk-limited
context, checkpoints, the character vocabulary and CTC collapse, and the errors bad input gets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from kikimimi.engine.errors import ParamError  # noqa: E402
from kikimimi.models.avsr.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from kikimimi.models.avsr.chunked import ChunkedAvRecognizer, ChunkedAvStream, load_chunked  # noqa: E402
from kikimimi.models.avsr.conformer import (  # noqa: E402
    ConformerLayer,
    ConformerStack,
    chunk_mask,
    earliest_dependency,
)
from kikimimi.models.avsr.data import AvDataError, AvDataset, find_pairs  # noqa: E402
from kikimimi.models.avsr.model import (  # noqa: E402
    AvConfig,
    AvCtcModel,
    CtcWord,
    ctc_collapse,
    ctc_words,
    decode_ids,
    encode_text,
    greedy_text,
    model_inputs,
    nearest_video,
    normalize_text,
)
from kikimimi.models.frontend.kaldi import kaldi_fbank, kaldi_n_frames  # noqa: E402

torch.set_num_threads(1)
RATE = 16000
CFG = AvConfig(d_model=32, n_heads=2, n_layers=2, ff_mult=2, conv_kernel=5, chunk_frames=4, left_chunks=2,
               video_channels=4, dropout=0.0, modality_dropout=0.0)


def tiny_model(seed: int = 0, config: AvConfig = CFG) -> AvCtcModel:
    """A random model that reads the synthetic clips as many short "words" (so revisions commit text)."""
    torch.manual_seed(seed)
    m = AvCtcModel(config)
    fb = kaldi_fbank(synthetic_av(0, RATE)[0] * 32768.0, config.n_mels)
    m.set_normalisation(fb.mean(axis=0), fb.std(axis=0))
    with torch.no_grad():
        for layer in m.encoder.layers:
            layer.attn.rel_bias.normal_(0.0, 0.5)
        m.head.weight.normal_(0.0, 1.0)
        m.head.bias[1] += 3.0                          # spaces now and then
    return m.eval()


@pytest.fixture(scope="module")
def rec() -> ChunkedAvRecognizer:
    return ChunkedAvRecognizer(tiny_model(), threads=1)


def synthetic_av(seed: int, n_audio: int, offset: int = 37, face_rate: float = 0.8):
    """Audio of 120 ms tones of random pitch and loudness, and random mouths at 25 fps from ``offset``
    (no face in about 1 - ``face_rate`` of the frames): (audio, frame samples, mouths, has_face)."""
    rng = np.random.default_rng(seed)
    seg = 1920
    n_seg = -(-n_audio // seg)
    freq = np.repeat(rng.uniform(100, 3000, n_seg), seg)[:n_audio]
    amp = np.repeat(rng.uniform(0.0, 0.5, n_seg) ** 2, seg)[:n_audio]
    audio = (amp * np.sin(np.cumsum(2 * np.pi * freq / RATE)) + 0.01 * rng.standard_normal(n_audio))
    vs = np.arange(offset, n_audio, 640, dtype=np.int64)
    has = rng.random(len(vs)) < face_rate
    mouths = rng.integers(0, 256, (len(vs), 96, 96), dtype=np.uint8) * has[:, None, None].astype(np.uint8)
    return audio.astype(np.float32), vs, mouths, has


def stream_decode(stream: ChunkedAvStream, audio, vs, mouths, has, start, end, rng, max_piece=112,
                  video_lead=300, tail=RATE, endpoint_delay=0):
    """Feed irregular audio pieces with the video interleaved; begin at ``start``, endpoint at ``end`` once the
    audio is ``endpoint_delay`` samples past it (decoding goes on meanwhile). Returns the revisions and the
    number of frames decoded when the endpoint came."""
    revs, pos, vi, before = [], 0, 0, -1
    stream.begin(start)
    total = min(len(audio), end + tail)
    while pos < total:
        k = int(min(rng.integers(1, max_piece + 1), total - pos))
        stream.accept_audio(audio[pos:pos + k], pos)
        pos += k
        while vi < len(vs) and vs[vi] <= pos + video_lead:
            stream.accept_video(mouths[vi] if has[vi] else None, int(vs[vi]))
            vi += 1
        if pos >= end + endpoint_delay and stream.utterance_open and before < 0:
            before = stream.log_probs().shape[0]
            stream.endpoint(end)
        r = stream.step()
        if r is not None:
            revs.append(r)
    return revs, before


# ------------------------------------------------------------------------------------------------ (a)
@pytest.mark.parametrize(("chunk", "left", "kernel", "n"), [(4, 2, 5, 23), (3, 1, 1, 9), (5, 0, 7, 25), (2, 3, 15, 17),
                                                            (8, 4, 15, 8), (4, 1, 3, 1)])
def test_conformer_whole_equals_chained_chunks(chunk: int, left: int, kernel: int, n: int) -> None:
    torch.manual_seed(chunk * 100 + n)
    stack = ConformerStack(32, 4, 3, 2, kernel, chunk, left, 0.1).eval()
    with torch.no_grad():
        for p in stack.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        x = torch.randn(2, n, 32)
        whole = stack(x)
        cache, outs = stack.init_cache(2), []
        for a in range(0, n, chunk):
            y, cache = stack.forward_chunk(x[:, a:a + chunk], cache)
            outs.append(y)
            assert cache[0].key.shape[2] <= left * chunk
        torch.testing.assert_close(torch.cat(outs, 1), whole, atol=1e-5, rtol=0)
        # padded batch: a shorter sequence gives its own whole-sequence output
        short = max(n - chunk - 1, 1)
        padded = stack(x, torch.tensor([n, short]))
        torch.testing.assert_close(padded[1, :short], stack(x[1:, :short])[0], atol=1e-5, rtol=0)
        assert torch.isfinite(padded).all()


def test_conformer_chunk_size_checked() -> None:
    stack = ConformerStack(16, 2, 1, 2, 3, 4, 1, 0.0)
    with pytest.raises(ParamError, match="5 frames"):
        stack.forward_chunk(torch.zeros(1, 5, 16), stack.init_cache())
    with pytest.raises(ParamError, match="n_heads=3"):
        ConformerStack(16, 3, 1, 2, 3, 4, 1, 0.0)


# ------------------------------------------------------------------------------------------------ (b)
def test_stream_equals_one_shot(rec: ChunkedAvRecognizer) -> None:
    audio, vs, mouths, has = synthetic_av(1, RATE * 3)
    start, end = 1000, 1000 + 2 * RATE + 777           # not on a chunk boundary: a partial last chunk
    stream = rec.new_stream()
    revs, _ = stream_decode(stream, audio, vs, mouths, has, start, end, np.random.default_rng(7))
    final = revs[-1]
    assert final.final and not stream.utterance_open and stream.result() is final
    ref = rec.decode_utterance(audio[start:end], mouths, has, vs, start)
    got = stream.log_probs()
    assert got.shape == ref.shape == (kaldi_n_frames(end - start) // 4, rec.model.vocab_size)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    assert final.committed == greedy_text(ref) and final.unstable == ""
    assert final.start_sample == start and final.end_sample == end
    assert " ".join(w.text for w in final.words) == final.committed
    for w in final.words:
        assert start <= w.start_sample <= w.end_sample <= end and 0.0 < w.confidence <= 1.0
    check_committed(revs)
    assert any(r.committed for r in revs[:-1]), "the random model should commit some words before the end"


def check_committed(revs: list) -> None:
    """Committed text only grows, word by word, and the final starts with every committed text."""
    committed = ""
    for r in revs:
        assert r.committed.startswith(committed)
        assert r.committed == committed or not committed or r.committed[len(committed)] == " "
        committed = r.committed
        assert revs[-1].committed.startswith(r.committed)


@pytest.mark.parametrize("delay", [4000, 8000])
def test_endpoint_after_decoding_past_it_rolls_back(rec: ChunkedAvRecognizer, delay: int) -> None:
    """The VAD's SPEECH_END comes after audio past it was decoded: the final still covers exactly the utterance."""
    audio, vs, mouths, has = synthetic_av(11, RATE * 3)
    start, end = 500, 500 + 30000
    stream = rec.new_stream()
    revs, before = stream_decode(stream, audio, vs, mouths, has, start, end, np.random.default_rng(3),
                                 endpoint_delay=delay)
    assert before > kaldi_n_frames(end - start) // 4 + 2                # chunks past the endpoint were decoded
    ref = rec.decode_utterance(audio[start:end], mouths, has, vs, start)
    np.testing.assert_allclose(stream.log_probs(), ref, atol=1e-4, rtol=0)
    assert revs[-1].final and revs[-1].committed == greedy_text(ref)
    check_committed(revs)


def test_endpoint_later_than_the_slack_keeps_what_it_cannot_rerun() -> None:
    rec = ChunkedAvRecognizer(tiny_model(), endpoint_slack_s=0.2)
    audio, vs, mouths, has = synthetic_av(12, RATE * 4)
    start, end = 0, 24000
    stream = rec.new_stream()
    revs, before = stream_decode(stream, audio, vs, mouths, has, start, end, np.random.default_rng(4),
                                 endpoint_delay=RATE)
    n_end = kaldi_n_frames(end - start) // 4
    kept = stream.log_probs().shape[0]
    assert n_end < kept < before                      # frames more than the slack past the endpoint stay
    assert all(start <= w.start_sample <= w.end_sample <= end for w in revs[-1].words)
    check_committed(revs)


def test_stream_starting_in_the_past_and_without_video(rec: ChunkedAvRecognizer) -> None:
    audio, _, _, _ = synthetic_av(2, RATE * 2)
    stream = rec.new_stream()
    stream.accept_audio(audio[:14000], 0)                 # the VAD's begin comes after its audio
    stream.begin(3000)
    assert stream.step() is not None                      # no video: frames settle video_lag behind the audio
    assert stream.log_probs().shape[0] == 4
    stream.endpoint(20000)
    stream.accept_audio(audio[14000:20000], 14000)       # the final needs no audio past the endpoint
    r = stream.step()
    assert r is not None and r.final and not stream.utterance_open
    empty = np.zeros(0, np.int64)
    ref = rec.decode_utterance(audio[3000:20000], np.zeros((0, 96, 96), np.uint8), empty.astype(bool), empty, 3000)
    np.testing.assert_allclose(stream.log_probs(), ref, atol=1e-4, rtol=0)


def test_stream_waits_for_video_then_gives_up(rec: ChunkedAvRecognizer) -> None:
    audio, vs, mouths, _ = synthetic_av(3, RATE * 2)
    stream = rec.new_stream()
    stream.begin(0)
    stream.accept_audio(audio[:4000], 0)
    stream.step()
    assert stream.log_probs().shape[0] == 0              # 6 frames of audio, no video yet: nothing settled
    stream.accept_video(mouths[0], int(vs[0]))
    stream.accept_video(mouths[1], int(vs[1]))
    stream.accept_video(mouths[2], int(vs[2]))
    stream.step()
    assert stream.log_probs().shape[0] == 0              # frames 0..2 settled, not a whole chunk of 4
    stream.accept_audio(audio[4000:4000 + rec.video_lag], 4000)
    stream.step()
    assert stream.log_probs().shape[0] >= 4              # the audio ran video_lag past them


def test_utterance_length_cap() -> None:
    r = ChunkedAvRecognizer(tiny_model(), max_utterance_s=1.0)
    assert r.max_frames == 24                             # 25 frames rounded down to whole chunks of 4
    audio, _, _, _ = synthetic_av(4, RATE * 3)
    stream = r.new_stream()
    stream.begin(0)
    finals = []
    for pos in range(0, len(audio), 320):
        stream.accept_audio(audio[pos:pos + 320], pos)
        rev = stream.step()
        if rev is not None and rev.final:
            finals.append(rev)
    cap = 24 * 640
    assert [f.end_sample for f in finals[:2]] == [cap, 2 * cap] and stream.utterance_open


def drain(stream: ChunkedAvStream) -> list:
    out = []
    while (rev := stream.step()) is not None:
        out.append(rev)
    return out


def test_a_capped_utterance_survives_more_audio_than_the_ring_before_a_step() -> None:
    """Past the length cap the open utterance takes no more audio, so the ring may pass it: more than
    ``history_s`` of audio accepted before the next step neither raises nor loses the next utterance's audio
    (the capped utterance is decoded then, its final waits for the next step)."""
    kw = {"max_utterance_s": 1, "history_s": 1, "video_lag_s": 0}
    audio = synthetic_av(6, RATE * 4)[0]
    ref = ChunkedAvRecognizer(tiny_model(), **kw).new_stream()
    ref.begin(0)
    want = []
    for pos in range(0, len(audio), 320):
        ref.accept_audio(audio[pos:pos + 320], pos)
        want += drain(ref)
    ref.endpoint(len(audio))
    want += drain(ref)
    stream = ChunkedAvRecognizer(tiny_model(), **kw).new_stream()
    stream.begin(0)
    stream.accept_audio(audio, 0)                       # 4 s at once: the ring holds 1 s, the cap is 0.96 s
    got = drain(stream)
    stream.endpoint(len(audio))
    got += drain(stream)
    cap = 24 * 640

    def finals(revs: list) -> list:
        return [(r.committed, r.start_sample, r.end_sample, r.words) for r in revs if r.final]
    assert [f[1:3] for f in finals(want)] == [(0, cap), (cap, 2 * cap), (2 * cap, 3 * cap), (3 * cap, 4 * cap),
                                              (4 * cap, len(audio))]
    assert finals(got) == finals(want) and all(f[0] for f in finals(got))
    assert not stream.utterance_open
    stream.accept_audio(audio[:RATE * 3], len(audio))   # the stream goes on
    stream.begin(len(audio))
    stream.accept_audio(audio[:RATE], len(audio) + RATE * 3)
    stream.endpoint(len(audio) + RATE * 4)
    assert any(r.final for r in drain(stream))
    late = ChunkedAvRecognizer(tiny_model(), **kw).new_stream()
    late.begin(0)                                       # before any audio; the first comes 2 s (2 rings) on
    late.accept_audio(audio[:RATE], 2 * RATE)
    late.endpoint(3 * RATE)
    assert [(r.start_sample, r.end_sample) for r in drain(late) if r.final] == [(2 * RATE, 3 * RATE)]


def test_threads_zero_leaves_torch_alone() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ChunkedAvRecognizer(tiny_model(), threads=0)
        assert torch.get_num_threads() == 2
        ChunkedAvRecognizer(tiny_model(), threads=1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ParamError, match="threads=-1"):
            ChunkedAvRecognizer(tiny_model(), threads=-1)
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------ (c)
def test_frames_depend_only_on_their_chunk_and_left_context() -> None:
    model = tiny_model(3)
    c = CFG
    n = 64
    rng = np.random.default_rng(0)
    audio = torch.from_numpy(rng.normal(6.0, 3.0, (1, n, 4 * c.n_mels)).astype(np.float32))
    mouths = torch.from_numpy(rng.integers(0, 256, (1, n, 96, 96), dtype=np.uint8))
    present = torch.ones(1, n)

    def run(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(a, m, present)

    base = run(audio, mouths)
    chunk = 12                                           # chunk index under test: frames 48..51
    lo, hi = chunk * c.chunk_frames, (chunk + 1) * c.chunk_frames
    later = audio.clone()
    later[:, hi:] += 5.0
    m2 = mouths.clone()
    m2[:, hi:] = 255 - m2[:, hi:]
    torch.testing.assert_close(run(later, m2)[:, :hi], base[:, :hi], atol=1e-6, rtol=0)
    first = earliest_dependency(lo, c.chunk_frames, c.left_chunks, c.conv_kernel, c.n_layers)
    assert 0 < first < lo - c.left_chunks * c.chunk_frames
    earlier = audio.clone()
    earlier[:, :first] += 5.0
    m3 = mouths.clone()
    m3[:, :first] = 255 - m3[:, :first]
    torch.testing.assert_close(run(earlier, m3)[:, lo:hi], base[:, lo:hi], atol=1e-6, rtol=0)
    at = audio.clone()
    at[:, first] += 5.0                                  # the bound is tight: the first frame inside it counts
    assert (run(at, mouths)[:, lo:hi] - base[:, lo:hi]).abs().max() > 1e-4

    # one layer without temporal convolution: exactly its chunk and left_chunks chunks before
    torch.manual_seed(1)
    layer = ConformerLayer(16, 2, 2, 1, 4, 2, 0.0).eval()
    x = torch.randn(1, 32, 16)
    allowed = chunk_mask(32, 4, 2)[None, None]
    with torch.no_grad():
        y = layer(x, allowed)
        x2 = x.clone()
        x2[:, :12] += torch.randn(12, 16)          # chunks 0..2; chunk 5 sees chunks 3..5
        x2[:, 24:] += torch.randn(8, 16)           # chunks 6..7
        torch.testing.assert_close(layer(x2, allowed)[:, 20:24], y[:, 20:24], atol=1e-6, rtol=0)
        x3 = x.clone()
        x3[:, 12] += torch.randn(16)
        assert (layer(x3, allowed)[:, 20:24] - y[:, 20:24]).abs().max() > 1e-4


# ------------------------------------------------------------------------------------------------ (d)
def test_checkpoint_roundtrip_and_errors(tmp_path: Path) -> None:
    model = tiny_model(5)
    ck = save_checkpoint(model, tmp_path / "ck", {"steps": 3})
    meta = json.loads((ck / "avsr.json").read_text())
    assert meta["format"] == "kikimimi-avsr" and meta["version"] == 1 and meta["training"] == {"steps": 3}
    loaded, info = load_checkpoint(ck)
    assert info == {"steps": 3} and loaded.config == model.config
    audio, vs, mouths, has = synthetic_av(5, RATE)
    r1 = ChunkedAvRecognizer(model).decode_utterance(audio, mouths, has, vs)
    r2 = load_chunked(ck).decode_utterance(audio, mouths, has, vs)
    np.testing.assert_array_equal(r1, r2)

    def broken(name: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        for f in ("avsr.json", "model.safetensors"):
            (d / f).write_bytes((ck / f).read_bytes())
        return d

    with pytest.raises(CheckpointError, match="not a directory"):
        load_checkpoint(tmp_path / "nowhere")
    d = broken("garbage")
    (d / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(d)
    d = broken("format")
    (d / "avsr.json").write_text(json.dumps({**meta, "format": "other"}))
    with pytest.raises(CheckpointError, match="format 'other'"):
        load_checkpoint(d)
    d = broken("version")
    (d / "avsr.json").write_text(json.dumps({**meta, "version": 2}))
    with pytest.raises(CheckpointError, match="version 2"):
        load_checkpoint(d)
    d = broken("shape")
    (d / "avsr.json").write_text(json.dumps({**meta, "config": {**meta["config"], "ff_mult": 3}}))
    with pytest.raises(CheckpointError, match=r"tensor 'encoder\.layers\.0\.ff1\.up\.weight' has shape"):
        load_checkpoint(d)
    d = broken("layers")
    (d / "avsr.json").write_text(json.dumps({**meta, "config": {**meta["config"], "n_layers": 3}}))
    with pytest.raises(CheckpointError, match=r"missing tensors \['encoder\.layers\.2\."):
        load_checkpoint(d)
    d = broken("config")
    (d / "avsr.json").write_text(json.dumps({**meta, "config": {**meta["config"], "colour": "red"}}))
    with pytest.raises(CheckpointError, match="unknown \\['colour'\\]"):
        load_checkpoint(d)
    d = broken("json")
    (d / "avsr.json").write_text("{")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        load_checkpoint(d)


# ------------------------------------------------------------------------------------------------ (e)
def test_vocabulary_and_ctc_collapse() -> None:
    assert normalize_text("  Hello,  WORLD!\tIt's  5 o'clock-ish ") == "hello world it's o'clockish"
    ids = encode_text("Bin blue")
    assert ids[0] == CFG.vocab.index("b") + 1 and 0 not in ids
    assert decode_ids(ids) == "bin blue"
    assert decode_ids([0, 1, 1, 0, 3]) == "a"
    assert ctc_collapse(np.array([0, 3, 3, 0, 3, 4, 4, 0, 0, 5])) == [(3, 1, 2), (3, 4, 4), (4, 5, 6), (5, 9, 9)]
    path = [0, 4, 4, 0, 11, 0, 16, 16, 1, 1, 0, 3, 0, 3]           # "bin a" with a doubled letter on purpose
    lp = np.log(np.full((len(path), 29), 0.01))
    lp[np.arange(len(path)), path] = 0.0
    assert greedy_text(lp) == "bin aa"
    assert ctc_words(np.array(path)) == [CtcWord("bin", 1, 7, 8), CtcWord("aa", 11, 13, None)]
    with pytest.raises(ParamError, match="token id 29"):
        decode_ids([29])
    for bad in ({"d_model": 30}, {"dropout": 1.5}, {"vocab": "abc"}, {"left_chunks": -1}, {"n_layers": 2.0}):
        with pytest.raises(ParamError, match=next(iter(bad))):
            AvConfig(**bad)


def test_pairing_and_model_inputs() -> None:
    vs = np.array([0, 640, 1280, 5000])
    assert nearest_video(vs, np.array([0, 320, 330, 1920, 2560, 4400])).tolist() == [0, 0, 1, 2, -1, 3]
    fbank = np.arange(14 * 80, dtype=np.float32).reshape(14, 80)
    mouths = np.stack([np.full((96, 96), i + 1, np.uint8) for i in range(4)])
    a, m, p = model_inputs(fbank, mouths, np.array([True, False, True, True]), vs)
    assert a.shape == (3, 320) and np.array_equal(a[1], fbank[4:8].reshape(-1))
    assert p.tolist() == [1.0, 0.0, 1.0] and m[0, 0, 0] == 1 and m[1].max() == 0 and m[2, 0, 0] == 3


# ------------------------------------------------------------------------------------------------ (f)
def test_bad_input_raises(rec: ChunkedAvRecognizer) -> None:
    s = rec.new_stream()
    s.accept_audio(np.zeros(640, np.float32), 1000)
    with pytest.raises(ParamError, match=r"sample_index 1200 goes backwards; allowed: >= 1640"):
        s.accept_audio(np.zeros(10, np.float32), 1200)
    with pytest.raises(ParamError, match="int16"):
        s.accept_audio(np.zeros(10, np.int16), 1640)
    with pytest.raises(ParamError, match=r"\(64, 64\)"):
        s.accept_video(np.zeros((64, 64), np.uint8), 1000)
    with pytest.raises(ParamError, match="float32"):
        s.accept_video(np.zeros((96, 96), np.float32), 1000)
    s.accept_video(None, 1000)
    with pytest.raises(ParamError, match="video sample_index 1000 is not after"):
        s.accept_video(None, 1000)
    s.begin(1000)
    with pytest.raises(ParamError, match="end_sample 500 is before"):
        s.endpoint(500)
    with pytest.raises(ParamError, match="start_sample=-5"):
        s.begin(-5)
    with pytest.raises(ParamError, match="device='tpu'"):
        ChunkedAvRecognizer(tiny_model(), device="tpu")
    with pytest.raises(ParamError, match="video_lag_s=-1"):
        ChunkedAvRecognizer(tiny_model(), video_lag_s=-1)
    with pytest.raises(ParamError, match="endpoint_slack_s='1'"):
        ChunkedAvRecognizer(tiny_model(), endpoint_slack_s="1")  # type: ignore[arg-type]


def test_data_folder_skips_and_refuses(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"")                  # no transcript
    (tmp_path / "b.mpg").write_bytes(b"not a video")
    (tmp_path / "b.txt").write_text("bin blue")
    (tmp_path / "c.avi").write_bytes(b"x")
    (tmp_path / "c.txt").write_text("123 !!")             # nothing of the vocabulary
    pairs, skipped = find_pairs(tmp_path)
    assert [p.name for p, _ in pairs] == ["b.mpg", "c.avi"]
    assert [(s.path.name, s.reason) for s in skipped] == [("a.mp4", "no transcript a.txt next to it")]
    with pytest.raises(AvDataError, match=r"(?s)no usable.*a\.mp4: no transcript.*b\.mpg: could not be read.*"
                                          r"c\.avi: transcript c\.txt has no characters"):
        AvDataset(tmp_path, tmp_path / "cache")
    with pytest.raises(AvDataError, match="does not exist"):
        find_pairs(tmp_path / "missing")


def test_training_loop_and_feature_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kikimimi.models.avsr.data as data_mod
    from kikimimi.models.avsr.train import train

    calls: list[str] = []

    def fake_extract(video: Path, n_mels: int = 80) -> dict[str, np.ndarray]:
        calls.append(video.name)
        audio, vs, mouths, has = synthetic_av(len(calls), RATE)
        return {"fbank": kaldi_fbank(audio * 32768.0, n_mels), "mouths": mouths, "has_face": has,
                "frame_samples": vs}

    monkeypatch.setattr(data_mod, "extract_features", fake_extract)
    folder = tmp_path / "clips"
    folder.mkdir()
    for name, text in (("one", "Bin blue"), ("two", "lay red")):
        (folder / f"{name}.mp4").write_bytes(name.encode())
        (folder / f"{name}.txt").write_text(text)
    config = AvConfig(d_model=16, n_heads=2, n_layers=1, ff_mult=2, conv_kernel=3, chunk_frames=4, left_chunks=1,
                      video_channels=2, dropout=0.1, modality_dropout=0.5)
    r = train(folder, tmp_path / "ck", config, epochs=3, lr=1e-3, batch_size=2, seed=1, log_every=1,
              cache_dir=tmp_path / "cache")
    assert (r.steps, r.epochs, r.n_clips, len(r.losses)) == (3, 3, 2, 3) and np.isfinite(r.losses).all()
    assert calls == ["one.mp4", "two.mp4"] and len(list((tmp_path / "cache").glob("*.npz"))) == 2
    model, info = load_checkpoint(tmp_path / "ck")
    assert info["steps"] == 3 and model.config == config and (tmp_path / "ck" / "best" / "model.safetensors").is_file()
    again = AvDataset(folder, tmp_path / "cache")                # from the cache: no extraction
    assert calls == ["one.mp4", "two.mp4"] and [c.text for c in again.items] == ["bin blue", "lay red"]
    r2 = train(folder, tmp_path / "ck2", config, epochs=3, lr=1e-3, batch_size=2, seed=1, cache_dir=tmp_path / "cache")
    assert r2.losses == r.losses                                 # seeded: the same run again


@pytest.mark.gpu
def test_stream_on_cuda_equals_whole_and_the_cpu() -> None:
    """On a GPU the streamed decode still equals the one-shot decode, and both stay close to the CPU's."""
    audio, vs, mouths, has = synthetic_av(3, RATE * 3)
    start, end = 500, 500 + 2 * RATE + 333
    cpu = ChunkedAvRecognizer(tiny_model(), threads=1)
    gpu = ChunkedAvRecognizer(tiny_model(), device="cuda", threads=1)
    stream = gpu.new_stream()
    revs, _ = stream_decode(stream, audio, vs, mouths, has, start, end, np.random.default_rng(3))
    assert revs and revs[-1].final
    got = stream.log_probs()
    whole = gpu.decode_utterance(audio[start:end], mouths, has, vs, start)
    np.testing.assert_allclose(got, whole, atol=1e-3, rtol=0)
    np.testing.assert_allclose(whole, cpu.decode_utterance(audio[start:end], mouths, has, vs, start), atol=1e-2,
                               rtol=0)
