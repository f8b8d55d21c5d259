"""The streaming speaker contract (models/speaker/streaming): SpeakerConfig checks, the shared encoder,
and on real LibriSpeech audio: the contract gives the node's turns and embeddings, streamed equals
whole, and one batched step across streams equals each stream on its own."""

from __future__ import annotations

import csv
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import Header
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.speaker import SpeakerEmbedding, SpeakerTurn
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.engine.testing import run_node
from kikimimi.models.speaker.config import SpeakerConfig
from kikimimi.models.speaker.encoder import SpeakerEncoder, shared_encoder
from kikimimi.models.speaker.results import SpeakerResult, Turn, UtteranceEmbedding, WindowEmbedding
from kikimimi.models.speaker.streaming import SpeakerModel, SpeakerStream
from kikimimi.models.weights import loads

pytest.importorskip("torch")
RATE = 16000
CHUNK = 320


class CountingEncoder(SpeakerEncoder):
    """The real encoder, counting its ``embed`` calls and the windows in them."""

    def __init__(self, inner: SpeakerEncoder) -> None:
        self.inner = inner
        self.id, self.dim, self.input_kind = inner.id, inner.dim, inner.input_kind
        self.sample_rate, self.window_s, self.min_window_s = inner.sample_rate, inner.window_s, inner.min_window_s
        self.default_threshold = inner.default_threshold
        self.calls: list[int] = []

    def embed(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        return self.inner.embed(batch)


@pytest.fixture(scope="module")
def encoder() -> SpeakerEncoder:
    return shared_encoder("ge2e", "auto", 2)


@pytest.fixture(scope="module")
def audio(data_dir: Path) -> np.ndarray:
    """Three LibriSpeech clips (speakers a, b, a) with 2 s gaps, as 16-bit PCM read back to float."""
    with (data_dir / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if "librispeech" in r["path"]]
    by: dict[str, list[Path]] = {}
    for r in sorted(rows, key=lambda r: r["path"]):
        by.setdefault(r["speaker_id"].split()[0], []).append(data_dir / r["path"])
    a, b = sorted(by)[:2]
    gap = np.zeros(2 * RATE, np.float32)
    clips = [sf.read(str(p), dtype="float32")[0] for p in (by[a][0], by[b][0], by[a][1])]
    x = np.concatenate([y for c in clips for y in (c, gap)])
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16).astype(np.float32) / 32768.0


def chunks(x: np.ndarray, sid: str = "s") -> list[tuple[str, AudioChunk]]:
    pcm = np.round(x * 32768.0).astype(np.int16).reshape(-1, 1)
    return [("audio", AudioChunk(Header(sid, i, a, 0, "src"), pcm[a:a + CHUNK], RATE))
            for i, a in enumerate(range(0, len(pcm), CHUNK))]


@pytest.fixture(scope="module")
def events(audio: np.ndarray) -> list[VadEvent]:
    from kikimimi.nodes.vad import TwoStageVad

    return [m for _, m in run_node(TwoStageVad("vad"), chunks(audio)) if isinstance(m, VadEvent)]


def position(ev: VadEvent) -> int:
    return ev.start_sample if ev.kind is SpeechEventKind.SPEECH_START else ev.end_sample


def apply(st: SpeakerStream, ev: VadEvent) -> list[SpeakerResult]:
    return st.begin(ev.start_sample) if ev.kind is SpeechEventKind.SPEECH_START else st.end(ev.end_sample)


def streamed(model: SpeakerModel, x: np.ndarray, events: list[VadEvent]) -> list[SpeakerResult]:
    """The contract fed chunk by chunk: windows up to the audio's end (not past the next utterance end),
    each event applied once the audio reaches it; the open utterance ends with the audio."""
    st = model.new_stream()
    pending = deque(e for e in events if e.kind is not SpeechEventKind.PROGRESS)
    out: list[SpeakerResult] = []
    for a in range(0, len(x), CHUNK):
        st.accept(x[a:a + CHUNK], a)
        while True:
            nxt = pending[0] if pending else None
            end = nxt.end_sample if nxt is not None and nxt.kind is SpeechEventKind.SPEECH_END else st.audio_end
            out += st.step(min(st.audio_end, end))
            if nxt is None or position(nxt) > st.audio_end:
                break
            out += apply(st, pending.popleft())
    return out + st.end(st.audio_end)


