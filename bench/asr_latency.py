"""Streaming recognition latency through the whole graph, paced in real time, against faster-whisper.

The clips (LibriSpeech from ../shared/data, then JFK) are joined with 1.5 s of silence between them
into one 16 kHz file, which plays through ``file_source`` at speed 1 (as a live capture) into
``vad`` + ``features`` -> ``asr``; a collector node records when each Transcript and VadEvent arrives.
For each model (tiny.en, base; CPU int8, beam 1, the asr node's adaptive interval):

* first-partial latency: speech onset (the VAD's start sample, as captured) -> the first revision
  with text of that utterance;
* final latency: end of speech (the VAD's end sample, as captured) -> the final Transcript;
* RTF: the asr node's decode time / audio duration; lag: how late revisions arrive after the
  audio they cover was captured, in the first and the last quarter of the run: max, median and p90
  (bounded = the p90 of the last quarter is not worse than the first's by more than 0.5 s: a decoder
  that falls behind delays most revisions, while the max is one slow final); partial decodes skipped for lag;
* peak memory (RSS, from /proc) after 1 minute and at the end (``--long``: 10 minutes);
* WER of the finals over the LibriSpeech part (the same normalization as the tests), next to the
  whole-clip offline WER of the same clips (faster-whisper's ``transcribe()`` on each original clip,
  same model directory and beam, int8, 2 threads): the streaming penalty as one number per model.

Reference, same run, after the streaming pass: faster-whisper's own ``transcribe()`` (beam 1,
without its VAD, same model directory, int8, 2 threads) on each whole VAD utterance; its final
latency = when the VAD's SPEECH_END arrived (after end of speech) + transcribe() time.

Targets on a 2-core CPU: both models keep up (RTF < 1, bounded lag); median final latency <= 0.8 s
(tiny.en) and <= 1.5 s (base); first partial <= 1.0 s after onset (tiny.en); memory flat between
1 and 10 minutes (growth < 50 MB).

Run:  .venv/bin/python bench/asr_latency.py [--quick | --long] [--models tiny.en,base] [--padding]
      [--set whisper.final_window_ms=20000 ...]
``--padding`` also measures WER and time of one whole-utterance decode with 30 s padding vs the
backend's minimum padding on every LibriSpeech clip (the measurement behind the padding choice).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import yaml
from common import CaptureClock, med, p90

from kikimimi.engine.graph import GraphBuilder
from kikimimi.engine.messages import Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.speech import SpeechEventKind, Transcript, VadEvent
from kikimimi.engine.node import Node, PortSpec
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.registry import register
from kikimimi.engine.runner import Runner
from kikimimi.models.asr.resolve import resolve_model
from kikimimi.models.asr.text import ErrorCount, join_text, wer

RATE = 16000
GAP_S = 1.5
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BEAM = 1
TARGETS = {"tiny.en": {"final": 0.8, "first": 1.0}, "base": {"final": 1.5, "first": None}}


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class BenchCollector(Node):
    """Records arrival times of transcripts, VAD events and source chunks; samples RSS as audio passes."""

    kind = "bench_asr_collector"
    inputs = (
        PortSpec("transcripts", (Transcript,), queue=QueueConfig.make("block", 4096)),
        PortSpec("vad", (VadEvent,), queue=QueueConfig.make("block", 4096)),
        PortSpec("audio", (AudioChunk,), queue=QueueConfig.make("block", 4096)),
    )

    def __init__(self, name: str, params: Any = None, clock: Any = None) -> None:
        super().__init__(name, params, clock)
        self.transcripts: list[tuple[int, Transcript]] = []
        self.vad: list[tuple[int, VadEvent]] = []
        self.clock_map = CaptureClock(RATE)
        self.rss: dict[int, float] = {}   # audio minute -> RSS MB

    def on_message(self, port: str, msg: Message) -> None:
        now = self.clock.now_ns()
        if isinstance(msg, Transcript):
            self.transcripts.append((now, msg))
        elif isinstance(msg, VadEvent):
            self.vad.append((now, msg))
        elif isinstance(msg, AudioChunk):
            self.clock_map.observe(msg)
            minute = msg.end_index // (60 * RATE)
            if msg.end_index % (60 * RATE) <= msg.n_samples and minute not in self.rss:
                self.rss[minute] = rss_mb()

    def captured(self, sample: int) -> int:
        return self.clock_map.captured(sample)


register(BenchCollector)


def load(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    y = x.mean(axis=1)
    return (soxr.resample(y, sr, RATE) if sr != RATE else y).astype(np.float32)


def program(minutes: float, quick: bool) -> tuple[np.ndarray, list[str], list[tuple[int, int]]]:
    """The joined audio, the reference text of each clip (JFK last), and each clip's sample span."""
    with (DATA / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if "librispeech" in r["path"]]
    rows.sort(key=lambda r: r["path"])
    picked = rows[::6][:4] if quick else rows[::3]
    gap = np.zeros(int(GAP_S * RATE), np.float32)
    pieces, refs, spans = [gap], [], []
    pos = len(gap)
    total = 0.0
    i = 0
    while True:
        r = picked[i % len(picked)]
        x = load(DATA / r["path"])
        pieces += [x, gap]
        spans.append((pos, pos + len(x)))
        refs.append(r["reference"])
        pos += len(x) + len(gap)
        total += (len(x) + len(gap)) / RATE
        i += 1
        if i >= len(picked) and total >= minutes * 60:
            break
    jfk = load(DATA / "en" / "jfk" / "jfk.flac")
    pieces += [jfk, gap]
    spans.append((pos, pos + len(jfk)))
    refs.append("AND SO MY FELLOW AMERICANS ASK NOT WHAT YOUR COUNTRY CAN DO FOR YOU ASK WHAT YOU CAN DO FOR YOUR "
                "COUNTRY")
    return np.concatenate(pieces), refs, spans


