"""Speaker embeddings: compute cost against resemblyzer, EER, and label delay through the graph in real time.

1. Compute: the GE2E encoder's ms per 1.6 s window at batch 1 and 8 (front end ``encoder_input`` and
   network ``encoder.embed`` apart), ``embed_audio``'s seconds of compute per second of audio (hop 0.8 s)
   over the LibriSpeech clips of ../shared/data, and resemblyzer's own ``preprocess_wav`` +
   ``embed_utterance`` on the same clips; the EER of both over all same/different-speaker clip pairs.
2. Delay: ``file_source`` (speed 1) -> ``vad`` + ``speaker`` (db none) -> a collector that records when
   each SpeakerTurn, VadEvent and AudioChunk arrives. Per final turn: arrival minus the capture time of
   its end sample, and minus the arrival of the VAD's SPEECH_END (the node's own share). Inputs: ~6
   LibriSpeech clips of 3 speakers joined with 1.5 s gaps (labels scored against the true speakers),
   then the AMI mixes dev00 and dev01 (DER of the final turns against their RTTM).

Target: the label within 0.5 s of the end of the utterance (median and p90).

Run:  .venv/bin/python bench/speaker.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import logging
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
from common import CaptureClock, med, p90
from scipy.optimize import linear_sum_assignment

from kikimimi.engine.graph import GraphBuilder
from kikimimi.engine.messages import Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.speaker import SpeakerTurn
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.engine.node import Node, PortSpec
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.registry import register
from kikimimi.engine.runner import Runner
from kikimimi.models.evaluation import der, read_rttm
from kikimimi.models.speaker.calibrate import eer
from kikimimi.models.speaker.encoder import SpeakerEncoder, load_encoder
from kikimimi.models.speaker.windows import embed_audio, encoder_input

RATE = 16000
GAP_S = 1.5
TARGET_S = 0.5
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
AMI = DATA / "diarization" / "ami"
PROGRAM_SPEAKERS = ("1688", "1998", "2033")      # two men, one woman
DIART_AMI_DER = 30.4                             # diart, AMI test, 1 s latency (published)


class SpeakerCollector(Node):
    """Records arrival times of speaker turns and VAD events, and the capture time of sample 0."""

    kind = "bench_speaker_collector"
    inputs = (
        PortSpec("turns", (SpeakerTurn,), queue=QueueConfig.make("block", 4096)),
        PortSpec("vad", (VadEvent,), queue=QueueConfig.make("block", 4096)),
        PortSpec("audio", (AudioChunk,), queue=QueueConfig.make("block", 4096)),
    )

    def __init__(self, name: str, params: Any = None, clock: Any = None) -> None:
        super().__init__(name, params, clock)
        self.turns: list[tuple[int, SpeakerTurn]] = []
        self.vad: list[tuple[int, VadEvent]] = []
        self.clock_map = CaptureClock(RATE)

    def on_message(self, port: str, msg: Message) -> None:
        now = self.clock.now_ns()
        if isinstance(msg, SpeakerTurn):
            self.turns.append((now, msg))
        elif isinstance(msg, VadEvent):
            self.vad.append((now, msg))
        elif isinstance(msg, AudioChunk):
            self.clock_map.observe(msg)

    def captured(self, sample: int) -> int:
        return self.clock_map.captured(sample)


register(SpeakerCollector)


def load(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    y = x.mean(axis=1)
    return (soxr.resample(y, sr, RATE) if sr != RATE else y).astype(np.float32)


def clips() -> list[tuple[Path, str]]:
    """(path, speaker id) of the LibriSpeech clips, sorted by path."""
    with (DATA / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if "librispeech" in r["path"]]
    return sorted((DATA / r["path"], r["speaker_id"].split(":")[1].split()[0]) for r in rows)



def timed(fn: Any, repeats: int, warmup: int = 3) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def pair_scores(vecs: list[np.ndarray], spk: list[str]) -> tuple[float, float]:
    same, diff = [], []
    for i, j in itertools.combinations(range(len(vecs)), 2):
        (same if spk[i] == spk[j] else diff).append(float(vecs[i] @ vecs[j]))
    return eer(np.array(same), np.array(diff))


def compute(enc: SpeakerEncoder, items: list[tuple[Path, str]], repeats: int, resemblyzer: bool) -> None:
    rng = np.random.default_rng(0)
    audio = {p: load(p) for p, _ in items}
    long = np.concatenate(list(audio.values()))
    n = int(enc.window_s * RATE)
    print("\n== compute (GE2E, 1.6 s windows)")
    for batch in (1, 8):
        wins = [long[a:a + n] for a in rng.integers(0, len(long) - n, batch)]
        inp = encoder_input(enc, wins)
        fe = timed(partial(encoder_input, enc, wins), repeats)
        net = timed(partial(enc.embed, inp), repeats)
        print(f"  batch {batch}: {1e3 * (fe + net) / batch:6.2f} ms per window = front end "
              f"{1e3 * fe / batch:5.2f} + network {1e3 * net / batch:5.2f}")
    total_s = sum(len(x) for x in audio.values()) / RATE
    embed_audio(enc, audio[items[0][0]])
    t0 = time.perf_counter()
    ours_full = [embed_audio(enc, audio[p]).vector for p, _ in items]
    ours_cost = time.perf_counter() - t0
    print(f"  embed_audio (hop 0.8 s) over {len(items)} clips ({total_s:.0f} s): {ours_cost:.2f} s, "
          f"{ours_cost / total_s:.4f} s per s of audio")
    spk = [s for _, s in items]
    try:
        from kikimimi.models.speaker.files import speech_embedding

        t0 = time.perf_counter()
        ours = [speech_embedding(enc, p)[0].vector for p, _ in items]
        cost = time.perf_counter() - t0
        how = f"speech_embedding (read + our VAD + embed_audio on speech; {cost / total_s:.4f} s per s of audio)"
    except ImportError:
        ours, how = ours_full, "embed_audio over the whole clip (no kikimimi.models.speaker.files)"
    if any(v is None for v in ours):
        ours, how = ours_full, "embed_audio over the whole clip (speech_embedding gave no vector for a clip)"
    e, thr = pair_scores(ours, spk)   # type: ignore[arg-type]
    n_same, n_pairs = sum(a == b for a, b in itertools.combinations(spk, 2)), len(spk) * (len(spk) - 1) // 2
    print(f"  EER ours   {e:6.2%} (threshold {thr:.3f}) over {n_same} same / {n_pairs - n_same} different pairs; "
          f"embeddings: {how}")
    print("  EER ours, embed_audio over the whole clip {:6.2%} (threshold {:.3f})".format(
        *pair_scores(ours_full, spk)))  # type: ignore[arg-type]
    if not resemblyzer:
        return
    import torch
    from resemblyzer import VoiceEncoder, preprocess_wav

    ve = VoiceEncoder("cpu", verbose=False)
    print(f"  resemblyzer: torch threads {torch.get_num_threads()}")
    ve.embed_utterance(preprocess_wav(items[0][0]))
    pre_cost, emb_cost, theirs = 0.0, 0.0, []
    for p, _ in items:
        t0 = time.perf_counter()
        wav = preprocess_wav(p)
        t1 = time.perf_counter()
        theirs.append(ve.embed_utterance(wav))
        pre_cost += t1 - t0
        emb_cost += time.perf_counter() - t1
    r_all = (pre_cost + emb_cost) / total_s
    print(f"  resemblyzer preprocess_wav + embed_utterance: {r_all:.4f} s per s of audio "
          f"(preprocess {pre_cost / total_s:.4f}, embed_utterance {emb_cost / total_s:.4f})")
    print(f"  ratio ours/theirs: embed_audio / (preprocess + embed_utterance) {ours_cost / total_s / r_all:.2f}; "
          f"embed_audio / embed_utterance {ours_cost / emb_cost:.2f}")
    print("  EER resemblyzer {:6.2%} (threshold {:.3f})".format(*pair_scores(theirs, spk)))


def program(items: list[tuple[Path, str]], quick: bool) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    """Clips of three speakers in turn, 1.5 s gaps: the audio and each clip's (start, end, speaker)."""
    per: dict[str, list[Path]] = {s: [p for p, sp in items if sp == s and 3.0 <= sf.info(str(p)).duration <= 12.0]
                                  for s in PROGRAM_SPEAKERS}
    order = [(s, per[s][k]) for k in range(2) for s in PROGRAM_SPEAKERS][: 4 if quick else 6]
    gap = np.zeros(int(GAP_S * RATE), np.float32)
    pieces, spans, pos = [gap], [], len(gap)
    for s, p in order:
        x = load(p)
        pieces += [x, gap]
        spans.append((pos, pos + len(x), s))
        pos += len(x) + len(gap)
    return np.concatenate(pieces), spans


