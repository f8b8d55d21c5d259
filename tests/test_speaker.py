"""The speaker encoder and node on real recordings: GE2E weights and front end, EER against the
resemblyzer package's own pipeline, closed- and open-set identification, streaming = offline, speaker
changes inside an utterance, and the AMI diarization error rate of the streaming labels."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from kikimimi.engine.messages import Control, ControlKind, Header
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.speaker import SpeakerEmbedding, SpeakerTurn
from kikimimi.engine.msgs.speech import VadEvent
from kikimimi.engine.testing import run_node
from kikimimi.models.evaluation import der, read_rttm
from kikimimi.models.speaker.calibrate import eer
from kikimimi.models.speaker.encoder import SpeakerEncoder, load_encoder
from kikimimi.models.speaker.identify import Gallery, Identifier
from kikimimi.models.speaker.windows import embed_audio, embed_windows, mel_power, window_spans
from kikimimi.nodes.speaker import SpeakerNode
from kikimimi.nodes.vad import TwoStageVad

RATE = 16000
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def encoder() -> SpeakerEncoder:
    return load_encoder("ge2e", threads=2)


def load16k(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    y = x.mean(axis=1)
    return (soxr.resample(y, sr, RATE) if sr != RATE else y).astype(np.float32)


@pytest.fixture(scope="module")
def libri(data_dir: Path) -> list[tuple[str, Path]]:
    with (data_dir / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if "librispeech" in r["path"]]
    return sorted((r["speaker_id"].split()[0], data_dir / r["path"]) for r in rows)


@pytest.fixture(scope="module")
def embedded(encoder: SpeakerEncoder, libri: list[tuple[str, Path]]) -> tuple[list[str], np.ndarray]:
    """Speaker id and our utterance embedding of each LibriSpeech clip."""
    vecs = [embed_audio(encoder, load16k(p)).vector for _, p in libri]
    return [s for s, _ in libri], np.stack(vecs)


def pairs(spk: list[str], vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = vecs @ vecs.T
    lab = np.array(spk)
    iu = np.triu_indices(len(spk), 1)
    same = lab[iu[0]] == lab[iu[1]]
    return s[iu][same], s[iu][~same]


# ---------------------------------------------------------------------- encoder and front end
def test_our_ge2e_module_equals_resemblyzers_on_the_same_input(encoder: SpeakerEncoder, data_dir: Path) -> None:
    resemblyzer = pytest.importorskip("resemblyzer")
    import torch

    ref = resemblyzer.VoiceEncoder("cpu", verbose=False)
    x = load16k(data_dir / "en/librispeech/1688/1688-142285-0000.flac")[:3 * RATE]
    mels = np.stack([mel_power(x[:25600]), mel_power(x[16000:41600])])
    with torch.inference_mode():
        want = ref(torch.from_numpy(mels)).numpy()
    assert np.allclose(encoder.embed(mels), want, atol=1e-5)


@pytest.mark.slow
def test_mel_power_is_librosas_melspectrogram(data_dir: Path) -> None:
    librosa = pytest.importorskip("librosa")
    x = load16k(data_dir / "en/librispeech/1688/1688-142285-0000.flac")[:2 * RATE]
    ours = mel_power(x)
    ref = librosa.feature.melspectrogram(y=x, sr=RATE, n_fft=400, hop_length=160, n_mels=40).T
    inner = slice(2, ours.shape[0] - 2)        # edge frames differ only in their padding
    assert ours.shape == (len(x) // 160, 40)
    assert np.allclose(ours[inner], ref[inner], rtol=2e-3, atol=1e-7)


def test_window_spans() -> None:
    assert window_spans(0, 16000, 25600, 12800, 8000) == [(0, 16000)]           # short: one window of it all
    assert window_spans(0, 4000, 25600, 12800, 8000) == []                       # too short
    assert window_spans(0, 40000, 25600, 12800, 8000) == [(0, 25600), (12800, 38400)]   # 1600 left <= hop / 2
    assert window_spans(0, 45000, 25600, 12800, 8000) == [(0, 25600), (12800, 38400), (19400, 45000)]
    assert window_spans(0, 45000, 25600, 12800, 8000, closed=False) == [(0, 25600), (12800, 38400)]
    assert window_spans(100, 25700 + 12800, 25600, 12800, 8000) == [(100, 25700), (12900, 38500)]


# ---------------------------------------------------------------------- verification and identification
@pytest.mark.slow
def test_eer_is_no_worse_than_resemblyzers_pipeline_and_at_most_1_percent(
        encoder: SpeakerEncoder, embedded: tuple[list[str], np.ndarray], libri: list[tuple[str, Path]]) -> None:
    resemblyzer = pytest.importorskip("resemblyzer")
    ref = resemblyzer.VoiceEncoder("cpu", verbose=False)
    theirs = np.stack([ref.embed_utterance(resemblyzer.preprocess_wav(p)) for _, p in libri])
    spk, ours = embedded
    our_eer, our_t = eer(*pairs(spk, ours))
    their_eer, their_t = eer(*pairs(spk, theirs))
    print(f"\nLibriSpeech {len(spk)} clips: EER ours {our_eer:.2%} (threshold {our_t:.3f}), "
          f"resemblyzer {their_eer:.2%} (threshold {their_t:.3f})")
    assert our_eer <= their_eer
    assert our_eer <= 0.01


@pytest.mark.parametrize("n_enroll", [1, 3])
def test_closed_set_identification(embedded: tuple[list[str], np.ndarray], n_enroll: int) -> None:
    spk, vecs = embedded
    speakers = sorted(set(spk))
    enroll: dict[str, list[int]] = {s: [i for i, x in enumerate(spk) if x == s][:n_enroll] for s in speakers}
    gallery = Gallery.from_vectors({s: vecs[idx] for s, idx in enroll.items()})
    tests = [i for i in range(len(spk)) if i not in {j for idx in enroll.values() for j in idx}]
    right = sum(gallery.best(vecs[i])[0] == spk[i] for i in tests)
    print(f"\nclosed set, {n_enroll} enrollment utterance(s): {right}/{len(tests)} = {right / len(tests):.1%}")
    assert right / len(tests) >= (0.95 if n_enroll == 1 else 0.98)


def test_open_set_unknown_speaker_at_the_calibrated_threshold(embedded: tuple[list[str], np.ndarray]) -> None:
    """Calibrate on some speakers, enroll them, and present each held-out speaker: they come out unknown."""
    spk, vecs = embedded
    speakers = sorted(set(spk))
    held_out = speakers[::3]
    known = [s for s in speakers if s not in held_out]
    enroll = {s: [i for i, x in enumerate(spk) if x == s][:3] for s in known}
    # calibrated as the identifier decides: each known, not enrolled utterance against every centroid
    gal = Gallery.from_vectors({s: vecs[idx] for s, idx in enroll.items()})
    rest = [i for i, s in enumerate(spk) if s in known and i not in {j for v in enroll.values() for j in v}]
    scores = [(gal.scores(vecs[i]), spk[i]) for i in rest]
    _, threshold = eer(np.array([sc[s] for sc, s in scores]),
                       np.array([v for sc, s in scores for n, v in sc.items() if n != s]))
    ident = Identifier(Gallery.from_vectors({s: vecs[idx] for s, idx in enroll.items()}), threshold,
                       cluster_unknown=False)
    enrolled_ids = {j for idx in enroll.values() for j in idx}
    unknown = [ident.identify(vecs[i], 5).speaker for i, s in enumerate(spk) if s in held_out]
    named = [(ident.identify(vecs[i], 5).speaker, s) for i, s in enumerate(spk) if s in known and i not in enrolled_ids]
    print(f"\nopen set at threshold {threshold:.3f}: held-out {sum(u == 'unknown' for u in unknown)}/{len(unknown)} "
          f"unknown; enrolled {sum(a == b for a, b in named)}/{len(named)} named right")
    assert all(u == "unknown" for u in unknown)
    assert sum(a == b for a, b in named) / len(named) >= 0.95


# ---------------------------------------------------------------------- the node
def live_messages(audio: np.ndarray, stream: str = "s", **vad: object) -> list[tuple[str, object]]:
    """Audio chunks and the VAD's events in live arrival order (each event after the audio it decided on)."""
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16).reshape(-1, 1)
    chunks = [("audio", AudioChunk(Header(stream, i, a, 0, "src"), pcm[a:a + 320], RATE))
              for i, a in enumerate(range(0, len(pcm), 320))]
    events = [m for _, m in run_node(TwoStageVad("vad", dict(vad)), chunks) if isinstance(m, VadEvent)]
    keyed = [(c.header.sample_index + c.n_samples, 0, ("audio", c)) for _, c in chunks]
    keyed += [(e.header.sample_index, 1, ("vad", e)) for e in events]
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [k[2] for k in keyed]