def whole(model: SpeakerModel, x: np.ndarray, events: list[VadEvent]) -> list[SpeakerResult]:
    """The contract given all the audio at once, then the events, windows up to each event first."""
    st = model.new_stream()
    st.accept(x, 0)
    out: list[SpeakerResult] = []
    for ev in (e for e in events if e.kind is not SpeechEventKind.PROGRESS):
        out += st.step(position(ev))
        out += apply(st, ev)
    return out + st.step() + st.end(st.audio_end)


def config(**kw: object) -> SpeakerConfig:
    return SpeakerConfig(threads=2, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- config and shared weights
@pytest.mark.parametrize("bad", [{"hop_ms": 0}, {"threshold": 1.5}, {"cluster_threshold": -2.0}, {"device": "tpu"},
                                 {"split": "yes"}, {"min_windows": 0}, {"ring_s": 0}, {"threads": -1},
                                 {"max_windows": 0}, {"encoder": ""}])
def test_config_names_the_bad_value_and_what_is_allowed(bad: dict[str, object]) -> None:
    (name, value), = bad.items()
    with pytest.raises(ParamError, match=rf"{name}={value!r}.*allowed"):
        SpeakerConfig(**bad)  # type: ignore[arg-type]


def test_the_encoder_is_loaded_once_per_process(encoder: SpeakerEncoder) -> None:
    from kikimimi.nodes.speaker import SpeakerNode

    nodes = [SpeakerNode(f"spk{i}", {"db": "none", "threads": 2, "device": "auto"}) for i in range(2)]
    assert nodes[0].encoder is nodes[1].encoder is encoder
    assert SpeakerModel(config(device="auto")).encoder is encoder
    assert [n for k, n in loads().items() if isinstance(k, tuple) and k[0] == "speaker-encoder"
            and k[2:] == ("auto", 2)] == [1]


def test_bad_input_is_rejected(encoder: SpeakerEncoder) -> None:
    model = SpeakerModel(config(), encoder=encoder)
    st = model.new_stream()
    with pytest.raises(ParamError, match=r"shape \(10, 2\).*allowed: mono"):
        st.accept(np.zeros((10, 2), np.float32), 0)
    with pytest.raises(ParamError, match="another SpeakerModel"):
        model.step([SpeakerModel(config(), encoder=encoder).new_stream()])
    with pytest.raises(ParamError, match="distinct streams"):
        model.step([st, st])


# ---------------------------------------------------------------------- real audio
@pytest.mark.slow
def test_the_contract_gives_the_nodes_turns_and_embeddings(encoder: SpeakerEncoder, audio: np.ndarray,
                                                          events: list[VadEvent]) -> None:
    from kikimimi.nodes.speaker import SpeakerNode

    node = SpeakerNode("spk", {"db": "none", "threads": 2, "vad_lookahead_ms": 10 ** 6})
    msgs = [m for _, m in run_node(node, [("vad", e) for e in events] + chunks(audio))]
    got = streamed(SpeakerModel(config(), encoder=encoder), audio, events)
    assert len(msgs) == len(got)
    for m, r in zip(msgs, got, strict=True):
        if isinstance(r, Turn):
            assert isinstance(m, SpeakerTurn) and m.header.sample_index == r.at
            assert (m.utterance_id, m.part, m.speaker, m.score, m.enrolled, m.final, m.start_sample,
                    m.end_sample) == (r.utterance, r.part, r.speaker, r.score, r.enrolled, r.final, r.start, r.end)
        else:
            assert isinstance(m, SpeakerEmbedding) and m.header.sample_index == r.end
            assert m.kind == ("window" if isinstance(r, WindowEmbedding) else "utterance")
            assert (m.utterance_id, m.start_sample, m.end_sample) == (r.utterance, r.start, r.end)
            assert np.array_equal(m.vector, r.vector)
    finals = [r for r in got if isinstance(r, Turn) and r.final]
    n = sum(e.kind is SpeechEventKind.SPEECH_START for e in events)
    assert n >= 3 and {r.utterance for r in finals} == set(range(n))
    assert {r.speaker for r in finals} >= {"voice_1", "voice_2"}
    assert 3 <= sum(isinstance(r, UtteranceEmbedding) for r in got) <= n


@pytest.mark.slow
def test_streamed_equals_whole(encoder: SpeakerEncoder, audio: np.ndarray, events: list[VadEvent]) -> None:
    a = streamed(SpeakerModel(config(), encoder=encoder), audio, events)
    b = whole(SpeakerModel(config(), encoder=encoder), audio, events)
    assert [type(r) for r in a] == [type(r) for r in b]
    for x, y in zip(a, b, strict=True):
        if isinstance(x, Turn) and isinstance(y, Turn):
            assert (x.utterance, x.part, x.speaker, x.final, x.start, x.end) == \
                   (y.utterance, y.part, y.speaker, y.final, y.start, y.end)
            assert x.score == pytest.approx(y.score, abs=1e-5)
        elif not isinstance(x, Turn) and not isinstance(y, Turn):
            assert (x.utterance, x.start, x.end) == (y.utterance, y.start, y.end)
            assert np.allclose(x.vector, y.vector, atol=1e-5)


@pytest.mark.slow
def test_one_batched_step_across_streams_equals_each_stream_alone(encoder: SpeakerEncoder, audio: np.ndarray,
                                                                   events: list[VadEvent]) -> None:
    spans = sorted(((e.start_sample, e.end_sample) for e in events if e.kind is SpeechEventKind.SPEECH_END),
                   key=lambda s: s[0] - s[1])[:2]          # the two longest utterances
    starts, ends = [a for a, _ in spans], [b for _, b in spans]
    counting = CountingEncoder(encoder)
    batched = SpeakerModel(config(split=False), encoder=counting)
    alone = SpeakerModel(config(split=False), encoder=encoder)
    pairs = []
    for m in (batched, alone):
        streams = [m.new_stream() for _ in starts]
        for st, a, b in zip(streams, starts, ends, strict=True):
            st.accept(audio[a:b], a)
            st.begin(a)
        pairs.append(streams)
    res = batched.step(pairs[0])
    assert counting.calls == [sum(isinstance(r, WindowEmbedding) for rs in res for r in rs)]
    assert len(counting.calls) == 1 and counting.calls[0] >= 4
    for rs, st in zip(res, pairs[1], strict=True):
        want = st.step()
        assert [(type(r), getattr(r, "speaker", None), r.start, r.end) for r in rs] == \
               [(type(r), getattr(r, "speaker", None), r.start, r.end) for r in want]
        for r, w in zip(rs, want, strict=True):
            if isinstance(r, WindowEmbedding) and isinstance(w, WindowEmbedding):
                assert np.allclose(r.vector, w.vector, atol=1e-5)
    assert batched.windows_embedded == alone.windows_embedded == counting.calls[0]


@pytest.mark.slow
def test_windows_whose_audio_left_the_ring_are_counted_not_embedded(encoder: SpeakerEncoder,
                                                                      audio: np.ndarray) -> None:
    model = SpeakerModel(config(ring_s=1), encoder=encoder)      # 1 s of ring: a 1.6 s window never fits
    st = model.new_stream()
    st.begin(0)
    st.accept(audio[:4 * RATE], 0)
    out = st.step() + st.end(st.audio_end)
    assert model.windows_lost > 0 and model.windows_embedded == 0
    assert [type(r) for r in out] == [Turn] and out[0].speaker == "unknown" and out[0].final
