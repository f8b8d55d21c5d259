"""Cost and accuracy of the two-stage VAD (``vad`` node) against its stages alone, on the AMI meeting mixes.

Data: ../shared/data/diarization/ami/dev00.wav and dev01.wav (30 s each, 16 kHz) with their RTTM speaker
turns; the reference labelling is the union of all speakers' turns at 10 ms frames (models.evaluation).

Figures (single thread: onnxruntime intra-op 1, OMP/MKL/numba 1; CPU time from time.process_time, the
least of --repeats runs):

* µs per 30 ms of audio: webrtcvad alone (mode 3 on 30 ms frames, and on the VAD's 10 ms frames),
  Silero alone (SileroVad.step on one 512-sample window, scaled by 30/32), and the VAD model the node
  runs (kikimimi.models.vad, VadStream.feed with 20 ms int16 chunks): two-stage, Silero-only (gate off),
  webrtcvad-only (neural off).
* the VAD's total CPU time on both mixes against Silero alone over the same audio (every window of
  both mixes through SileroVad.step), as a ratio of the least times, and the median of the ratios of
  back-to-back pairs (robust to a noisy machine); also with the two mixes as two interleaved streams
  (the model batches their windows into one Silero call).
* frame F1 / precision / recall of each on both mixes (pooled), with an "everything is speech"
  baseline, and with --design a table of the gate's design choices (webrtcvad mode and frame, gate
  hangover, lead-in, warm-up).

Targets: two-stage F1 >= 0.85 and >= the better single stage; two-stage CPU < Silero alone.

Run:  .venv/bin/python bench/vad.py  [--repeats N] [--design]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import soundfile as sf  # noqa: E402
import webrtcvad  # noqa: E402

from kikimimi.engine.msgs.speech import SpeechEventKind  # noqa: E402
from kikimimi.models.evaluation import (  # noqa: E402
    SpeechScores,
    n_frames_for,
    read_rttm,
    rttm_frames,
    segments_to_frames,
    speech_scores,
)
from kikimimi.models.pcm import float_to_int16  # noqa: E402
from kikimimi.models.silero import SileroVad  # noqa: E402
from kikimimi.models.vad import VadConfig, VadDecision, VadModel, silero_session  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "diarization" / "ami"
MIXES = ("dev00", "dev01")
RATE = 16000
CHUNK = 320  # 20 ms
TARGET_F1 = 0.85


class Mix:
    """One AMI mix: int16 samples, its 20 ms chunks and its reference labelling."""

    def __init__(self, name: str) -> None:
        x, rate = sf.read(str(DATA / f"{name}.wav"), dtype="float32")
        if rate != RATE:
            raise SystemExit(f"{name}.wav is {rate} Hz; this benchmark expects {RATE}")
        self.name = name
        self.x = float_to_int16(x)
        self.chunks = [self.x[s:s + CHUNK] for s in range(0, self.x.shape[0], CHUNK)]
        self.ref = rttm_frames(read_rttm(DATA / f"{name}.rttm"), n_frames_for(self.x.shape[0] / RATE))


def cpu_min(fn: Callable[[], object], repeats: int) -> float:
    """Least CPU seconds of ``repeats`` calls of ``fn``."""
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


Decisions = dict[str, list[VadDecision]]


def run_vad(mixes: list[Mix], params: dict[str, object], interleave: bool = False
             ) -> tuple[VadModel, Decisions, float]:
    """Feed the mixes to one VAD model as one stream each (one after the other, or interleaved chunk by
    chunk), as the ``vad`` node does; returns the model, each mix's decisions and the CPU seconds. The
    model is built (and the shared Silero session loaded) before the clock starts."""
    model = VadModel(VadConfig.from_params(params))
    out: Decisions = {m.name: [] for m in mixes}
    t = time.process_time()
    streams = [model.new_stream(RATE, key=m.name) for m in mixes]
    if interleave:
        order = [(st, c) for group in itertools.zip_longest(*(m.chunks for m in mixes))
                 for st, c in zip(streams, group, strict=True) if c is not None]
    else:
        order = [(st, c) for st, m in zip(streams, mixes, strict=True) for c in m.chunks]
    for st, c in order:
        st.feed(c)
        for s, d in model.take_all():
            out[s.key].append(d)
    model.step()
    for s, d in model.take_all():
        out[s.key].append(d)
    for st in streams:
        out[st.key] += st.close()
    return model, out, time.process_time() - t


def vad_cpu(mixes: list[Mix], params: dict[str, object], repeats: int, interleave: bool = False) -> float:
    return min(run_vad(mixes, params, interleave)[2] for _ in range(repeats))


def paired_ratio(mixes: list[Mix], model: SileroVad, params: dict[str, object], repeats: int,
                 interleave: bool = False) -> float:
    """Median over ``repeats`` of (VAD CPU / Silero-alone CPU), each pair timed back to back."""
    ratios = []
    for _ in range(repeats):
        t = time.process_time()
        silero_alone(model, mixes)
        base = time.process_time() - t
        ratios.append(run_vad(mixes, params, interleave)[2] / base)
    return float(np.median(ratios))


def scores(mixes: list[Mix], decisions: Decisions) -> SpeechScores:
    total = SpeechScores(0, 0, 0, 0)
    for m in mixes:
        spans = [(d.start / RATE, d.end / RATE) for d in decisions[m.name] if d.kind is SpeechEventKind.SPEECH_END]
        total = total + speech_scores(m.ref, segments_to_frames(spans, m.ref.shape[0]))
    return total


def silero_alone(model: SileroVad, mixes: list[Mix]) -> None:
    """Silero on every whole window of every mix, one stream each, as silero-vad's own loop does."""
    for m in mixes:
        st = model.new_state()
        x = m.x.astype(np.float32) / 32768
        for k in range(0, x.shape[0] - 511, 512):
            model.step([st], x[None, k:k + 512])