@pytest.mark.slow
def test_streamed_window_embeddings_equal_offline_and_voices_stay_apart(
        encoder: SpeakerEncoder, libri: list[tuple[str, Path]]) -> None:
    by_spk: dict[str, list[Path]] = {}
    for s, p in libri:
        by_spk.setdefault(s, []).append(p)
    a, b = sorted(by_spk)[:2]
    gap = np.zeros(RATE * 2, np.float32)
    clips = [by_spk[a][0], by_spk[b][0], by_spk[a][1]]
    audio = np.concatenate([p for c in clips for p in (load16k(c), gap)])
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16).astype(np.float32) / 32768.0
    node = SpeakerNode("spk", {"db": "none", "threads": 2})
    out = [m for _, m in run_node(node, live_messages(audio))]
    wins = [m for m in out if isinstance(m, SpeakerEmbedding) and m.kind == "window"]
    assert wins
    want = embed_windows(encoder, [pcm[w.start_sample:w.end_sample] for w in wins])
    assert np.allclose(np.stack([w.vector for w in wins]), want, atol=1e-5)
    finals = [t for t in out if isinstance(t, SpeakerTurn) and t.final]
    bounds = np.cumsum([0] + [len(load16k(c)) + len(gap) for c in clips])
    clip_of = [int(np.searchsorted(bounds, t.start_sample, side="right")) - 1 for t in finals]
    votes: list[dict[str, float]] = [{}, {}, {}]
    for t, k in zip(finals, clip_of, strict=True):
        votes[k][t.speaker] = votes[k].get(t.speaker, 0.0) + (t.end_sample - t.start_sample)
    labels = [max(v, key=lambda s: v[s]) for v in votes]
    assert labels[0] == labels[2] != labels[1], votes
    purity = sum(max(v.values()) for v in votes) / sum(sum(v.values()) for v in votes)
    assert purity >= 0.9, votes
    assert all(t.speaker.startswith("voice_") and not t.enrolled for t in finals)


