"""The asr node: parameters, the protocol of its Transcript revisions, and nothing for non-speech."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from asr_pipeline import DETERMINISTIC, finals, front_messages, load_audio, run_asr

from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import Control, ControlKind, Header
from kikimimi.engine.msgs.audio import Features
from kikimimi.engine.msgs.speech import SpeechEventKind, Transcript, VadEvent
from kikimimi.engine.registry import load_kind
from kikimimi.engine.testing import run_node
from kikimimi.models.asr.backends import backend_names
from kikimimi.models.asr.resolve import ModelNotFound
from kikimimi.nodes.asr import AsrNode

RATE = 16000


def check_revisions(transcripts: list[Transcript]) -> None:
    """Per utterance: revisions 0, 1, 2, ...; committed only grows from partial to partial (the final,
    decoded again as a whole, may correct it); exactly the last one is final, and its words spell its text."""
    by_utt: dict[tuple[str, int], list[Transcript]] = {}
    for t in transcripts:
        by_utt.setdefault((t.header.stream_id, t.utterance_id), []).append(t)
    for key, revs in by_utt.items():
        assert [r.revision for r in revs] == list(range(len(revs))), key
        for a, b in itertools.pairwise(revs):
            assert b.final or b.committed.startswith(a.committed), (key, a.committed, b.committed)
            assert not a.final, key
        assert revs[-1].final, key
        assert revs[-1].unstable == ""
        if revs[-1].words:   # a final's words are its text, nothing more or less
            assert "".join(w.text for w in revs[-1].words).replace(" ", "") == revs[-1].committed.replace(" ", ""), key
        for r in revs:
            assert r.committed or r.unstable or r.final


def test_asr_kind_is_registered() -> None:
    assert load_kind("asr") is AsrNode
    assert {"whisper", "sphinx"} <= set(backend_names())


def test_parameters_are_checked() -> None:
    with pytest.raises(ParamError, match=r"backend='nope' is not allowed; allowed: .*whisper"):
        AsrNode("asr", {"backend": "nope"})
    with pytest.raises(ParamError, match="min_interval_ms"):
        AsrNode("asr", {"model": "tiny.en", "min_interval_ms": 900, "max_interval_ms": 500})
    with pytest.raises(ParamError, match="language='xx' is not allowed"):
        AsrNode("asr", {"model": "tiny.en", "language": "xx"})
    with pytest.raises(ParamError, match="language='ja' is not allowed"):
        AsrNode("asr", {"model": "tiny.en", "language": "ja"})      # English-only model
    with pytest.raises(ModelNotFound, match="tried"):
        AsrNode("asr", {"model": "./no/such/model"})


def test_features_of_the_wrong_kind_are_rejected_not_decoded() -> None:
    node = AsrNode("asr", {**DETERMINISTIC, "model": "tiny.en", "warmup": False})
    fb = Features(Header("s", 0, 0, 0, "f"), np.zeros((50, 40), np.float32), "kaldi_fbank", 0, 160, RATE)
    out = run_node(node, [("features", fb)])
    assert out == []
    assert node.stats.snapshot()["rejected_by_kind"] == {"features": 1}


@pytest.fixture(scope="module")
def silence_and_noise() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    n = 10 * RATE
    white = rng.normal(0, 0.05, n).astype(np.float32)
    brown = np.cumsum(rng.normal(0, 0.02, n)).astype(np.float32)
    brown = (brown - np.convolve(brown, np.ones(801) / 801, mode="same")).astype(np.float32)
    hum = (0.1 * np.sin(2 * np.pi * 120 * np.arange(n) / RATE)).astype(np.float32) + white * 0.2
    return {"silence": np.zeros(n, np.float32), "white": white, "brown": brown * 0.5, "hum": hum}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["silence", "white", "brown", "hum"])
def test_nothing_is_published_for_10_s_of_non_speech(silence_and_noise: dict[str, np.ndarray], kind: str) -> None:
    audio = silence_and_noise[kind]
    msgs = front_messages(audio)
    assert run_asr(msgs, model="base") == []
    # even when the VAD is fooled into calling all of it speech, the recognizer's guards publish nothing
    feats = [m for m in msgs if m[0] == "features"]
    start = VadEvent(Header("s", 0, 0, 0, "vad"), SpeechEventKind.SPEECH_START, 0, -1, RATE, 0.9)
    end = VadEvent(Header("s", 1, len(audio), 0, "vad"), SpeechEventKind.SPEECH_END, 0, len(audio), RATE, 0.9)
    forced = [("vad", start), *feats, ("vad", end)]
    assert run_asr(forced, model="base") == []


@pytest.mark.slow
def test_jfk_revisions_follow_the_protocol_and_finals_carry_words(data_dir: Path) -> None:
    audio = load_audio(data_dir / "en" / "jfk" / "jfk.flac")
    out = run_asr(front_messages(audio), model="base")
    check_revisions(out)
    fin = finals(out)
    assert fin and any(not t.final for t in out)          # partials before the final
    for t in fin:
        assert t.language == "en" and t.words
        assert all(t.start_sample <= w.start_sample <= w.end_sample <= t.end_sample for w in t.words)
        starts = [w.start_sample for w in t.words]
        assert starts == sorted(starts)
        assert " ".join(w.text for w in t.words).replace(" ", "") == t.committed.replace(" ", "")


@pytest.mark.slow
def test_vad_events_ahead_of_the_frames_lose_no_utterance(data_dir: Path) -> None:
    """Over files at full speed the VAD runs ahead of the feature node: every VAD event may arrive before
    the frames it refers to. The node must hold them, so the finals equal those of live arrival order."""
    clips = ["en/librispeech/1688/1688-142285-0004.flac", "en/jfk/jfk.flac"]
    gap = np.zeros(RATE, np.float32)
    audio = np.concatenate([p for c in clips for p in (load_audio(data_dir / c), gap)])
    live = front_messages(audio)
    ahead = [m for m in live if m[0] == "vad"] + [m for m in live if m[0] != "vad"]
    n_utt = sum(1 for _, m in live if isinstance(m, VadEvent) and m.kind is SpeechEventKind.SPEECH_START)
    assert n_utt >= 2
    for hold_ms in (0, 500):     # one utterance per VAD segment; then the endpoint hold, which may join them
        params = {"model": "tiny.en", "language": "en", "partials": False, "final_silence_ms": hold_ms}
        want = [(t.utterance_id, t.committed) for t in finals(run_asr(live, **params))]
        node = AsrNode("asr", {**DETERMINISTIC, **params})
        got = [(t.utterance_id, t.committed) for _, t in run_node(node, ahead)
               if isinstance(t, Transcript) and t.final]
        assert len(want) == n_utt if hold_ms == 0 else 2 <= len(want) <= n_utt
        assert got == want
        assert node.forced_events == 0


@pytest.mark.parametrize("vad_connected", [False, True])
def test_a_final_held_at_the_end_of_the_stream_ends_at_its_speech_end(data_dir: Path, vad_connected: bool) -> None:
    """The clip ends under 500 ms after its speech: the SPEECH_END is still held for its silence when the
    stream ends, is applied then, and the final ends at it, not at the end of the file (this once depended on
    whether a decode ran between the two)."""
    audio = load_audio(data_dir / "en" / "librispeech" / "1998" / "1998-15444-0007.flac")
    msgs = front_messages(audio)
    ends = [m.end_sample for _, m in msgs if isinstance(m, VadEvent) and m.kind is SpeechEventKind.SPEECH_END]
    assert ends and len(audio) - ends[-1] < RATE // 2
    eos = [(port, Control(Header("all", 0, -1, 0, "src"), ControlKind.END_OF_STREAM)) for port in ("features", "vad")]
    node = AsrNode("asr", {**DETERMINISTIC, "model": "tiny.en", "language": "en", "partials": False,
                           "final_silence_ms": 500})
    if vad_connected:
        node.connected_inputs = frozenset({"features", "vad"})
    fin = [t for _, t in run_node(node, msgs + eos) if isinstance(t, Transcript) and t.final]
    assert [t.end_sample for t in fin][-1:] == ends[-1:]


@pytest.mark.slow
def test_finals_decoded_ahead_are_the_finals_decoded_after_the_silence(data_dir: Path) -> None:
    """With ``speculative_final`` each final is decoded while its SPEECH_END waits for 500 ms of silence;
    the finals published are those of decoding after the wait, and they come from the early decode (one
    early decode is wasted at most per pause where the speech resumed)."""
    clips = ["en/librispeech/1688/1688-142285-0004.flac", "en/jfk/jfk.flac",
             "en/librispeech/2414/2414-128291-0005.flac"]
    gap = np.zeros(RATE, np.float32)
    msgs = front_messages(np.concatenate([p for c in clips for p in (load_audio(data_dir / c), gap)]))
    out = {}
    for spec in (False, True):
        node = AsrNode("asr", {**DETERMINISTIC, "model": "tiny.en", "language": "en", "speculative_final": spec})
        got = [t for _, t in run_node(node, msgs) if isinstance(t, Transcript)]
        check_revisions(got)
        out[spec] = [(t.utterance_id, t.committed, t.start_sample, t.end_sample, t.words) for t in finals(got)]
        used, discarded = node.speculative_finals
        if spec:
            merged = sum(st.hold.merged for st in node.streams.values())   # speech resumed: decoded for nothing
            assert used >= len(out[spec]) - 1 and discarded <= merged, (used, discarded, merged, len(out[spec]))
        else:
            assert used == discarded == 0
    assert len(out[True]) >= 3 and out[True] == out[False]


@pytest.mark.slow
def test_words_aligned_into_the_padding_do_not_cut_the_buffer_past_the_audio(data_dir: Path) -> None:
    """With 29 s of padding Whisper base aligns words past the end of a partial's audio; the buffer was cut
    there, and the final's window started after its end (RingError, the stream lost). The cut stops at the audio."""
    audio = load_audio(data_dir / "en" / "librispeech" / "1998" / "1998-15444-0000.flac")
    node = AsrNode("asr", {**DETERMINISTIC, "model": "base", "language": "en", "whisper.pad_ms": 29000})
    out = [t for _, t in run_node(node, front_messages(audio)) if isinstance(t, Transcript)]
    fin = finals(out)
    assert len(fin) >= 2 and fin[-1].end_sample > len(audio) - RATE and all(t.committed for t in fin)