def stream(wav: Path, threads: int) -> tuple[SpeakerCollector, Any]:
    g = GraphBuilder("speaker-bench")
    g.node("source", "file_source", path=str(wav), speed=1.0, stream_id="mic")
    g.node("vad", "vad").connect("audio", "source.audio", policy="block", capacity=256)
    spk = g.node("speaker", "speaker", db="none", threads=threads)
    spk.connect("audio", "source.audio", policy="block", capacity=512).connect("vad", "vad.events")
    g.node("collect", "bench_speaker_collector").connect("turns", "speaker.turns").connect(
        "vad", "vad.events").connect("audio", "source.audio")
    runner = Runner(g.build())
    runner.run()
    col: SpeakerCollector = runner.drivers["collect"].node  # type: ignore[assignment]
    return col, runner.drivers["speaker"].node


def delays(col: SpeakerCollector, node: Any, duration: float) -> list[tuple[int, SpeakerTurn]]:
    finals = [(t, tr) for t, tr in col.turns if tr.final]
    ends = {e.end_sample: t for t, e in col.vad if e.kind is SpeechEventKind.SPEECH_END}
    total = [(t - col.captured(tr.end_sample)) / 1e9 for t, tr in finals]
    own = [(t - ends[tr.end_sample]) / 1e9 for t, tr in finals if tr.end_sample in ends]
    vad = [(t - col.captured(s)) / 1e9 for s, t in ends.items()]
    n_prov = sum(not tr.final for _, tr in col.turns)
    split = sum(tr.part > 0 for _, tr in finals)
    print(f"  final turns {len(finals)} ({split} after a change inside an utterance), provisional turns {n_prov}; "
          f"windows {node.windows_embedded}, encoder {node.embed_seconds / duration:.4f} s per s of audio")
    print(f"  delay end of utterance -> final label: median {med(total):.3f} s, p90 {p90(total):.3f}, "
          f"max {max(total, default=float('nan')):.3f}")
    print(f"  of which VAD (end sample -> SPEECH_END arrives): median {med(vad):.3f} s, p90 {p90(vad):.3f}; "
          f"speaker node (SPEECH_END -> final label, {len(own)} matched): median {med(own):.3f} s, "
          f"p90 {p90(own):.3f}, max {max(own, default=float('nan')):.3f}")
    late = [f"{tr.end_sample / RATE:.1f} s (+{d:.2f})" for (_, tr), d in zip(finals, total, strict=True)
            if d > TARGET_S]
    print(f"  late final labels (> {TARGET_S} s; at end of utterance, + delay): {', '.join(late) or 'none'}")
    for name, v in (("median", med(total)), ("p90", p90(total))):
        print(f"  target label within {TARGET_S} s of the end ({name} {v:.3f} s): "
              f"{'PASS' if v <= TARGET_S else 'MISS'}")
    return finals


