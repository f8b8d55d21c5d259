"""Golden-output harness: every message every node emits, every log line and the console's output, on
real clips, through the real ``kikimimi run`` command, in-process and over ZeroMQ.

A refactoring that must not change behaviour records the golden files first and checks them after::

    python tests/golden.py record               # writes tests/golden/<case>.<transport>.json.gz, both transports
    python tests/golden.py check                # every case, in-process and over ZeroMQ
    python tests/golden.py check --case jfk --transport zmq
    python tests/golden.py check --numeric      # on another machine: see tests/golden_numeric.py

Each case runs a bundled graph on one clip of ``../shared/data`` at full speed (``--speed 0``: every
queue blocks, nothing is dropped), with a ``jsonl_sink`` tap added that reads every output port of
every node. The settings that would make a run depend on the machine's speed are pinned: the asr
node decodes partials every fixed 300 ms of audio (not an interval adapted to the measured decode
time) and never skips partials for lag; fusion waits as long as it takes for speaker turns; the
speaker node reads no enrollment database.

What is compared, per case:

* ``messages``: for each ``node.port`` and stream, the messages in emission order, without
  ``header.t_ns`` (a time of day): every output of every node in-process; over ZeroMQ, where each tap
  is a process, the outputs in ``ZMQ_FEEDS`` (VAD events, speaker turns and embeddings, active
  speakers, fused transcripts). Arrays are compared by dtype, shape and a SHA-256 of their bytes.
* ``log``: every log line at INFO and above, in order per logger (lines of different nodes
  interleave differently from run to run, so each logger's lines are compared as a sequence), with
  decimal numbers masked (they are timings).

Some outputs depend on thread scheduling by design (partials, the speaker node's window cuts; see
``FINALS_ONLY``, ``UTTERANCE_ONLY`` and ``TIMING_FIELDS`` below): those are compared on what is
deterministic (finals, utterance embeddings), which is what was seen identical run after run.
* ``stdout``: the console sink's lines, in order per kind (VAD events, transcripts, ends of stream).

Each transport has its own golden file. Over ZeroMQ a node's inputs arrive on separate sockets, so the
speaker node's sliding windows are cut at other watermarks from run to run: over ZeroMQ its embeddings
and the scores derived from them are left out (``ZMQ_WINDOW_CUTS``); its labels are compared.

``RENAMED`` and ``DROPPED`` say how a refactoring changed message shapes on purpose; before comparing,
both sides are brought to one form (:func:`normalize`), so a changed shape must still carry every old
value: the fusion node's output became ``LabeledTranscript`` (it was a ``Transcript`` carrying the
labels), and the recognizer's ``Transcript`` lost the label fields, which recognizers always left at
their defaults (a golden line with a label set there would still differ).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
GRAPHS = ROOT / "launch"
TAP = "golden_tap"  # tap nodes are golden_tap_0, golden_tap_1, ...
TIMEOUT_S = 1200

# Settings that make a run independent of the machine's speed (see the module docstring). No partials: a
# Whisper final is decoded after the committed prefix of its partials, which depends on when they fell due. The speaker
# node takes no window past the VAD's watermark (vad_lookahead_ms=0): with the default look-ahead the
# windows an utterance gets, and so its final label, depend on when the VAD's events arrive.
PINNED = (
    "asr.min_interval_ms=300", "asr.max_interval_ms=300", "asr.max_lag_ms=0", "asr.partials=false",
)
DEFAULT_PINNED = (*PINNED, "speaker.db=none", "speaker.vad_lookahead_ms=0", "fusion.speaker_wait_ms=600000")
AV_PINNED = (*PINNED, "fusion.speaker_wait_ms=600000")

# Outputs whose partial (non-final) messages depend on how the inputs of their node interleave, which
# depends on thread scheduling: a partial is decoded from whatever frames arrived when it fell due, and
# fusion labels a partial with the speaker turns that arrived before it. Only their finals are compared, without
# their revision number and header.seq (which count the partials before them).
FINALS_ONLY = ("asr.transcripts", "avsr.transcripts", "fusion.transcripts", "speaker.turns")
# The speaker node's sliding windows are cut at the VAD's watermarks as they arrive, so how many window
# embeddings an utterance gets, and the provisional turns fusion has seen when a final's score is
# averaged, depend on scheduling too: only utterance embeddings are compared, and a fused final's
# speaker_score is left out (its speaker and every word's speaker are compared).
UTTERANCE_ONLY = ("speaker.embeddings",)
# Fields measured from the wall clock (Faces.fps: the frame rate measured from capture times, which a
# file played at full speed stamps as it reads).
TIMING_FIELDS = {"Faces": ("fps",)}
NUMBER = re.compile(r"\d+\.\d+")

# What the single ZeroMQ tap reads: message type -> the output it comes from (one output per type; the
# big arrays of audio, features, frames and faces are compared in-process, where taps cost no process).
ZMQ_FEEDS = {"Transcript": "fusion.transcripts", "LabeledTranscript": "fusion.transcripts",
             "VadEvent": "vad.events", "SpeakerTurn": "speaker.turns", "SpeakerEmbedding": "speaker.embeddings",
             "ActiveSpeaker": "active.active"}

# Over ZeroMQ the speaker node's audio and VAD events arrive on two sockets, and its sliding windows are
# cut at the watermarks as they arrive: its embeddings and its turns' scores (and the fused finals'
# speaker_score) differ in the last digits from run to run; they are left out over ZeroMQ (feed -> fields;
# None: the whole feed). The labels (a turn's speaker and span, a final's and every word's speaker) are
# compared. So is a fused final's face_score over ZeroMQ: the mean over the active-speaker windows fusion
# holds when the final goes out (the windows themselves are compared, and the face id). (Before the speaker
# node waited for both of its inputs' ends, a file's last utterance raced them and lost its label.)
ZMQ_WINDOW_CUTS: dict[str, tuple[str, ...] | None] = {
    "speaker.embeddings": None, "speaker.turns": ("score",), "fusion.transcripts": ("speaker_score", "face_score")}
FACE_SCORE = re.compile(r" face (\d+) \([\d.]+\)")

# New type name -> (old type name, the fields the new type added, with the one value they may have to count
# as absent).
RENAMED: dict[str, tuple[str, dict[str, Any]]] = {"LabeledTranscript": ("Transcript", {"affect": []})}
# Type -> fields a type lost, with the value they always had when they existed.
DROPPED: dict[str, dict[str, Any]] = {
    "Transcript": {"speaker": "", "speaker_score": 0.0, "face_id": -1, "face_score": 0.0},
}


@dataclass(frozen=True)
class Case:
    name: str
    graph: str
    clip: str
    settings: tuple[str, ...]
    transports: tuple[str, ...] = ("inproc", "zmq")


CASES = (
    Case("librispeech", "default", "en/librispeech/1688/1688-142285-0003.flac", DEFAULT_PINNED),
    Case("jfk", "default", "en/jfk/jfk.flac", DEFAULT_PINNED),
    Case("fleurs", "default", "ja/fleurs/fleurs_ja_1837.wav", DEFAULT_PINNED),
    # Over ZeroMQ this case hung in about half the runs (an END_OF_STREAM lost as its sender exited, see
    # engine/worker.py); its ZeroMQ golden file was recorded once that was fixed (issue 12), not before issue 11.
    Case("ami", "default", "diarization/ami/dev00.wav", DEFAULT_PINNED),
    Case("grid", "av", "av/grid/lbax4n.mpg", (*AV_PINNED, "asr.backend=sphinx", "asr.model=grid")),
    Case("grid_whisper", "av", "av/grid/bbaf2n.mpg", AV_PINNED),
)


def _output_ports(kind: str) -> list[str]:
    from kikimimi.engine.registry import load_kind

    return [p.name for p in load_kind(kind).outputs]


def tapped_graph(graph: str, out_dir: Path, transport: str) -> dict[str, Any]:
    """The bundled graph ``graph`` with taps (``jsonl_sink`` nodes named ``golden_tap_<i>``) added.

    In-process: one tap per output port of every node, writing ``<out_dir>/<node>.<port>.jsonl`` (a
    message's header names the node that made it, not the edge it left by: fusion passes transcripts on
    with the recognizer's header). Over ZeroMQ, where every tap is a process of its own, one tap reads
    the outputs of ``ZMQ_FEEDS`` (each message type comes from one of them) into ``zmq.jsonl``."""
    d = yaml.safe_load((GRAPHS / f"{graph}.yaml").read_text())
    feeds = [f"{name}.{port}" for name, nd in d["nodes"].items() for port in _output_ports(nd["kind"])]
    if transport == "zmq":
        d["nodes"][f"{TAP}_0"] = {
            "kind": "jsonl_sink",
            "params": {"path": str(out_dir / "zmq.jsonl"), "include_arrays": True, "include_timing": False},
            "inputs": {"in": {"from": [f for f in feeds if f in ZMQ_FEEDS.values()], "policy": "block",
                              "capacity": 4096}},
        }
        return d
    for i, feed in enumerate(feeds):
        d["nodes"][f"{TAP}_{i}"] = {
            "kind": "jsonl_sink",
            "params": {"path": str(out_dir / f"{feed}.jsonl"), "include_arrays": True, "include_timing": False},
            "inputs": {"in": {"from": feed, "policy": "block", "capacity": 4096}},
        }
    return d


def _feed_of(stem: str, obj: dict[str, Any]) -> str:
    """The output a tapped message left by: the file's name in-process, its type's feed over ZeroMQ."""
    return ZMQ_FEEDS[obj["type"]] if stem == "zmq" else stem


def _digest(value: Any) -> Any:
    """Arrays (dicts with dtype, shape and data) become dtype, shape and a hash of the data."""
    if isinstance(value, dict):
        if set(value) == {"dtype", "shape", "data"}:
            blob = json.dumps(value["data"], separators=(",", ":")).encode()
            return {"dtype": value["dtype"], "shape": value["shape"],
                    "sha256": hashlib.sha256(blob).hexdigest()[:24]}
        return {k: _digest(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_digest(v) for v in value]
    return value


def canonical(feed: str, obj: dict[str, Any]) -> tuple[str, str]:
    """(group key "node.port/stream", canonical line) of one message tapped from output ``feed``."""
    obj = _digest(obj)
    h = obj["header"]
    return f"{feed}/{h['stream_id']}", json.dumps(obj, sort_keys=True, ensure_ascii=False)


LOG_LINE = re.compile(r"^(INFO|WARNING|ERROR|CRITICAL) (?:\[[a-z0-9_]+\] )?([\w.]+): ")


def _log_groups(stderr: str) -> dict[str, list[str]]:
    """Log lines by logger (a ZeroMQ worker's ``[node]`` prefix dropped), decimals masked; other lines apart."""
    groups: dict[str, list[str]] = defaultdict(list)
    for line in stderr.splitlines():
        line = NUMBER.sub("#", line)   # decimals in log lines are timings (ms/frame, s)
        m = LOG_LINE.match(line)
        if m:
            groups[m.group(2)].append(f"{m.group(1)} {m.group(2)}: {line[m.end():]}")
        elif line.strip():
            groups["(other)"].append(line)
    return dict(groups)


def run_case(case: Case, transport: str) -> dict[str, Any]:
    """Run ``case`` once; returns its messages, log lines and console lines."""
    clip = DATA / case.clip
    if not clip.exists():
        raise FileNotFoundError(f"golden case {case.name}: {clip} not found (see ../shared/data)")
    with tempfile.TemporaryDirectory(prefix="kkm-golden-") as tmp:
        taps = Path(tmp) / "taps"
        taps.mkdir()
        graph = Path(tmp) / "graph.yaml"
        graph.write_text(yaml.safe_dump(tapped_graph(case.graph, taps, transport)))
        # -v and vad_events=start: the console lines the goldens were recorded with (speech starts, transcripts,
        # ends of stream); without -v the console shows transcripts only.
        cmd = [sys.executable, "-m", "kikimimi.launch.cli", "--log-level", "INFO", "-v", "run", str(graph),
               "--input", str(clip), "--speed", "0", "--transport", transport, "--set", "console.vad_events=start"]
        for s in case.settings:
            cmd += ["--set", s]
        env = {**os.environ, "KIKIMIMI_SPEAKERS_DB": str(Path(tmp) / "speakers.db")}
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=TIMEOUT_S, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"golden case {case.name} ({transport}) exited {proc.returncode}:\n{proc.stderr}")
        messages: dict[str, list[str]] = defaultdict(list)
        for path in sorted(taps.glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                obj = json.loads(line)
                feed = _feed_of(path.stem, obj)
                if feed in FINALS_ONLY:
                    if not obj.get("final", True):
                        continue
                    obj.pop("revision", None)   # it and header.seq count the partials before the final
                    del obj["header"]["seq"]
                    if feed == "fusion.transcripts":
                        del obj["speaker_score"]
                if feed in UTTERANCE_ONLY:
                    if obj["kind"] != "utterance":
                        continue
                    del obj["header"]["seq"]
                for f in TIMING_FIELDS.get(obj["type"], ()):
                    del obj[f]
                key, text = canonical(feed, obj)
                messages[key].append(text)
    return {"case": case.name, "graph": case.graph, "clip": case.clip, "settings": list(case.settings),
            "messages": dict(sorted(messages.items())), "log": _log_groups(proc.stderr),
            "stdout": proc.stdout.splitlines()}


def normalize(line: str) -> str:
    """A canonical message line with the deliberate shape changes (``RENAMED``, ``DROPPED``) undone."""
    obj = json.loads(line)
    renamed = RENAMED.get(obj["type"])
    if renamed is not None and all(obj.get(k, v) == v for k, v in renamed[1].items()):
        obj = {k: v for k, v in obj.items() if k not in renamed[1]}
        obj["type"] = renamed[0]
    for k, v in DROPPED.get(obj["type"], {}).items():
        if obj.get(k, v) == v:
            obj.pop(k, None)
    return json.dumps(obj, sort_keys=True, ensure_ascii=False)


def _without(line: str, fields: tuple[str, ...]) -> str:
    """A message line without ``fields`` (see ``ZMQ_WINDOW_CUTS``)."""
    obj = json.loads(line)
    for k in fields:
        obj.pop(k, None)
    return json.dumps(obj, sort_keys=True, ensure_ascii=False)


def _same_but_numbers(a: list[str], b: list[str]) -> bool:
    """Both message lists agree up to the numerical differences ``golden_numeric.similar`` allows."""
    from golden_numeric import similar

    return len(a) == len(b) and all(similar(json.loads(x), json.loads(y)) for x, y in zip(a, b, strict=True))


def compare(golden: dict[str, Any], got: dict[str, Any], transport: str = "inproc", exact: bool = True) -> list[str]:
    """Differences between a golden run and a new one, one line each (empty: identical). ``exact`` False allows
    the differences of another machine or library version (tests/golden_numeric.py): the standing test's mode."""
    diffs: list[str] = []
    for part in ("messages", "log"):
        g, n = golden[part], got[part]
        for key in sorted(set(g) | set(n)):
            a, b = g.get(key, []), n.get(key, [])
            if part == "messages" and transport == "zmq" and key.split("/")[0] in ZMQ_WINDOW_CUTS:
                fields = ZMQ_WINDOW_CUTS[key.split("/")[0]]
                if fields is None:
                    continue
                a, b = [_without(x, fields) for x in a], [_without(x, fields) for x in b]
            if part == "messages" and a != b:
                a, b = [normalize(x) for x in a], [normalize(x) for x in b]
            if a == b or (part == "messages" and not exact and _same_but_numbers(a, b)):
                continue
            first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            diffs.append(f"{part} {key}: {len(a)} golden vs {len(b)} now; first difference at #{first}:\n"
                         f"    golden: {a[first] if first < len(a) else '(none)'}\n"
                         f"    now:    {b[first] if first < len(b) else '(none)'}")
    g_out, n_out = _stdout_groups(golden["stdout"]), _stdout_groups(got["stdout"])
    for groups in (g_out, n_out):
        if transport == "zmq" or not exact:
            groups["transcript"] = [FACE_SCORE.sub(r" face \1", x) for x in groups["transcript"]]
    for key in sorted(set(g_out) | set(n_out)):
        if g_out.get(key, []) != n_out.get(key, []):
            diffs.append(f"stdout ({key} lines) differs:\n    golden: " + " | ".join(g_out.get(key, []))
                         + "\n    now:    " + " | ".join(n_out.get(key, [])))
    return diffs


def _stdout_groups(lines: list[str]) -> dict[str, list[str]]:
    """The console's lines by the input they come from (VAD events, ends of stream, transcripts): each kind
    is in order, but how the console interleaves lines of two upstream nodes depends on scheduling."""
    groups: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        kind = ("end of stream" if " end of stream from " in line
                else "vad" if re.match(r"^\[[^]]+\] speech ", line) else "transcript")
        groups[kind].append(line)
    return dict(groups)


def golden_path(case: Case, transport: str) -> Path:
    return GOLDEN_DIR / f"{case.name}.{transport}.json.gz"


def load_golden(case: Case, transport: str) -> dict[str, Any]:
    with gzip.open(golden_path(case, transport), "rt", encoding="utf-8") as f:
        return json.load(f)  # type: ignore[no-any-return]


def check(case: Case, transport: str, exact: bool = True) -> list[str]:
    """Differences between the golden run of ``case`` over ``transport`` and a run now (empty: identical;
    ``exact`` False: up to another machine's numerical differences)."""
    return compare(load_golden(case, transport), run_case(case, transport), transport, exact)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("record", "check"))
    ap.add_argument("--case", action="append", help="case name (repeatable); default: all")
    ap.add_argument("--transport", action="append", choices=("inproc", "zmq"), help="default: both")
    ap.add_argument("--numeric", action="store_true",
                    help="allow another machine's numerical differences (tests/golden_numeric.py); default: exact")
    args = ap.parse_args(argv)
    cases = [c for c in CASES if not args.case or c.name in args.case]
    if args.action == "record":
        GOLDEN_DIR.mkdir(exist_ok=True)
        for c in cases:
            for t in [t for t in args.transport or ["inproc", "zmq"] if t in c.transports]:
                got = run_case(c, t)
                # mtime=0: the same run gives the same bytes
                with golden_path(c, t).open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
                    f.write((json.dumps(got, indent=1, ensure_ascii=False) + "\n").encode())
                print(f"recorded {c.name} {t}: {sum(map(len, got['messages'].values()))} messages")
        return 0
    failed = 0
    for c in cases:
        for t in [t for t in args.transport or ["inproc", "zmq"] if t in c.transports]:
            diffs = check(c, t, exact=not args.numeric)
            print(f"{c.name} {t}: {'identical' if not diffs else f'{len(diffs)} differences'}")
            for d in diffs:
                print("  " + d)
            failed += bool(diffs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