@pytest.mark.slow
def test_a_speaker_change_inside_one_utterance_splits_it(libri: list[tuple[str, Path]]) -> None:
    by_spk: dict[str, list[Path]] = {}
    for s, p in libri:
        by_spk.setdefault(s, []).append(p)
    a, b = "librispeech:1688", "librispeech:2414"
    x, y = load16k(by_spk[a][1]), load16k(by_spk[b][1])
    audio = np.concatenate([x, y])       # the pauses of both clips are short: with a 1.5 s hangover, one utterance
    node = SpeakerNode("spk", {"db": "none", "threads": 2})
    msgs = live_messages(audio, min_silence_ms=1500)
    assert sum(1 for _, m in msgs if isinstance(m, VadEvent) and m.kind.value == "speech_start") == 1
    out = [m for _, m in run_node(node, msgs)]
    finals = [t for t in out if isinstance(t, SpeakerTurn) and t.final]
    cut = [t.start_sample for t in finals if t.part > 0]
    assert len({t.speaker for t in finals}) >= 2, finals
    assert any(abs(c - len(x)) <= 1.6 * RATE for c in cut), (cut, len(x))


Turns = list[tuple[str, float, float]]


@pytest.fixture(scope="module")
def ami_runs(data_dir: Path) -> list[tuple[str, Turns, Turns]]:
    """(mix name, reference turns, the speaker node's final labelled turns) for both AMI mixes."""
    runs = []
    for name in ("dev00", "dev01"):
        audio = load16k(data_dir / "diarization" / "ami" / f"{name}.wav")
        node = SpeakerNode("spk", {"db": "none", "threads": 2})
        out = [m for _, m in run_node(node, live_messages(audio))]
        hyp = [(t.speaker, t.start_sample / RATE, t.end_sample / RATE) for t in out
               if isinstance(t, SpeakerTurn) and t.final and t.speaker != "unknown"]
        runs.append((name, read_rttm(data_dir / "diarization" / "ami" / f"{name}.rttm"), hyp))
    return runs


def one_label(turns: Turns) -> Turns:
    return [("one", a, b) for _, a, b in turns]