def webrtc_alone(mixes: list[Mix], frame_ms: int, mode: int = 3) -> None:
    vad, n = webrtcvad.Vad(mode), RATE * frame_ms // 1000
    for m in mixes:
        data = m.x.tobytes()
        for i in range(0, len(data) - 2 * n + 1, 2 * n):
            vad.is_speech(data[i:i + 2 * n], RATE)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def design_table(mixes: list[Mix], repeats: int) -> None:
    """F1, Silero share and CPU of the gate's design choices (one changed from the defaults at a time)."""
    print("\ngate design choices (one parameter changed from the defaults at a time):")
    print(f"  {'variant':34s} {'F1':>7s} {'Silero windows':>15s} {'CPU ms':>7s}")
    variants: list[tuple[str, dict[str, object]]] = [("defaults", {})]
    variants += [(f"webrtc_mode={v}", {"webrtc_mode": v}) for v in (0, 1, 2)]
    variants += [(f"frame_ms={v}", {"frame_ms": v}) for v in (20, 30)]
    variants += [(f"gate_hangover_ms={v}", {"gate_hangover_ms": v}) for v in (0, 100, 200, 500)]
    variants += [(f"lead_in_windows={v}", {"lead_in_windows": v}) for v in (0, 2, 8)]
    variants += [("warmup_ms=0", {"warmup_ms": 0})]
    for name, params in variants:
        model, decisions, _ = run_vad(mixes, params)
        cpu = vad_cpu(mixes, params, repeats)
        print(f"  {name:34s} {scores(mixes, decisions).f1:7.4f} {model.windows_run / model.windows_decided:15.1%} "
              f"{cpu * 1e3:7.0f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per figure; the least CPU time is kept")
    ap.add_argument("--design", action="store_true", help="also print the gate design-choice table")
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"AMI mixes not found at {DATA}", file=sys.stderr)
        return 2
    print(f"python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, {os.cpu_count()} CPUs, "
          f"{platform.machine()}; single thread; CPU = least of {args.repeats} runs")
    mixes = [Mix(n) for n in MIXES]
    seconds = sum(m.x.shape[0] for m in mixes) / RATE
    per30 = 1e6 / (seconds / 0.030)  # CPU seconds -> µs per 30 ms of audio
    model = silero_session(1)  # the session the VAD model uses
    silero_alone(model, mixes[:1])  # warm up the session

    t_web30 = cpu_min(lambda: webrtc_alone(mixes, 30), args.repeats)
    t_web10 = cpu_min(lambda: webrtc_alone(mixes, 10), args.repeats)
    t_silero = cpu_min(lambda: silero_alone(model, mixes), args.repeats)
    n_windows = sum((m.x.shape[0] - 512) // 512 + 1 for m in mixes)
    configs = {"two-stage": {}, "Silero-only (gate off)": {"gate": False},
               "webrtcvad-only (neural off)": {"neural": False}}
    runs = {name: run_vad(mixes, p) for name, p in configs.items()}
    cpu = {name: vad_cpu(mixes, p, args.repeats) for name, p in configs.items()}
    cpu_batched = vad_cpu(mixes, {}, args.repeats, interleave=True)
    paired = {name: paired_ratio(mixes, model, p, args.repeats) for name, p in configs.items()}
    paired_batched = paired_ratio(mixes, model, {}, args.repeats, interleave=True)
    two_vad = runs["two-stage"][0]

    print(f"\naudio: AMI {' + '.join(MIXES)}, {seconds:.0f} s, 16 kHz; the VAD fed 20 ms int16 chunks")
    print("\nCPU per 30 ms of audio:")
    print(f"  webrtcvad mode 3, 30 ms frames        {t_web30 * per30:8.1f} µs")
    print(f"  webrtcvad mode 3, 10 ms frames        {t_web10 * per30:8.1f} µs  (the VAD's frames)")
    print(f"  Silero alone (512-sample windows)     {t_silero * per30:8.1f} µs  "
          f"({t_silero / n_windows * 1e6:.1f} µs per window)")
    for name in configs:
        print(f"  VAD: {name:33s} {cpu[name] * per30:8.1f} µs")
    print(f"\ntwo-stage VAD: Silero ran on {two_vad.windows_run} of {two_vad.windows_decided} windows "
          f"({two_vad.windows_run / two_vad.windows_decided:.1%}, lead-ins and warm-up included)")

    print("\ntotal CPU on both mixes (x Silero alone: ratio of least times / median of back-to-back pairs):")
    print(f"  Silero alone                          {t_silero * 1e3:7.1f} ms")
    for name in configs:
        print(f"  VAD: {name:33s} {cpu[name] * 1e3:7.1f} ms  ({cpu[name] / t_silero:.2f} / "
              f"{paired[name]:.2f} x Silero alone)")
    print(f"  VAD: two-stage, 2 interleaved streams  {cpu_batched * 1e3:6.1f} ms  ({cpu_batched / t_silero:.2f} / "
          f"{paired_batched:.2f} x Silero alone; windows of both streams batched)")

    everything = SpeechScores(0, 0, 0, 0)
    for m in mixes:
        everything = everything + speech_scores(m.ref, np.ones_like(m.ref))
    f1 = {name: scores(mixes, run[1]) for name, run in runs.items()}
    print("\nframe-level speech F1 against the RTTM (10 ms frames, both mixes pooled):")
    print(f"  {'everything is speech (baseline)':38s} F1 {everything.f1:.4f}  P {everything.precision:.3f}  "
          f"R {everything.recall:.3f}")
    for name, s in f1.items():
        print(f"  {name:38s} F1 {s.f1:.4f}  P {s.precision:.3f}  R {s.recall:.3f}")
    for mode in (0, 1, 2):  # for reference: the gentler modes mark most frames speech, as AMI mostly is
        s = scores(mixes, run_vad(mixes, {"neural": False, "webrtc_mode": mode})[1])
        print(f"  {f'webrtcvad-only, mode {mode}':38s} F1 {s.f1:.4f}  P {s.precision:.3f}  R {s.recall:.3f}")

    two = f1["two-stage"].f1
    best_single = max(f1["Silero-only (gate off)"].f1, f1["webrtcvad-only (neural off)"].f1)
    print("\ntargets:")
    print(f"  two-stage F1 {two:.4f} >= {TARGET_F1}                           {verdict(two >= TARGET_F1)}")
    print(f"  two-stage F1 {two:.4f} >= better single stage {best_single:.4f}    {verdict(two >= best_single)}")
    ratio = cpu["two-stage"] / t_silero
    print(f"  two-stage CPU {ratio:.2f} x Silero alone (least times, < 1)     {verdict(ratio < 1.0)}")
    ratio = paired["two-stage"]
    print(f"  two-stage CPU {ratio:.2f} x Silero alone (median of pairs, < 1) {verdict(ratio < 1.0)}")
    if args.design:
        design_table(mixes, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
