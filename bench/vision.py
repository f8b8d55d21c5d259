"""Vision front end speed per frame, and end-to-end latency of the audio-visual graph (launch/av.yaml).

Part 1, per frame on ONE core (the process is pinned to one CPU, OpenCV and dlib single-threaded),
over every frame of the 7 GRID clips in ../shared/data/av/grid (360x288, 25 fps):

* each stage alone: grayscale conversion, Haar face detection (our detector: frame shrunk to a 360
  pixel longer side), dlib 68-point landmarks, aligned 96x96 mouth crop + aperture;
* the front end as the graph runs it (detect every 5 frames, landmarks every frame): ms per frame
  and frames per second, against the target of 25 fps for one face on one core;
* reference, same run: dlib's HOG frontal face detector (``dlib.get_frontal_face_detector()``, what
  face_recognition and most dlib landmark tutorials use) on the same frames, as a ratio to our
  detection + landmarks per frame.

Part 2, the AV graph paced in real time (``file_source`` speed 1, like a live camera and microphone)
on GRID clips: a collector node records when each message arrives and reports

* faces latency: capture time of a frame -> its Faces message out of the vision node;
* active-speaker latency: capture time of the window's last sample -> its ActiveSpeaker message;
* final latency: capture time of the utterance's last sample -> the fused final transcript (face
  id attached), and the transcripts themselves;

once as the graph file is (Whisper tiny.en) and once with the GRID grammar on pocketsphinx.

Part 3, active speaker with a second talker in the room: each GRID clip's audio mixed with LibriSpeech
speech of another talker at 20, 10, 5 and 0 dB SNR (over the GRID speech); for the 42 ordered (video,
audio) pairs, how often the face still scores higher with its own (mixed) audio than with another clip's.

Run:  .venv/bin/python bench/vision.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import CaptureClock, med, p90

from kikimimi.engine.graph import load_graph
from kikimimi.engine.messages import Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.speech import Transcript
from kikimimi.engine.msgs.vision import ActiveSpeaker, Faces
from kikimimi.engine.node import Node, PortSpec
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.registry import register
from kikimimi.engine.runner import Runner

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
GRID = DATA / "av" / "grid"
RATE = 16000
TARGET_FPS = 25.0



def frames_of(paths: list[Path]) -> list[np.ndarray]:
    from kikimimi.models.vision.clip import read_audio_video

    out: list[np.ndarray] = []
    for p in paths:
        out.extend(read_audio_video(p)[1])
    return out


def per_frame(frames: list[np.ndarray]) -> None:
    import cv2
    import dlib

    from kikimimi.models.vision.detect import HaarFaceDetector
    from kikimimi.models.vision.frontend import VisionFrontEnd, to_gray
    from kikimimi.models.vision.landmarks import LandmarkPredictor, lip_aperture
    from kikimimi.models.vision.mouth import MouthCropper

    cv2.setNumThreads(1)
    det, pred, crop = HaarFaceDetector(), LandmarkPredictor(), MouthCropper()
    grays = [to_gray(f, "bgr24") for f in frames]
    n = len(frames)

    def stage(fn: Any, items: list[Any]) -> tuple[float, list[Any]]:
        out = [fn(x) for x in items[:10]]        # warm-up
        t = time.perf_counter()
        out = [fn(x) for x in items]
        return 1e3 * (time.perf_counter() - t) / len(items), out

    t_gray, _ = stage(lambda f: to_gray(f, "bgr24"), frames)
    t_det, boxes = stage(det, grays)
    found = sum(len(b) > 0 for b in boxes)
    pairs = [(g, b[0]) for g, b in zip(grays, boxes, strict=True) if len(b)]
    t_lm, lms = stage(lambda gb: pred.predict(gb[0], gb[1]), pairs)
    t_crop, _ = stage(lambda gl: (crop.crop(gl[0], gl[1]), lip_aperture(gl[1])),
                      [(g, lm) for (g, _), lm in zip(pairs, lms, strict=True)])
    print(f"frames: {n} (7 GRID clips, {frames[0].shape[1]}x{frames[0].shape[0]}); Haar found a face in {found}")
    print(f"  grayscale          {t_gray:7.3f} ms/frame")
    print(f"  Haar detection     {t_det:7.3f} ms/frame (every frame)")
    print(f"  dlib 68 landmarks  {t_lm:7.3f} ms/face")
    print(f"  mouth crop+aperture{t_crop:7.3f} ms/face")
    fe = VisionFrontEnd(detect_every=5)
    for f in frames[:10]:
        fe.process(f)
    fe = VisionFrontEnd(detect_every=5)
    t = time.perf_counter()
    for f in frames:
        fe.process(f)
    ms = 1e3 * (time.perf_counter() - t) / n
    fps = 1e3 / ms
    print(f"  front end as the graph runs it (detect every 5, landmarks + crop every frame): {ms:.3f} ms/frame = "
          f"{fps:.0f} fps on one core; target {TARGET_FPS:.0f} fps: {'PASS' if fps >= TARGET_FPS else 'MISS'}")
    every = VisionFrontEnd(detect_every=1)
    t = time.perf_counter()
    for f in frames:
        every.process(f)
    ms1 = 1e3 * (time.perf_counter() - t) / n
    print(f"  front end detecting on every frame: {ms1:.3f} ms/frame = {1e3 / ms1:.0f} fps")
    hog = dlib.get_frontal_face_detector()
    t_hog, hb = stage(lambda g: hog(g, 0), grays[: max(50, n // 3)])
    print(f"  reference: dlib HOG face detector {t_hog:.3f} ms/frame (found a face in {sum(len(b) > 0 for b in hb)}"
          f" of {len(hb)}); ours detection+landmarks per frame as the graph runs = {ms:.3f} ms: "
          f"ratio ours/HOG {ms / t_hog:.2f}; Haar alone / HOG {t_det / t_hog:.2f}")


class AvCollector(Node):
    """Records (arrival ns, message) for faces, active-speaker windows, transcripts; audio fixes the clock."""

    kind = "bench_av_collector"
    inputs = (
        PortSpec("faces", (Faces,), queue=QueueConfig.make("block", 8192)),
        PortSpec("active", (ActiveSpeaker,), queue=QueueConfig.make("block", 8192)),
        PortSpec("transcripts", (Transcript,), queue=QueueConfig.make("block", 8192)),
        PortSpec("audio", (AudioChunk,), queue=QueueConfig.make("block", 8192)),
    )

    def __init__(self, name: str, params: Any = None, clock: Any = None) -> None:
        super().__init__(name, params, clock)
        self.got: list[tuple[int, Message]] = []
        self.clock_map = CaptureClock(RATE)

    def on_message(self, port: str, msg: Message) -> None:
        now = self.clock.now_ns()
        if isinstance(msg, AudioChunk):
            self.clock_map.observe(msg)
        else:
            self.got.append((now, msg))

    def captured(self, sample: int) -> int:
        return self.clock_map.captured(sample)


register(AvCollector)


def graph_latency(paths: list[Path], settings: list[str]) -> None:
    faces_lat: list[float] = []
    act_lat: list[float] = []
    fin_lat: list[float] = []
    for path in paths:
        from kikimimi.launch.cli import apply_settings

        spec = apply_settings(load_graph(ROOT / "launch" / "av.yaml"), settings)
        spec = spec.with_node("source", "file_source", {"path": str(path), "video": True, "speed": 1.0,
                                                        "sample_rate": RATE, "chunk_ms": 20})
        spec = spec.with_extra_node("collect", "bench_av_collector", {}, {
            "faces": {"from": "vision.faces", "policy": "block", "capacity": 8192},
            "active": {"from": "active.active", "policy": "block", "capacity": 8192},
            "transcripts": {"from": "fusion.transcripts", "policy": "block", "capacity": 8192},
            "audio": {"from": "source.audio", "policy": "block", "capacity": 8192}})
        runner = Runner(spec)
        runner.run()
        col: AvCollector = runner.drivers["collect"].node  # type: ignore[assignment]
        for t, m in col.got:
            if isinstance(m, Faces):
                faces_lat.append((t - m.header.t_ns) / 1e6)
            elif isinstance(m, ActiveSpeaker):
                act_lat.append((t - col.captured(m.end_sample)) / 1e6)
            elif isinstance(m, Transcript) and m.final:
                fin_lat.append((t - col.captured(m.end_sample)) / 1e6)
                print(f"  {path.name}: final {m.start_sample / RATE:.2f}-{m.end_sample / RATE:.2f} s face {m.face_id} "
                      f"({m.face_score:.2f}) {m.committed.strip()!r} after {fin_lat[-1]:.0f} ms")
    print(f"  faces latency (capture -> Faces): median {med(faces_lat):.1f} ms, p90 {p90(faces_lat):.1f}, "
          f"max {max(faces_lat, default=float('nan')):.1f} ({len(faces_lat)} frames)")
    print(f"  active-speaker latency (window end captured -> ActiveSpeaker): median {med(act_lat):.1f} ms, "
          f"p90 {p90(act_lat):.1f} ({len(act_lat)} windows)")
    print(f"  final latency (end of utterance captured -> fused final): median {med(fin_lat):.0f} ms, "
          f"p90 {p90(fin_lat):.0f} ({len(fin_lat)} finals)")


def clip_score(lips: np.ndarray, audio: np.ndarray, frame_samples: np.ndarray) -> float:
    """Mean online window probability over the frames whose window shows speech (as the GRID test scores)."""
    from kikimimi.models.vision.active import SyncScorer

    sc = SyncScorer(RATE)
    pos, probs = 0, []
    for s, lip in zip(frame_samples, lips, strict=True):
        while not sc.ready(int(s)) and pos < len(audio):
            sc.push_audio(audio[pos:pos + 320], pos)
            pos += 320
        r = sc.push_frame(int(s), float(lip))
        if r.weight > 0:
            probs.append(r.probability)
    return float(np.mean(probs)) if probs else 0.5


def noise_study(paths: list[Path]) -> None:
    """Active speaker with another talker in the room: each GRID clip's audio mixed with LibriSpeech speech
    (a different talker, like a TV or a person off camera) at several SNRs; for every ordered pair (video B,
    audio A) the mismatched score must stay below B with its own (mixed) audio."""
    import soundfile as sf
    import soxr

    from kikimimi.models.vision.active import lip_signals
    from kikimimi.models.vision.clip import read_av_clip

    clips = [read_av_clip(p) for p in paths]
    babble_files = sorted((DATA / "en" / "librispeech").rglob("*.flac"))[:7]
    babble = []
    for f in babble_files:
        x, sr = sf.read(str(f), dtype="float32")
        babble.append(soxr.resample(x, sr, RATE).astype(np.float32) if sr != RATE else x)
    lips = [lip_signals(c.landmarks) for c in clips]
    for snr in (None, 20.0, 10.0, 5.0, 0.0):
        mixed = []
        for k, c in enumerate(clips):
            a = c.audio.copy()
            if snr is not None:
                b = np.resize(babble[k], a.shape)
                speech = a[int(0.5 * RATE):int(2.3 * RATE)]
                gain = np.sqrt(np.mean(speech ** 2) / (np.mean(b ** 2) * 10 ** (snr / 10)))
                a = a + gain * b
            mixed.append(a)
        n = len(clips)
        m = np.array([[clip_score(lips[b], mixed[a], clips[b].frame_samples) for a in range(n)] for b in range(n)])
        pairs = [(b, a) for b in range(n) for a in range(n) if a != b]
        ok = sum(m[b, b] > m[b, a] for b, a in pairs)
        margin = min(m[b, b] - m[b, a] for b, a in pairs)
        label = "clean" if snr is None else f"SNR {snr:4.0f} dB"
        print(f"  {label}: own audio beats the other clip's on {ok}/{len(pairs)} pairs (min margin {margin:+.3f}); "
              f"matched mean {np.mean(np.diag(m)):.2f}, mismatched mean {np.mean([m[b, a] for b, a in pairs]):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 clips in parts 1 and 2, 3 in part 3")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    paths = sorted(GRID.glob("*.mpg"))
    if len(paths) != 7:
        sys.exit(f"expected 7 GRID clips in {GRID}, found {len(paths)}")
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if cpus:
        os.sched_setaffinity(0, {min(cpus)})
    print("== part 1: vision front end per frame, one core")
    per_frame(frames_of(paths[:2] if args.quick else paths))
    if cpus:
        os.sched_setaffinity(0, cpus)
    chosen = paths[:2] if args.quick else paths[:4]
    print("== part 2: AV graph (launch/av.yaml: Whisper tiny.en) in real time")
    graph_latency(chosen, [])
    print("== part 2b: the same with the GRID grammar (--set asr.backend=sphinx --set asr.model=grid)")
    graph_latency(chosen, ["asr.backend=sphinx", "asr.model=grid"])
    print("== part 3: active speaker with another talker in the room (LibriSpeech speech mixed in)")
    noise_study(paths[:3] if args.quick else paths)


if __name__ == "__main__":
    main()