def purity(finals: list[tuple[int, SpeakerTurn]], spans: list[tuple[int, int, str]]) -> None:
    rows: list[tuple[str, str, SpeakerTurn]] = []
    for _, tr in finals:
        over = [(min(b, tr.end_sample) - max(a, tr.start_sample), s) for a, b, s in spans]
        best = max(over)
        if best[0] > 0:
            rows.append((best[1], tr.speaker, tr))
    labels = sorted({h for _, h, _ in rows})
    truth = sorted({s for _, _, s in spans})
    count = np.array([[sum(r == t and h == lab for r, h, _ in rows) for t in truth] for lab in labels], float)
    mapping: dict[str, str] = {}
    if count.size:
        li, ti = linear_sum_assignment(count, maximize=True)
        mapping = {labels[i]: truth[j] for i, j in zip(li, ti, strict=True) if count[i, j] > 0}
    ok = sum(mapping.get(h) == r for r, h, _ in rows)
    for r, h, tr in rows:
        print(f"    {tr.start_sample / RATE:6.2f}-{tr.end_sample / RATE:6.2f} s  true {r:5s} label {h:8s} "
              f"score {tr.score:.2f}{'' if mapping.get(h) == r else '  (wrong)'}")
    print(f"  purity: {ok}/{len(rows)} final turns carry the label mapped one-to-one to their true speaker "
          f"({len(labels)} labels for {len(truth)} speakers: "
          f"{', '.join(f'{k}->{v}' for k, v in sorted(mapping.items()))})")


