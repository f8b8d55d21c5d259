"""The avsr node over synthetic audio, faces and VAD events, with the tiny external AV model of tests/avsr_tiny.py
(revisions per utterance, the followed face, VAD events ahead of their audio, rejected audio and frames) and with a
tiny random checkpoint of our chunked model (big batches of audio, new sessions, what is dropped or forced)."""

from __future__ import annotations

import itertools
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from avsr_tiny import expected_text, make_tiny_av

from kikimimi.engine.errors import MissingDependency, ParamError
from kikimimi.engine.messages import NO_SAMPLE, Control, ControlKind, Header, Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.fused import LabeledTranscript
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.engine.msgs.vision import ActiveSpeaker, Face, Faces
from kikimimi.engine.registry import load_kind
from kikimimi.engine.testing import run_node
from kikimimi.nodes import avsr as avsr_mod
from kikimimi.nodes.avsr import AvsrNode

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

RATE = 16000
P = 640
CHUNK = 320
SPANS = ((24 * P, 104 * P), (134 * P, 194 * P))      # two utterances: 3.2 s and 2.4 s (8 and 6 blocks)
N_FRAMES = 220
Msgs = list[tuple[str, Message]]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch", reason="external AV models run on PyTorch")
    pytest.importorskip("transformers", reason="transformers is not installed (pip install 'kikimimi[avsr]')")
    torch.set_num_threads(1)
    return make_tiny_av(tmp_path_factory.mktemp("tinyav"))