@pytest.mark.slow
def test_ami_streaming_labels_beat_one_label_on_the_same_segments(ami_runs: list[tuple[str, Turns, Turns]]) -> None:
    """The speaker labels must carry information: the same speech segments with every label replaced by one
    speaker score worse. Measured (collar 0.25 s each side, both mixes): ours 40.7 %, one label on our
    segments 44.6 % (dev00 36.6 vs 47.4; dev01 48.6 vs 39.3: there the labels still lose)."""
    ours = mono = None
    for name, ref, hyp in ami_runs:
        score, base = der(ref, hyp, collar_s=0.25), der(ref, one_label(hyp), collar_s=0.25)
        print(f"\nAMI {name}: DER {score.der:.1%} (false alarm {score.false_alarm:.1f} s, missed {score.missed:.1f} s, "
              f"confusion {score.confusion:.1f} s of {score.total:.1f} s); "
              f"one label on the same segments {base.der:.1%}")
        ours, mono = (score, base) if ours is None else (ours + score, mono + base)
    assert ours is not None and mono is not None
    print(f"AMI both mixes: DER {ours.der:.1%}, one label on the same segments {mono.der:.1%}")
    assert ours.confusion < mono.confusion and ours.der < mono.der
    assert ours.der <= 0.407 + 0.02      # the figure measured when this test was written, and a margin


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 18: the streaming labels (40.7 %) lose to one label on the reference "
                                       "turns (26.7 %): missed speech (7.4 s) and confusion on dev01")
def test_ami_streaming_labels_beat_one_label_on_the_reference_turns(
        ami_runs: list[tuple[str, Turns, Turns]]) -> None:
    """The baseline any diarizer must beat: every reference turn given one speaker (26.7 % with der())."""
    ours = oracle = None
    for _, ref, hyp in ami_runs:
        score, base = der(ref, hyp, collar_s=0.25), der(ref, one_label(ref), collar_s=0.25)
        ours, oracle = (score, base) if ours is None else (ours + score, oracle + base)
    assert ours is not None and oracle is not None
    assert oracle.der == pytest.approx(0.267, abs=0.001)
    assert ours.der < oracle.der


@pytest.mark.slow
def test_the_order_in_which_audio_and_vad_end_changes_nothing(data_dir: Path) -> None:
    """Over ZeroMQ the VAD's END_OF_STREAM may come before the last audio (they travel on different sockets).
    JFK's last utterance is still open when the file ends; it must be closed with all of its audio either way."""
    audio = load16k(data_dir / "en" / "jfk" / "jfk.flac")
    live = live_messages(audio)
    eos = {p: (p, Control(Header("all", 0, -1, 0, "src"), ControlKind.END_OF_STREAM)) for p in ("audio", "vad")}
    vad = [m for m in live if m[0] == "vad"]
    pcm = [m for m in live if m[0] == "audio"]
    orders = {"live, audio ends first": [*live, eos["audio"], eos["vad"]],
              "vad ends before any audio": [*vad, eos["vad"], *pcm, eos["audio"]],
              "audio ends before any vad": [*pcm, eos["audio"], *vad, eos["vad"]]}
    got = {}
    for name, msgs in orders.items():
        node = SpeakerNode("spk", {"db": "none", "threads": 2})
        node.connected_inputs = frozenset({"audio", "vad"})
        out: list[object] = []
        node.bind(lambda port, msg, out=out: out.append(msg))  # type: ignore[misc]
        node.on_start()
        for port, m in msgs:
            (node.on_control if isinstance(m, Control) else node.on_message)(port, m)   # no on_stop: the ends do it
        turns = [(t.speaker, t.start_sample, t.end_sample) for t in out if isinstance(t, SpeakerTurn) and t.final]
        utts = [m for m in out if isinstance(m, SpeakerEmbedding) and m.kind == "utterance"]
        got[name] = (turns, [(u.start_sample, u.end_sample) for u in utts], np.stack([u.vector for u in utts]))
    first = got["live, audio ends first"]
    assert first[0] and first[1][-1][1] >= len(audio) - RATE // 2     # the open utterance ran to the file's end
    for name, (turns, spans, vecs) in got.items():
        assert (turns, spans) == first[:2], name
        cos = np.sum(vecs * first[2], axis=1) / np.linalg.norm(vecs, axis=1) / np.linalg.norm(first[2], axis=1)
        assert cos.min() > 0.9, (name, cos)   # sliding windows are cut where the watermarks were: ~0.95 apart
