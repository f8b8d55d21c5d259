"""Helpers for the ASR tests: clips, the front of the graph run in-process, and the asr node driven on it.

``front_messages`` runs FileSource-style chunks of a clip through TwoStageVad and FeatureNode (with
tests/harness.run_node) and interleaves their output in the order a live graph would deliver it:
each message at the sample up to which its producer had to read (features: the end of their
frames' windows; VAD events: their decision sample). ``run_asr`` feeds that to an AsrNode.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from kikimimi.engine.messages import Header, Message
from kikimimi.engine.msgs.audio import AudioChunk, Features
from kikimimi.engine.msgs.speech import Transcript, VadEvent
from kikimimi.engine.testing import run_node
from kikimimi.models.asr.recognizer import Recognizer
from kikimimi.nodes.asr import AsrNode
from kikimimi.nodes.features import FeatureNode
from kikimimi.nodes.vad import TwoStageVad

RATE = 16000
CHUNK = 320  # 20 ms

DETERMINISTIC = {"min_interval_ms": 1000, "max_interval_ms": 1000, "max_lag_ms": 0, "threads": 2}
"""asr node settings that make a test independent of how fast the machine decodes."""


@dataclass(frozen=True)
class Clip:
    path: Path
    reference: str
    language: str
    speaker: str


def manifest(data_dir: Path) -> list[Clip]:
    """Every row of MANIFEST.tsv as a Clip."""
    with (data_dir / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [Clip(data_dir / r["path"], r["reference"], r["language"], r["speaker_id"]) for r in rows]


def librispeech_subset(data_dir: Path, per_speaker: int = 3) -> list[Clip]:
    """The first ``per_speaker`` LibriSpeech clips (by path) of every speaker: a fixed subset."""
    clips = sorted((c for c in manifest(data_dir) if "librispeech" in str(c.path)), key=lambda c: str(c.path))
    out: list[Clip] = []
    seen: dict[str, int] = {}
    for c in clips:
        if seen.get(c.speaker, 0) < per_speaker:
            seen[c.speaker] = seen.get(c.speaker, 0) + 1
            out.append(c)
    return out


def load_audio(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz."""
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    y = x.mean(axis=1).astype(np.float32)
    if sr != RATE:
        y = soxr.resample(y, sr, RATE).astype(np.float32)
    return y


def chunks(audio: np.ndarray, stream: str = "s") -> list[tuple[str, Message]]:
    """20 ms int16 AudioChunk messages of ``audio``, as a source emits them."""
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16).reshape(-1, 1)
    out: list[tuple[str, Message]] = []
    for i, a in enumerate(range(0, len(pcm), CHUNK)):
        out.append(("audio", AudioChunk(Header(stream, i, a, a * 62_500, "src"), pcm[a:a + CHUNK], RATE)))
    return out


def front_messages(audio: np.ndarray, stream: str = "s", vad_params: dict[str, Any] | None = None
                   ) -> list[tuple[str, Message]]:
    """Features and VAD events of ``audio`` in live arrival order, for the asr node's ports."""
    msgs = chunks(audio, stream)
    feats = run_node(FeatureNode("features"), msgs)
    events = run_node(TwoStageVad("vad", vad_params or {}), msgs)
    keyed: list[tuple[int, int, tuple[str, Message]]] = []
    for _, m in feats:
        if isinstance(m, Features):
            keyed.append((m.header.sample_index + m.n_frames * m.hop + 200, 0, ("features", m)))
    for _, m in events:
        if isinstance(m, VadEvent):
            keyed.append((m.header.sample_index, 1, ("vad", m)))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [k[2] for k in keyed]


def run_asr(messages: list[tuple[str, Message]], **params: Any) -> list[Transcript]:
    """The Transcripts an AsrNode emits for ``messages`` (deterministic settings unless overridden)."""
    p = {**DETERMINISTIC, **params}
    node = AsrNode("asr", p)
    return [m for _, m in run_node(node, messages) if isinstance(m, Transcript)]


def finals(transcripts: list[Transcript]) -> list[Transcript]:
    return [t for t in transcripts if t.final]


def offline_texts(recognizer: Recognizer, messages: list[tuple[str, Message]], language: str = "auto"
                  ) -> list[str]:
    """Each VAD utterance decoded whole by ``recognizer`` (no partials): the offline reference."""
    stream = recognizer.new_stream(language)
    segments = [m for p, m in messages if isinstance(m, VadEvent) and m.kind.value == "speech_end"]
    for _port, m in messages:
        if isinstance(m, Features):
            stream.accept(m.frames, m.start_frame, m.header.sample_index)
    texts: list[str] = []
    for seg in segments:
        stream.begin(seg.start_sample)
        stream.endpoint(seg.end_sample)
        for _ in range(16):
            req = stream.step(10**9, partial=False)
            if req is None:
                break
            rev = stream.apply(req, recognizer.decode([req])[0])
            if rev is not None and rev.final:
                texts.append(rev.committed)
    return texts