@pytest.fixture(scope="module")
def chunked_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint of our chunked AV model that writes some text for any audio."""
    torch = pytest.importorskip("torch", reason="the chunked AV model runs on PyTorch")
    pytest.importorskip("safetensors", reason="checkpoints are safetensors files")
    from kikimimi.models.avsr.checkpoint import save_checkpoint
    from kikimimi.models.avsr.model import AvConfig, AvCtcModel

    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = AvCtcModel(AvConfig(n_mels=80, d_model=32, n_heads=2, n_layers=2, ff_mult=2, conv_kernel=5, chunk_frames=4,
                            left_chunks=2, video_channels=4, dropout=0.0, modality_dropout=0.0))
    m.set_normalisation(np.full(80, 8.0, np.float32), np.full(80, 3.0, np.float32))
    with torch.no_grad():
        m.head.weight.normal_(0.0, 1.0)
        m.head.bias[1] += 3.0                          # spaces now and then
    return save_checkpoint(m, tmp_path_factory.mktemp("chunked") / "ck")


def tones(seed: int, n: int) -> np.ndarray:
    """120 ms tones of random pitch and loudness."""
    rng = np.random.default_rng(seed)
    k = -(-n // 1920)
    freq = np.repeat(rng.uniform(100, 3000, k), 1920)[:n]
    amp = np.repeat(rng.uniform(0.0, 0.5, k) ** 2, 1920)[:n]
    return (amp * np.sin(np.cumsum(2 * np.pi * freq / RATE)) + 0.01 * rng.standard_normal(n)).astype(np.float32)


def chunked_node(path: Path, inputs: tuple[str, ...] = ("audio", "faces", "vad"), **params: Any) -> AvsrNode:
    node = AvsrNode("avsr", {"model": str(path), "warmup": False, **params})
    node.connected_inputs = frozenset(inputs)
    return node


def vad(kind: SpeechEventKind, a: int, b: int = -1, sid: str = "s") -> tuple[str, VadEvent]:
    return "vad", VadEvent(Header(sid, 0, a if b < 0 else b, 0, "vad"), kind, a, b, RATE, 0.9)


def eos(port: str, sid: str = "s") -> tuple[str, Control]:
    return port, Control(Header(sid, 0, -1, 0, "src"), ControlKind.END_OF_STREAM)


def scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Audio with 0.4 s blocks of random loudness inside SPANS, and two faces' mouth videos with random
    brightness per block (independent of each other)."""
    rng = np.random.default_rng(seed)
    audio = rng.normal(0, 0.005, N_FRAMES * P).astype(np.float32)
    mouths = rng.integers(20, 60, (2, N_FRAMES, 96, 96)).astype(np.uint8)
    for a, b in SPANS:
        for f0 in range(a // P, b // P, 10):
            if rng.random() < 0.5:
                audio[f0 * P:(f0 + 10) * P] = rng.normal(0, 0.2, 10 * P)
            for face in (0, 1):
                if rng.random() < 0.5:
                    mouths[face, f0:f0 + 10] = rng.integers(180, 230, (10, 96, 96))
    return audio, mouths[0], mouths[1]


def face(face_id: int, size: int, mouth: np.ndarray) -> Face:
    box = np.array([100 * face_id, 50, size, size], np.int32)
    return Face(face_id, box, np.zeros((68, 2), np.float32), np.array([0, 0, 96, 48], np.int32), mouth, 0.2, True)


def live(audio: np.ndarray, frames: list[tuple[Face, ...]], sid: str = "s", rate: int = RATE,
         active: tuple[tuple[int, float], ...] = (), video_delay: int = 0) -> Msgs:
    """Messages in live order: 20 ms chunks; each frame once the audio passed its instant plus ``video_delay``
    samples; SPEECH_START and SPEECH_END 200 ms after their sample (the VAD's decision delay) and a PROGRESS
    watermark 200 ms behind the audio every 100 ms; ActiveSpeaker estimates first."""
    msgs: Msgs = [("active", ActiveSpeaker(Header(sid, i, 0, 0, "asd"), fid, prob, prob > 0.5, 0, 0, RATE))
                  for i, (fid, prob) in enumerate(active)]
    n_frame = n_vad = 0
    todo = [(a + 3200, SpeechEventKind.SPEECH_START, a, -1) for a, _ in SPANS]
    todo += [(b + 3200, SpeechEventKind.SPEECH_END, a, b) for a, b in SPANS]
    todo.sort(key=lambda e: e[0])
    for i, s in enumerate(range(0, len(audio), CHUNK)):
        msgs.append(("audio", AudioChunk(Header(sid, i, s, 0, "src"), audio[s:s + CHUNK].reshape(-1, 1), rate)))
        end = s + CHUNK
        while n_frame < len(frames) and n_frame * P + video_delay < end:
            msgs.append(("faces", Faces(Header(sid, n_frame, n_frame * P, 0, "vision"), n_frame, 640, 480, 25.0,
                                        frames[n_frame])))
            n_frame += 1
        while todo and todo[0][0] <= end:
            at, kind, a, b = todo.pop(0)
            msgs.append(("vad", VadEvent(Header(sid, n_vad, at, 0, "vad"), kind, a, b, RATE, 0.9)))
            n_vad += 1
        if i % 5 == 4 and end > 3200:
            mark = end - 3200
            msgs.append(("vad", VadEvent(Header(sid, n_vad, mark, 0, "vad"), SpeechEventKind.PROGRESS, mark, -1,
                                         RATE, 0.5)))
            n_vad += 1
    return msgs


def transcripts(out: Msgs) -> list[LabeledTranscript]:
    assert all(port == "transcripts" for port, _ in out)
    return [m for _, m in out if isinstance(m, LabeledTranscript)]


def check_revisions(ts: list[LabeledTranscript]) -> dict[int, list[LabeledTranscript]]:
    """Per utterance: revisions 0, 1, 2, ...; partials before the final; committed only grows."""
    by_utt: dict[int, list[LabeledTranscript]] = {}
    for t in ts:
        by_utt.setdefault(t.utterance_id, []).append(t)
    for uid, revs in by_utt.items():
        assert [r.revision for r in revs] == list(range(len(revs))), uid
        assert len(revs) >= 2 and revs[-1].final and not any(r.final for r in revs[:-1]), uid
        for x, y in itertools.pairwise(revs):
            assert y.committed.startswith(x.committed), (uid, x.committed, y.committed)
    return by_utt


def finals(ts: list[LabeledTranscript]) -> list[tuple[int, str, int, int, int]]:
    return [(t.utterance_id, t.committed, t.start_sample, t.end_sample, t.face_id) for t in ts if t.final]


def want(audio: np.ndarray, mouths: np.ndarray, face_id: int) -> list[tuple[int, str, int, int, int]]:
    return [(i, expected_text(audio[a:b], mouths[a // P:b // P]), a, b, face_id) for i, (a, b) in enumerate(SPANS)]


def test_kind_is_registered_and_the_model_is_checked(tmp_path: Path) -> None:
    assert load_kind("avsr") is AvsrNode
    with pytest.raises(ParamError, match="is not allowed; allowed: a directory"):
        AvsrNode("avsr", {"model": str(tmp_path / "nope")})
    with pytest.raises(ParamError, match=r"holds neither avsr\.json"):
        AvsrNode("avsr", {"model": str(tmp_path)})
    with pytest.raises(ParamError, match="required"):
        AvsrNode("avsr", {})


def test_partials_then_a_final_per_utterance_reading_the_largest_face(tiny_dir: Path) -> None:
    audio, m1, m2 = scene()
    frames = [(face(1, 200, m1[k]), face(2, 90, m2[k])) for k in range(N_FRAMES)]
    node = AvsrNode("avsr", {"model": str(tiny_dir)})
    ts = transcripts(run_node(node, live(audio, frames)))
    by_utt = check_revisions(ts)
    assert sorted(by_utt) == [0, 1]
    assert finals(ts) == want(audio, m1, 1)
    assert all(t.face_id == 1 and t.sample_rate == RATE for t in ts)
    assert any(t.committed and not t.final for t in ts)          # LocalAgreement committed text before the end
    fin = [t for t in ts if t.final]
    assert all(len(t.words) == len(t.committed.split()) for t in fin)
    assert node.stats.snapshot()["rejected_by_kind"] == {}


def test_the_most_likely_speaker_is_followed_and_a_lost_face_reads_as_zero(tiny_dir: Path) -> None:
    audio, m1, m2 = scene(seed=1)
    frames = [(face(1, 200, m1[k]), face(2, 90, m2[k])) for k in range(N_FRAMES)]
    node = AvsrNode("avsr", {"model": str(tiny_dir), "warmup": False})
    ts = transcripts(run_node(node, live(audio, frames, active=((1, 0.1), (2, 0.9)))))
    check_revisions(ts)
    assert finals(ts) == want(audio, m2, 2)
    assert {t.face_id for t in ts} == {2}
    assert want(audio, m2, 2)[0][1] != want(audio, m1, 2)[0][1]      # the two faces' lips say different things
    # face 1 (followed: the largest) leaves halfway through the first utterance; face 2 stays visible
    gone = (SPANS[0][0] + SPANS[0][1]) // 2 // P
    frames = [(face(1, 200, m1[k]), face(2, 90, m2[k])) if k < gone else (face(2, 90, m2[k]),)
              for k in range(N_FRAMES)]
    node = AvsrNode("avsr", {"model": str(tiny_dir), "warmup": False})
    ts = transcripts(run_node(node, live(audio, frames)))
    check_revisions(ts)
    zeroed = m1.copy()
    zeroed[gone:] = 0
    a, b = SPANS[0]
    assert finals(ts)[0] == (0, expected_text(audio[a:b], zeroed[a // P:b // P]), a, b, 1)
    assert finals(ts)[1][4] == 2                   # the next utterance follows the face that is there


def test_vad_events_ahead_of_their_audio_and_late_video_lose_nothing(tiny_dir: Path) -> None:
    audio, m1, _ = scene(seed=4)                   # both utterances end in a bright-mouth block ("mi")
    frames = [(face(1, 200, m1[k]),) for k in range(N_FRAMES)]
    msgs = live(audio, frames)
    ahead = [m for m in msgs if m[0] == "vad"] + [m for m in msgs if m[0] != "vad"]
    node = AvsrNode("avsr", {"model": str(tiny_dir), "warmup": False})
    ts = transcripts(run_node(node, ahead))
    check_revisions(ts)
    assert finals(ts) == want(audio, m1, 1)
    assert node.forced_events == 0
    # the vision node runs 600 ms behind the audio: the audio waits for the frames (up to video_wait_ms);
    # without waiting, the finals would be decoded before the last frames came
    late = live(audio, frames, video_delay=9600)
    for wait, same in ((1000, True), (0, False)):
        node = AvsrNode("avsr", {"model": str(tiny_dir), "warmup": False, "video_wait_ms": wait})
        ts = transcripts(run_node(node, late))
        check_revisions(ts)
        assert (finals(ts) == want(audio, m1, 1)) is same
        assert node.stats.snapshot()["rejected_by_kind"] == {}


def test_the_end_of_the_audio_finishes_an_open_utterance(tiny_dir: Path) -> None:
    audio, m1, _ = scene(seed=5)
    frames = [(face(1, 200, m1[k]),) for k in range(N_FRAMES)]
    msgs = [m for m in live(audio, frames) if not (isinstance(m[1], VadEvent) and m[1].end_sample == SPANS[1][1])]
    eos = Control(Header("all", 0, -1, 0, "src"), ControlKind.END_OF_STREAM)
    node = AvsrNode("avsr", {"model": str(tiny_dir), "warmup": False})
    out: Msgs = []
    node.bind(lambda port, msg: out.append((port, msg)))
    for port, msg in msgs:
        node.on_message(port, msg)
    assert len(finals(transcripts(out))) == 1
    node.on_control("audio", eos)                   # the audio ended (and no vad input is connected)
    ts = transcripts(out)
    check_revisions(ts)
    a = SPANS[1][0]
    assert finals(ts) == [want(audio, m1, 1)[0], (1, expected_text(audio[a:], m1[a // P:]), a, len(audio), 1)]
    n_out = len(out)
    node.on_stop()                                  # nothing is left to finish
    assert len(out) == n_out


def test_the_end_of_a_file_waits_for_a_vision_node_still_on_its_last_frames(tiny_dir: Path) -> None:
    """At full speed the audio and the VAD may end while the vision node still works on the last frames:
    the node waits for the faces' END_OF_STREAM instead of finishing with frames missing."""
    audio, m1, _ = scene(seed=2)
    frames = [(face(1, 200, m1[k]),) for k in range(N_FRAMES)]
    msgs = live(audio, frames)
    tail_at = 180 * P                               # the frames from 180 on (the end of the last utterance
    #                                                 and after) come after both ends
    early = [m for m in msgs if not (isinstance(m[1], Faces) and m[1].header.sample_index >= tail_at)]
    late = [m for m in msgs if isinstance(m[1], Faces) and m[1].header.sample_index >= tail_at]
    eos = Control(Header("all", 0, -1, 0, "src"), ControlKind.END_OF_STREAM)
    node = AvsrNode("avsr", {"model": str(tiny_dir), "warmup": False, "video_wait_ms": 5000})
    node.connected_inputs = frozenset({"audio", "faces", "vad"})
    out: Msgs = []
    node.bind(lambda port, msg: out.append((port, msg)))
    for port, msg in early:
        node.on_message(port, msg)
    node.on_control("audio", eos)
    node.on_control("vad", eos)
    n_finals = len(finals(transcripts(out)))
    for port, msg in late:
        node.on_message(port, msg)
    node.on_control("faces", eos)
    ts = transcripts(out)
    assert n_finals < len(SPANS)                    # the last utterance waited for its frames
    assert finals(ts) == want(audio, m1, 1)
    assert node.stats.snapshot()["rejected_by_kind"] == {}


def test_wrong_sample_rate_and_bad_frames_are_rejected_and_counted(tiny_dir: Path) -> None:
    audio, m1, _ = scene(seed=3)
    frames = [(face(1, 200, m1[k]),) for k in range(N_FRAMES)]
    node = AvsrNode("avsr", {"model": str(tiny_dir), "warmup": False})
    assert run_node(node, live(audio[:RATE], frames[:25], rate=8000)) == []
    assert node.stats.snapshot()["rejected_by_kind"] == {"sample_rate": 50}
    node = AvsrNode("avsr", {"model": str(tiny_dir), "warmup": False})
    msgs = live(audio, frames)
    k = next(i for i, (port, m) in enumerate(msgs) if port == "faces" and m.header.sample_index == 40 * P)
    old = msgs[k][1]
    assert isinstance(old, Faces)
    late = Faces(Header("s", 999, 2 * P, 0, "vision"), 2, 640, 480, 25.0, old.faces)
    ts = transcripts(run_node(node, [*msgs[:k + 1], ("faces", old), ("faces", late), *msgs[k + 1:]]))
    assert node.stats.snapshot()["rejected_by_kind"] == {"video_order": 2}
    assert finals(ts) == want(audio, m1, 1)


def test_camera_frames_without_a_sample_index_are_placed_through_the_capture_times(tiny_dir: Path) -> None:
    """A camera stamps only capture times; the audio chunks give the clock (t_ns = capture of a chunk's end)."""
    audio, m1, _ = scene()
    frames = [(face(1, 200, m1[k]),) for k in range(N_FRAMES)]
    base = 7_000_000_000
    msgs: Msgs = []
    for port, m in live(audio, frames):
        if isinstance(m, AudioChunk):
            t = base + (m.header.sample_index + m.samples.shape[0]) * 1_000_000_000 // RATE
            m = AudioChunk(Header("s", m.header.seq, m.header.sample_index, t, "src"), m.samples, m.sample_rate)
        elif isinstance(m, Faces):
            t = base + m.header.sample_index * 1_000_000_000 // RATE
            m = Faces(Header("s", m.header.seq, NO_SAMPLE, t, "camera"), m.frame_index, m.width, m.height, m.fps,
                      m.faces)
        msgs.append((port, m))
    node = AvsrNode("avsr", {"model": str(tiny_dir)})
    ts = transcripts(run_node(node, msgs))
    assert finals(ts) == want(audio, m1, 1)
    assert node.stats.snapshot()["rejected_by_kind"] == {}


def test_without_torch_the_chunked_model_names_the_install_command(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "avsr.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "torch", None)                 # import torch fails
    for name in ("chunked", "chunked_stream", "checkpoint", "model", "conformer"):
        monkeypatch.delitem(sys.modules, f"kikimimi.models.avsr.{name}", raising=False)
    with pytest.raises(MissingDependency, match=r"pip install torch==2\.13\.0") as info:
        AvsrNode("avsr", {"model": str(tmp_path)})
    assert info.value.install == "pip install torch==2.13.0"


def test_a_batch_of_audio_longer_than_the_ring_is_decoded_on_the_way(chunked_dir: Path) -> None:
    """With the VAD's watermark behind, seconds of audio wait and then come at once: past the utterance length
    cap that used to overrun the model's audio ring. It is given a piece at a time with its frames and decoded
    in between, so the finals are those of the audio coming live, mouths included."""
    from kikimimi.models.avsr.chunked import load_chunked

    audio = tones(1, 4 * RATE)
    mouths = np.random.default_rng(1).integers(0, 256, (len(audio) // P, 96, 96), dtype=np.uint8)
    chunks: list[Msgs] = []
    for i, s in enumerate(range(0, len(audio), CHUNK)):
        chunks.append([("audio", AudioChunk(Header("s", i, s, 0, "src"), audio[s:s + CHUNK].reshape(-1, 1), RATE))])
        chunks[-1] += [("faces", Faces(Header("s", k, k * P, 0, "vision"), k, 640, 480, 25.0, (face(1, 200, m),)))
                       for k, m in enumerate(mouths) if s <= k * P < s + CHUNK]
    start = [vad(SpeechEventKind.SPEECH_START, 0), vad(SpeechEventKind.PROGRESS, 0)]
    end = [vad(SpeechEventKind.SPEECH_END, 0, len(audio)), vad(SpeechEventKind.PROGRESS, len(audio)),
           eos("audio"), eos("vad"), eos("faces")]
    step = [m for i, c in enumerate(chunks) for m in (*c, vad(SpeechEventKind.PROGRESS, (i + 1) * CHUNK))]
    batch = [*(m for c in chunks for m in c), vad(SpeechEventKind.PROGRESS, len(audio))]
    got = []
    for msgs in (step, batch):
        node = chunked_node(chunked_dir, vad_lookahead_ms=0)
        node.recognizer = load_chunked(chunked_dir, "cpu", 1, max_utterance_s=1, history_s=1, video_lag_s=0.2)
        got.append(finals(transcripts(run_node(node, [*start, *msgs, *end]))))
        assert node.stats.snapshot()["rejected_by_kind"] == {}
    cap = 24 * P
    assert [f[2:4] for f in got[0]] == [(k * cap, (k + 1) * cap) for k in range(4)] + [(4 * cap, len(audio))]
    assert [f[0] for f in got[0]] == [0, 1, 2, 3, 4] and all(f[1] for f in got[0])
    assert got[1] == got[0]


def test_the_face_is_chosen_for_the_start_of_the_utterance(tiny_dir: Path) -> None:
    """The speaker changes at each onset and the active-speaker estimate says so along with the VAD's
    SPEECH_START (both some 200 ms late): the utterance reads the new speaker's lips from its first frame on."""
    audio, m1, m2 = scene(seed=1)
    frames = [(face(1, 200, m1[k]), face(2, 90, m2[k])) for k in range(N_FRAMES)]

    def asd(fid: int, prob: float) -> tuple[str, ActiveSpeaker]:
        return "active", ActiveSpeaker(Header("s", 0, 0, 0, "asd"), fid, prob, prob > 0.5, 0, 0, RATE)
    msgs: Msgs = []
    for port, m in live(audio, frames, active=((1, 0.9), (2, 0.1))):
        if isinstance(m, VadEvent) and m.kind is SpeechEventKind.SPEECH_START:
            first = m.start_sample == SPANS[0][0]
            msgs += [asd(1, 0.1 if first else 0.9), asd(2, 0.9 if first else 0.1)]
        msgs.append((port, m))
    node = AvsrNode("avsr", {"model": str(tiny_dir), "warmup": False})
    ts = transcripts(run_node(node, msgs))
    check_revisions(ts)
    assert finals(ts) == [want(audio, m2, 2)[0], want(audio, m1, 1)[1]]
    assert [t.face_id for t in ts] == [2 if t.utterance_id == 0 else 1 for t in ts]


def test_a_stream_that_ended_starts_again_from_sample_zero(chunked_dir: Path) -> None:
    """END_OF_STREAM of every input forgets the stream: a new session of the same id, from sample 0, is decoded
    as the first was (nothing dropped as overlap or as frames out of order)."""
    audio, m1, _ = scene(seed=6)
    frames = [(face(1, 200, m1[k]),) for k in range(N_FRAMES)]
    session = [*live(audio, frames), eos("audio"), eos("vad"), eos("faces")]
    node = chunked_node(chunked_dir)
    ts = transcripts(run_node(node, session + session))
    assert len(finals(ts)) == 4 and finals(ts)[2:] == finals(ts)[:2]
    assert [f[2:4] for f in finals(ts)[:2]] == list(SPANS)
    assert node.stats.snapshot()["rejected_by_kind"] == {} and node.overlap_samples == 0


def test_overlapping_audio_and_forced_vad_events_are_counted_and_logged(
        chunked_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    x = tones(2, 3 * CHUNK).reshape(-1, 1)
    node = chunked_node(chunked_dir, ("audio", "vad"))
    with caplog.at_level(logging.WARNING, logger="kikimimi.node.avsr"):
        run_node(node, [("audio", AudioChunk(Header("s", 0, 0, 0, "src"), x[:2 * CHUNK], RATE)),
                        ("audio", AudioChunk(Header("s", 1, CHUNK, 0, "src"), x[CHUNK:], RATE)),    # half old
                        ("audio", AudioChunk(Header("s", 2, 0, 0, "src"), x[:CHUNK], RATE))])       # all old
    assert node.overlap_samples == 2 * CHUNK
    assert node.stats.snapshot()["rejected_by_kind"] == {"audio_overlap": 1}
    assert "overlap" in caplog.text
    caplog.clear()
    monkeypatch.setattr(avsr_mod, "MAX_PENDING_EVENTS", 2)
    node = chunked_node(chunked_dir, ("audio", "vad"))
    with caplog.at_level(logging.WARNING, logger="kikimimi.node.avsr"):
        run_node(node, [("audio", AudioChunk(Header("s", 0, 0, 0, "src"), x, RATE)),
                        vad(SpeechEventKind.SPEECH_START, 8000), vad(SpeechEventKind.SPEECH_END, 8000, 9000),
                        vad(SpeechEventKind.SPEECH_START, 12000)])
    assert node.forced_events == 1
    assert "VAD events ahead" in caplog.text