def diarization(col: SpeakerCollector, finals: list[tuple[int, SpeakerTurn]], rttm: Path) -> None:
    ref = read_rttm(rttm)
    hyp = [(tr.speaker, tr.start_sample / RATE, tr.end_sample / RATE) for _, tr in finals if tr.speaker != "unknown"]
    one = [("speech", e.start_sample / RATE, e.end_sample / RATE) for _, e in col.vad
           if e.kind is SpeechEventKind.SPEECH_END]
    unknown = sum(tr.end_sample - tr.start_sample for _, tr in finals if tr.speaker == "unknown") / RATE
    print(f"  speakers: reference {len({r[0] for r in ref})}, ours {len({h[0] for h in hyp})} "
          f"({unknown:.1f} s of final turns labelled unknown, left out of the hypothesis)")
    for collar in (0.25, 0.0):
        d, b = der(ref, hyp, collar_s=collar), der(ref, one, collar_s=collar)
        print(f"  DER collar {collar:.2f} s: ours {d.der:6.2%} (FA {d.false_alarm:.1f} s, miss {d.missed:.1f} s, "
              f"confusion {d.confusion:.1f} s of {d.total:.1f} s); one speaker over the VAD's speech {b.der:6.2%}; "
              f"diart (published, AMI test, 1 s latency) {DIART_AMI_DER}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer clips, no resemblyzer")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of the encoder (torch)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    t_start = time.perf_counter()
    items = clips()
    enc = load_encoder("ge2e", device="cpu", threads=args.threads)
    enc.warmup()
    print(f"{os.cpu_count()} CPUs, encoder {enc.id}, threads {args.threads}, {len(items)} LibriSpeech clips "
          f"of {len({s for _, s in items})} speakers")
    compute(enc, items[::3] if args.quick else items, 10 if args.quick else 30, not args.quick)
    audio, spans = program(items, args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "program.wav"
        sf.write(str(wav), audio, RATE, subtype="PCM_16")
        print(f"\n== LibriSpeech program: {len(spans)} clips of {', '.join(PROGRAM_SPEAKERS)}, "
              f"{len(audio) / RATE:.1f} s, real time")
        col, node = stream(wav, args.threads)
        purity(delays(col, node, len(audio) / RATE), spans)
        for name in ("dev00", "dev01"):
            x, path = load(AMI / f"{name}.wav"), AMI / f"{name}.wav"
            if sf.info(str(path)).samplerate != RATE:
                path = Path(tmp) / f"{name}.wav"
                sf.write(str(path), x, RATE, subtype="PCM_16")
            print(f"\n== AMI {name}: {len(x) / RATE:.1f} s, real time")
            col, node = stream(path, args.threads)
            diarization(col, delays(col, node, len(x) / RATE), AMI / f"{name}.rttm")
    print(f"\nruntime {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
