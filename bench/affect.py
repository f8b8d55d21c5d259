"""Voice affect: compute cost per second of audio, accuracy on held-out actors, and delay through the graph.

1. Compute: the voice model (Whisper encoder states of an utterance -> head) on the speech of the RAVDESS clips
   of actors 17-20 (never in the bundled heads' training), batch 1 and 8, for base and tiny.en: seconds of
   compute per second of audio, and the unweighted accuracy over the 8 classes. Beside it, in the same run, the
   prosodic arousal (numba pitch + loudness; no classifier) on the same clips: its cost, and how well each
   separates high-arousal (angry, happy, surprised, fearful) from low-arousal (sad, calm, neutral) clips (AUC).
   No speech-emotion model a user might otherwise pick installs here (emotion2vec, SpeechBrain and SenseVoice
   download their weights at run time), so there is no outside reference to compare against.
2. Delay: the default graph (file at real time -> VAD + features -> asr + speaker + affect -> fusion) on ~8
   RAVDESS clips joined with 1.5 s pauses: per utterance, when the final Affect arrives after the end of its
   speech was captured, and after the transcript's final (negative: the affect was there first).

Target: the final Affect no later than 100 ms after the transcript's final (median and p90).

Run:  .venv/bin/python bench/affect.py [--quick]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from common import NS_PER_S, CaptureClock, med, p90

from kikimimi.engine.messages import Message
from kikimimi.engine.msgs.affect import Affect
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.fused import LabeledTranscript
from kikimimi.launch.cli import apply_overrides, resolve_graph
from kikimimi.models.affect.labels import RAVDESS_CLASSES, arousal_valence
from kikimimi.models.affect.prosody import prosodic_arousal
from kikimimi.models.affect.train import speech_span
from kikimimi.models.affect.voice import VoiceAffectConfig, VoiceAffectModel
from kikimimi.models.frontend import whisper_log10_mel
from kikimimi.models.speaker.files import load_audio

RATE = 16000
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HELD_OUT = ("17", "18", "19", "20")
HIGH = ("angry", "happy", "surprised", "fearful")


def clips(actors: tuple[str, ...]) -> list[tuple[Path, str]]:
    rows = csv.DictReader((DATA / "emotion/ravdess/labels.tsv").open(encoding="utf-8"), delimiter="\t")
    return [(DATA / r["path"], r["emotion"]) for r in rows if r["actor"] in actors]


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a positive item scores above a negative one (ties count half)."""
    pos, neg = scores[positive], scores[~positive]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def compute(quick: bool) -> None:
    items = clips(HELD_OUT)[:: 4 if quick else 1]
    audio = [speech_span(load_audio(p)) for p, _ in items]
    seconds = sum(len(a) for a in audio) / RATE
    mels = [whisper_log10_mel(a) for a in audio]
    y = np.array([RAVDESS_CLASSES.index(e) for _, e in items])
    high = np.isin(np.array([e for _, e in items]), HIGH)
    print(f"== compute: {len(items)} clips of actors {','.join(HELD_OUT)}, {seconds:.1f} s of speech")
    for model in ("tiny.en", "base"):
        m = VoiceAffectModel(VoiceAffectConfig(model))
        m.estimate(mels[:1])
        for batch in (1, 8):
            t0 = time.perf_counter()
            probs = np.concatenate([m.estimate(mels[i:i + batch]) for i in range(0, len(mels), batch)])
            cost = time.perf_counter() - t0
            ua = np.mean([np.mean(probs.argmax(1)[y == c] == c) for c in range(8)])
            arousal = np.array([arousal_valence(RAVDESS_CLASSES, p)[0] for p in probs])
            print(f"voice {model:8s} batch {batch}: {cost / seconds * 1000:6.1f} ms per s of audio "
                  f"({cost / len(mels) * 1000:.0f} ms per clip); unweighted accuracy 8 classes {ua:.3f}; "
                  f"arousal AUC high vs low {auc(arousal, high):.3f}")
    t0 = time.perf_counter()
    pa = np.array([prosodic_arousal(a, RATE) for a in audio])
    cost = time.perf_counter() - t0
    print(f"prosody only      : {cost / seconds * 1000:6.1f} ms per s of audio; arousal AUC high vs low "
          f"{auc(pa, high):.3f} (no baseline)")


class _Taps:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.capture = CaptureClock(RATE)
        self.affect: list[tuple[int, Affect]] = []
        self.finals: list[tuple[int, LabeledTranscript]] = []

    def audio(self, m: Message) -> None:
        if isinstance(m, AudioChunk):
            with self.lock:
                self.capture.observe(m)

    def on_affect(self, m: Message) -> None:
        if isinstance(m, Affect) and m.final:
            with self.lock:
                self.affect.append((time.monotonic_ns(), m))

    def on_transcript(self, m: Message) -> None:
        if isinstance(m, LabeledTranscript) and m.final:
            with self.lock:
                self.finals.append((time.monotonic_ns(), m))


def delay(quick: bool) -> None:
    from kikimimi.engine.runner import Runner

    items = [c for c in clips(("19", "20")) if c[1] in ("angry", "sad", "happy", "neutral")][:: 4 if quick else 2]
    gap = np.zeros(int(1.5 * RATE), np.float32)
    audio = np.concatenate([x for p, _ in items for x in (load_audio(p), gap)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "program.wav"
        sf.write(str(path), audio, RATE)
        spec = apply_overrides(resolve_graph("default"), str(path), None, 1.0, "inproc")
        spec = spec.without_nodes(spec.sinks())
        runner = Runner(spec)
        taps = _Taps()
        runner.tap("source.audio", taps.audio)
        runner.tap("affect.affect", taps.on_affect)
        runner.tap("fusion.transcripts", taps.on_transcript)
        runner.run()
    after_speech, after_final = [], []
    for t_ns, f in taps.finals:
        own = [(t, a) for t, a in taps.affect if a.start_sample < f.end_sample and a.end_sample > f.start_sample]
        if not own:
            continue
        last = max(t for t, _ in own)
        end = max(a.end_sample for _, a in own)
        after_speech.append((last - taps.capture.captured(end)) / NS_PER_S)
        after_final.append((last - t_ns) / NS_PER_S)
    print(f"== delay: {len(items)} clips at real time, {len(audio) / RATE:.1f} s; {len(taps.finals)} finals, "
          f"{len(taps.affect)} final affects")
    print(f"final Affect after the end of its speech: median {med(after_speech):.3f} s, p90 {p90(after_speech):.3f} s")
    print(f"final Affect after the transcript's final: median {med(after_final):+.3f} s, p90 {p90(after_final):+.3f} s "
          f"(target <= +0.100: {'PASS' if p90(after_final) <= 0.1 else 'MISS'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a quarter of the clips")
    args = ap.parse_args()
    compute(args.quick)
    delay(args.quick)


if __name__ == "__main__":
    main()
