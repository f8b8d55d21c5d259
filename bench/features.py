"""Cost of the numba feature front ends against faster-whisper, librosa (and torchaudio where it imports).

Single thread (NUMBA/OMP/MKL/OPENBLAS threads = 1, set before numpy is imported), on real speech:
every LibriSpeech clip in ../shared/data plus the FLEURS and AMI clips, repeated to at least
--minutes minutes, 16 kHz mono float32.

Whole signal, seconds of compute per hour of audio (best of --repeat):
  (a) ours: whisper_log10_mel + whisper_normalize (80 mels, normalized like Whisper)
  (b) faster-whisper's FeatureExtractor(80) (numpy; normalized)
  (c) librosa.feature.melspectrogram (n_fft 400, hop 160, 80 Slaney mels, reflect padding) + log10
  (d) ours: kaldi_fbank (80 bins) and, where it imports, torchaudio.compliance.kaldi.fbank
Streaming, 20 ms chunks (320 samples), each call timed (median, p99; timer overhead included):
  WhisperMelStream.accept; the streaming contract, FrontEndStream.accept (int16 chunk on the sample clock
  in: conversion, clock bookkeeping, result); FeatureNode.on_message, driven by kikimimi.engine.testing
  (the same plus the Features message and emit to a list); accept on 100 ms chunks for comparison.
Re-extraction baseline: faster-whisper's extractor on the last 10 s, once per second of audio, as a
recognizer without a streaming front end would do; against our streaming total per hour (every
accept, plus normalizing a 10 s window once per second so that both give the same decoder input).

Targets: (a) >= 1.5x faster than (b) and no slower than (c); streaming median <= 20 µs per 20 ms
chunk; >= 10x less work per hour than the 10 s re-extraction.

Run:  .venv/bin/python bench/features.py  [--minutes M] [--repeat R]
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from kikimimi.engine.msgs.audio import AudioChunk  # noqa: E402
from kikimimi.engine.testing import NodeHarness, header  # noqa: E402
from kikimimi.models.frontend import (  # noqa: E402
    FeatureFrontEnd,
    FrontEndConfig,
    WhisperMelStream,
    kaldi_fbank,
    warmup,
    whisper_log10_mel,
    whisper_normalize,
)
from kikimimi.nodes.features import FeatureNode  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RATE = 16_000
CHUNK = 320
WINDOW_S = 10
CHUNK_TARGET_US = 20.0
WHOLE_VS_FW = 1.5
REEXTRACT_RATIO = 10.0


def load_audio(minutes: float) -> np.ndarray:
    """Real 16 kHz speech: every LibriSpeech clip, FLEURS, AMI, repeated to at least ``minutes``."""
    paths = sorted((DATA / "en/librispeech").glob("*/*.flac"))
    paths += [DATA / "ja/fleurs/fleurs_ja_1837.wav", *sorted((DATA / "diarization/ami").glob("*.wav"))]
    parts = []
    for p in paths:
        x, sr = sf.read(str(p), dtype="float32", always_2d=True)
        if sr == RATE:
            parts.append(x.mean(axis=1, dtype=np.float32))
    if not parts:
        raise SystemExit(f"no 16 kHz recordings found under {DATA}")
    x = np.concatenate(parts)
    reps = int(np.ceil(minutes * 60 * RATE / x.shape[0]))
    return np.ascontiguousarray(np.tile(x, reps))


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """Shortest wall time of ``repeat`` calls (after one untimed warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def per_call_us(fn: Callable[[np.ndarray], object], x: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """µs of each call of ``fn`` on consecutive chunks of ``chunk`` samples of ``x``."""
    n = x.shape[0] // chunk
    out = np.empty(n)
    clock = time.perf_counter_ns
    for i in range(n):
        c = x[i * chunk:(i + 1) * chunk]
        t0 = clock()
        fn(c)
        out[i] = clock() - t0
    return out / 1000.0


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=12.0, help="minutes of audio (real clips, repeated)")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions of each whole-signal run")
    args = ap.parse_args()

    import librosa
    from faster_whisper.feature_extractor import FeatureExtractor

    x = load_audio(args.minutes)
    hours = x.shape[0] / RATE / 3600
    print(f"audio: {x.shape[0] / RATE / 60:.1f} min of real speech at 16 kHz; single thread; "
          f"python {platform.python_version()}, numpy {np.__version__}, librosa {librosa.__version__}, "
          f"{platform.machine()}")
    warmup()

    # ---------------------------------------------------------------- whole signal
    fx = FeatureExtractor(feature_size=80)

    def ours_whisper() -> None:
        m = whisper_log10_mel(x, 80)
        whisper_normalize(m, out=m)

    def librosa_mel() -> None:
        s = librosa.feature.melspectrogram(y=x, sr=RATE, n_fft=400, hop_length=160, n_mels=80, power=2.0,
                                           center=True, pad_mode="reflect")
        np.log10(np.maximum(s, 1e-10))

    whole: dict[str, float] = {
        "(a) ours whisper_log10_mel + normalize": best_of(args.repeat, ours_whisper) / hours,
        "(b) faster-whisper FeatureExtractor": best_of(args.repeat, lambda: fx(x)) / hours,
        "(c) librosa melspectrogram + log10": best_of(args.repeat, librosa_mel) / hours,
        "(d) ours kaldi_fbank": best_of(args.repeat, lambda: kaldi_fbank(x * np.float32(32768.0))) / hours,
    }
    try:
        import torch
        import torchaudio.compliance.kaldi as ta_kaldi
    except ImportError:
        ta_note = "(d) torchaudio kaldi fbank: torchaudio does not import here; not measured"
    else:
        torch.set_num_threads(1)
        wav = torch.from_numpy(x * np.float32(32768.0))[None]
        whole["(d) torchaudio kaldi fbank"] = best_of(args.repeat, lambda: ta_kaldi.fbank(wav, dither=0.0)) / hours
        ta_note = ""
    print(f"\nwhole signal, s of compute per hour of audio (best of {args.repeat})")
    for name, s in whole.items():
        print(f"  {name:<42} {s:8.3f}")
    if ta_note:
        print(f"  {ta_note}")
    a, b, c = (whole[k] for k in list(whole)[:3])
    print(f"  faster-whisper / ours = {b / a:.2f}x   librosa / ours = {c / a:.2f}x")
    if "(d) torchaudio kaldi fbank" in whole:
        ta_ratio = whole["(d) torchaudio kaldi fbank"] / whole["(d) ours kaldi_fbank"]
        print(f"  torchaudio kaldi / ours kaldi = {ta_ratio:.2f}x")

    # ---------------------------------------------------------------- streaming
    stream = WhisperMelStream()
    acc = per_call_us(stream.accept, x)
    stream.flush()
    stream100 = WhisperMelStream()
    acc100 = per_call_us(stream100.accept, x, CHUNK * 5)
    pcm = (x * np.float32(32767.0)).astype(np.int16)[:, None]
    chunks = [AudioChunk(header("s", i * CHUNK, i, source="src"), pcm[i * CHUNK:(i + 1) * CHUNK], RATE)
              for i in range(pcm.shape[0] // CHUNK)]
    front_end = FeatureFrontEnd(FrontEndConfig())
    front_end.warmup()
    contract = front_end.new_stream()
    it = iter(chunks)

    def accept_chunk(_: np.ndarray) -> None:
        c = next(it)
        contract.accept(c.samples, c.header.sample_index)

    contract_us = per_call_us(accept_chunk, x)
    contract.flush()
    harness = NodeHarness(FeatureNode("feat", {}))          # bound to a list, clock manual, started
    it = iter(chunks)
    msg_us = per_call_us(lambda _: harness.node.on_message("audio", next(it)), x)
    harness.stop()
    print("\nstreaming, µs per call (each call timed)")
    print(f"  {'':<46} {'median':>8} {'p99':>8} {'mean':>8}")
    for name, t in (("WhisperMelStream.accept, 20 ms chunks", acc), ("FrontEndStream.accept, 20 ms int16 chunks",
                    contract_us), ("FeatureNode.on_message, 20 ms chunks", msg_us),
                    ("WhisperMelStream.accept, 100 ms chunks", acc100)):
        print(f"  {name:<46} {np.median(t):8.2f} {np.percentile(t, 99):8.2f} {t.mean():8.2f}")

    # ---------------------------------------------------------------- re-extraction baseline
    win = WINDOW_S * RATE
    starts = range(win, x.shape[0], RATE * 5)[:120]     # 120 windows sampled over the audio
    t0 = time.perf_counter()
    for s in starts:
        fx(x[s - win:s])
    per_window = (time.perf_counter() - t0) / len(starts)
    reextract_per_hour = per_window * 3600
    window = whisper_log10_mel(x[:win])
    norm_s = best_of(args.repeat, lambda: whisper_normalize(window)) * 3600
    stream_per_hour = acc.sum() / 1e6 / hours
    ours_total = stream_per_hour + norm_s
    ratio = reextract_per_hour / ours_total
    ratio100 = reextract_per_hour / (acc100.sum() / 1e6 / hours + norm_s)
    print(f"\nper hour of audio: faster-whisper on a {WINDOW_S} s window once a second: {reextract_per_hour:.2f} s "
          f"({per_window * 1e3:.2f} ms a window)")
    print(f"  ours, 20 ms chunks: accept {stream_per_hour:.3f} s + normalizing a {WINDOW_S} s window once a second "
          f"{norm_s:.3f} s = {ours_total:.3f} s  -> {ratio:.1f}x less work")
    print(f"  (100 ms chunks: accept {acc100.sum() / 1e6 / hours:.3f} s + {norm_s:.3f} s -> {ratio100:.1f}x less work; "
          f"whole-signal compute alone: {a:.3f} s)")

    # ---------------------------------------------------------------- verdicts
    checks = [
        (f"whole signal >= {WHOLE_VS_FW}x faster than faster-whisper ({b / a:.2f}x)", b / a >= WHOLE_VS_FW),
        (f"whole signal at least as fast as librosa ({c / a:.2f}x)", a <= c),
        (f"streaming median <= {CHUNK_TARGET_US:.0f} µs per 20 ms chunk, accept ({np.median(acc):.2f} µs)",
         float(np.median(acc)) <= CHUNK_TARGET_US),
        (f"streaming median <= {CHUNK_TARGET_US:.0f} µs per 20 ms chunk, contract ({np.median(contract_us):.2f} µs)",
         float(np.median(contract_us)) <= CHUNK_TARGET_US),
        (f"streaming median <= {CHUNK_TARGET_US:.0f} µs per 20 ms chunk, node ({np.median(msg_us):.2f} µs)",
         float(np.median(msg_us)) <= CHUNK_TARGET_US),
        (f">= {REEXTRACT_RATIO:.0f}x less work than 10 s re-extraction once a second ({ratio:.1f}x)",
         ratio >= REEXTRACT_RATIO),
    ]
    print()
    for text, ok in checks:
        print(f"  {verdict(ok)}  {text}")
    print(f"\noverall: {verdict(all(ok for _, ok in checks))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