def scored(finals: list[tuple[int, str]], refs: list[str], spans: list[tuple[int, int]]) -> tuple[ErrorCount, bool]:
    """WER over the LibriSpeech clips (finals grouped by the clip they start in) and whether JFK matches."""
    err = ErrorCount()
    jfk_ok = False
    for k, ((a, b), ref) in enumerate(zip(spans, refs, strict=True)):
        text = join_text([t for s, t in sorted(finals) if a - RATE // 2 <= s < b], "en")
        e = wer(ref, text)
        if k == len(spans) - 1:
            jfk_ok = e.errors == 0
        else:
            err += e
    return err, jfk_ok


def stream(model: str, wav: Path, duration_s: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    g = GraphBuilder("asr-bench")
    g.node("source", "file_source", path=str(wav), speed=1.0, stream_id="mic")
    g.node("vad", "vad").connect("audio", "source.audio", policy="block", capacity=256)
    g.node("features", "features").connect("audio", "source.audio", policy="block", capacity=256)
    asr = g.node("asr", "asr", model=model, language="en", threads=2, beam_size=BEAM, **(extra or {}))
    asr.connect("features", "features.features", policy="block", capacity=4096)
    asr.connect("vad", "vad.events", policy="block", capacity=1024)
    g.node("collect", "bench_asr_collector").connect("transcripts", "asr.transcripts").connect(
        "vad", "vad.events").connect("audio", "source.audio")
    runner = Runner(g.build())
    t0 = time.perf_counter()
    runner.run()
    wall = time.perf_counter() - t0
    col: BenchCollector = runner.drivers["collect"].node  # type: ignore[assignment]
    node = runner.drivers["asr"].node
    return {"col": col, "asr": node, "wall": wall, "duration": duration_s}


def analyse(res: dict[str, Any]) -> dict[str, Any]:
    col: BenchCollector = res["col"]
    by_utt: dict[int, list[tuple[int, Transcript]]] = {}
    for t, tr in col.transcripts:
        by_utt.setdefault(tr.utterance_id, []).append((t, tr))
    starts = [(t, e) for t, e in col.vad if e.kind is SpeechEventKind.SPEECH_START]
    ends = {e.end_sample: t for t, e in col.vad if e.kind is SpeechEventKind.SPEECH_END}
    first, final, lag_points, vad_wait = [], [], [], []
    for revs in by_utt.values():
        f = next(((t, tr) for t, tr in revs if tr.final), None)
        p = next(((t, tr) for t, tr in revs if tr.text), None)
        start = revs[0][1].start_sample
        onset = min((e.start_sample for _, e in starts if abs(e.start_sample - start) < RATE // 2), default=start)
        if p is not None:
            first.append((p[0] - col.captured(onset)) / 1e9)
        if f is not None:
            final.append((f[0] - col.captured(f[1].end_sample)) / 1e9)
            if f[1].end_sample in ends:   # how much of it was the VAD's wait for the end of speech
                vad_wait.append((ends[f[1].end_sample] - col.captured(f[1].end_sample)) / 1e9)
        for t, tr in revs:
            lag_points.append((tr.end_sample / RATE, (t - col.captured(tr.end_sample)) / 1e9))
    lag_points.sort()
    dur = res["duration"]
    q1 = [lag for s, lag in lag_points if s < dur / 4]
    q4 = [lag for s, lag in lag_points if s >= 3 * dur / 4]
    finals = [(tr.start_sample, tr.committed) for _, tr in col.transcripts if tr.final]
    return {
        "first": first, "final": final, "vad_wait": vad_wait, "q1_lag": max(q1, default=0.0),
        "q4_lag": max(q4, default=0.0), "q1_med": med(q1) if q1 else 0.0, "q4_med": med(q4) if q4 else 0.0,
        "q1_p90": p90(q1) if q1 else 0.0, "q4_p90": p90(q4) if q4 else 0.0,
        "rtf": res["asr"].decode_seconds / dur, "skipped": res["asr"].skipped_partials,
        "corrections": res["asr"].corrections, "speculative": res["asr"].speculative_finals,
        "finals": finals, "rss": dict(col.rss), "n_utt": len(by_utt),
        "segments": [(e.start_sample, e.end_sample, t) for t, e in col.vad if e.kind is SpeechEventKind.SPEECH_END],
        "captured": col.captured,
    }


def reference(model: str, audio: np.ndarray, segments: list[tuple[int, int, int]],
              captured: Any) -> dict[str, Any]:
    from faster_whisper import WhisperModel

    path = resolve_model(model).path
    fw = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=2)
    fw.transcribe(np.zeros(RATE, np.float32), beam_size=1, language="en")   # warm up
    lat, texts, cost = [], [], 0.0  # texts: (start sample, text)
    for a, b, arrived in segments:
        t0 = time.perf_counter()
        segs, _ = fw.transcribe(audio[a:b], beam_size=1, language="en", condition_on_previous_text=False)
        text = " ".join(s.text.strip() for s in segs)
        dt = time.perf_counter() - t0
        cost += dt
        texts.append((a, text))
        lat.append((arrived - captured(b)) / 1e9 + dt)
    return {"final": lat, "finals": texts, "cost": cost}



def offline(model: str, audio: np.ndarray, spans: list[tuple[int, int]], beam: int) -> dict[str, Any]:
    """faster-whisper's own ``transcribe()`` on each whole original clip (its default settings, same beam):
    the accuracy the streamed finals are held to."""
    from faster_whisper import WhisperModel

    fw = WhisperModel(str(resolve_model(model).path), device="cpu", compute_type="int8", cpu_threads=2)
    texts, cost = [], 0.0
    for a, b in spans:
        t0 = time.perf_counter()
        segs, _ = fw.transcribe(audio[a:b], beam_size=beam, language="en")
        texts.append((a, " ".join(s.text.strip() for s in segs)))
        cost += time.perf_counter() - t0
    return {"finals": texts, "cost": cost}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def padding_study(model: str) -> None:
    from kikimimi.models.asr.whisper_ct2 import WhisperConfig, WhisperCT2, WhisperRequest
    from kikimimi.models.frontend import whisper_log10_mel

    with (DATA / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if "librispeech" in r["path"]]
    for label, pad, mn, bucket in (("30 s (faster-whisper)", 2700, 3000, 1),
                                   ("+3 s, >= 10 s, 1 s buckets (ours)", 300, 1000, 100),
                                   ("+3 s, >= 10 s, no buckets", 300, 1000, 1), ("+1 s, no minimum", 100, 0, 1)):
        rec = WhisperCT2(WhisperConfig(model, threads=2, pad_ms=pad * 10, min_window_ms=mn * 10, bucket_ms=bucket * 10))
        rec.warmup()
        err, cost = ErrorCount(), 0.0
        for r in rows:
            mel = whisper_log10_mel(load(DATA / r["path"]), rec.n_bins)
            req = WhisperRequest(None, True, mel, [], [], "en", False, 448, "final")  # type: ignore[arg-type]
            t0 = time.perf_counter()
            out = rec.decode([req])[0]
            cost += time.perf_counter() - t0
            err += wer(r["reference"], rec.decode_text(out.tokens))
        print(f"  padding {label:34s}: WER {err.rate:6.2%}  decode time {cost:6.1f} s for {len(rows)} clips")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 clips (~40 s of audio)")
    ap.add_argument("--long", action="store_true", help="10 minutes of audio (lag and memory over time)")
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("--padding", action="store_true", help="also run the padding study")
    ap.add_argument("--no-reference", action="store_true", help="skip faster-whisper's transcribe() reference")
    ap.add_argument("--show", action="store_true", help="print the final texts")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an asr node parameter, e.g. whisper.final_window_ms=20000 (repeatable)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    minutes = 10.0 if args.long else 0.0
    settings = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    audio, refs, spans = program(minutes, args.quick)
    duration = len(audio) / RATE
    print(f"audio: {duration:.0f} s ({'long' if args.long else 'quick' if args.quick else 'short'} program), "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "program.wav"
        sf.write(str(wav), audio, RATE, subtype="PCM_16")
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            print(f"\n== {model} (cpu int8, beam 1{''.join(f'; {k}={v}' for k, v in settings.items())})")
            a = analyse(stream(model, wav, duration, settings))
            rss = a["rss"]
            first_min = rss.get(1, rss.get(0, float("nan")))
            last_min = rss[max(rss)] if rss else float("nan")
            s_wer, s_jfk = scored(a["finals"], refs, spans)
            print(f"  utterances {a['n_utt']}; first partial median {med(a['first']):.2f} s "
                  f"(p90 {p90(a['first']):.2f}); final median {med(a['final']):.2f} s (p90 {p90(a['final']):.2f}), "
                  f"of which "
                  f"the VAD's SPEECH_END came after median {med(a['vad_wait']):.2f} s (p90 {p90(a['vad_wait']):.2f})")
            print(f"  RTF {a['rtf']:.2f}; max lag first quarter {a['q1_lag']:.2f} s, last quarter {a['q4_lag']:.2f} s "
                  f"(median {a['q1_med']:.2f} -> {a['q4_med']:.2f} s, p90 {a['q1_p90']:.2f} -> {a['q4_p90']:.2f} s); "
                  f"partials skipped for lag {a['skipped']}; finals that corrected committed text {a['corrections']}; "
                  f"finals decoded ahead and used {a['speculative'][0]}, decoded ahead for nothing "
                  f"(speech resumed) {a['speculative'][1]}")
            print(f"  RSS after 1 min {first_min:.0f} MB, at the end ({max(rss) if rss else 0} min) {last_min:.0f} MB")
            print(f"  WER over the LibriSpeech clips {s_wer.rate:.2%} ({s_wer.length} words); JFK exact (up to case "
                  f"and punctuation): {s_jfk}")
            if args.show:
                print(f"  text: {join_text([t for _, t in sorted(a['finals'])], 'en')}")
            if not args.no_reference:
                o = offline(model, audio, spans, BEAM)
                o_wer, _ = scored(o["finals"], refs, spans)
                print(f"  offline: faster-whisper transcribe() on each whole clip (beam {BEAM}): WER {o_wer.rate:.2%}; "
                      f"streamed finals {s_wer.rate:.2%}: penalty {100 * (s_wer.rate - o_wer.rate):+.2f} points "
                      f"(target <= +1.00: {verdict(s_wer.rate - o_wer.rate <= 0.01)})")
                r = reference(model, audio, a["segments"], a["captured"])
                r_wer, r_jfk = scored(r["finals"], refs, spans)
                print(f"  reference faster-whisper transcribe() per utterance: final median {med(r['final']):.2f} s "
                      f"(p90 {p90(r['final']):.2f}); RTF {r['cost'] / duration:.2f}; WER {r_wer.rate:.2%}; "
                      f"JFK exact: {r_jfk}")
                if args.show:
                    print(f"  text: {join_text([t for _, t in sorted(r['finals'])], 'en')}")
            t = TARGETS.get(model, {})
            keeps = a["rtf"] < 1.0 and a["q4_p90"] <= a["q1_p90"] + 0.5
            print(f"  target keeps up with bounded lag: {verdict(keeps)}")
            if t.get("final") is not None:
                print(f"  target final median <= {t['final']} s: {verdict(med(a['final']) <= t['final'])}")
            if t.get("first") is not None:
                print(f"  target first partial median <= {t['first']} s: {verdict(med(a['first']) <= t['first'])}")
            if args.long:
                print(f"  target memory flat 1 -> 10 min (< 50 MB growth): {verdict(last_min - first_min < 50)}")
            if args.padding:
                padding_study(model)


if __name__ == "__main__":
    main()
