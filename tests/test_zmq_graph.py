"""Graphs as one process per node over ZeroMQ, on real recordings."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from ports import free_port_base
from waiting import wait_until

from kikimimi.engine.graph import GraphBuilder, GraphSpec
from kikimimi.engine.messages import Header
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.engine.procs import ProcessRunner
from kikimimi.engine.runner import GraphFailed, Runner
from kikimimi.engine.wire import encode

pytestmark = pytest.mark.slow

LIBRI = "en/librispeech/1998/1998-15444-0000.flac"
JFK = "en/jfk/jfk.flac"


def vad_graph(clip: Path, out: Path, speed: float = 0.0, max_message_mb: float | None = None) -> GraphSpec:
    g = GraphBuilder("three")
    g.node("source", "file_source", path=str(clip), speed=speed)
    g.node("vad", "webrtc_vad", mode=3).connect("audio", "source.audio", policy="block", capacity=64)
    g.node("sink", "jsonl_sink", path=str(out), include_timing=False).connect("in", "vad.events")
    spec = g.build()
    if max_message_mb is not None:
        d = spec.to_dict()
        d["zmq"] = {"max_message_mb": max_message_mb}
        from kikimimi.engine.graph import load_graph

        spec = load_graph(d)
    return spec


def segments(path: Path) -> list[tuple[int, int]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["start_sample"], r["end_sample"]) for r in rows if r.get("kind") == "speech_end"]


@pytest.mark.parametrize("clip", [LIBRI, JFK])
def test_three_node_pipeline_gives_identical_output_inproc_and_over_zmq(
        clip: str, data_dir: Path, tmp_path: Path) -> None:
    a, b, c = tmp_path / "inproc.jsonl", tmp_path / "ipc.jsonl", tmp_path / "tcp.jsonl"
    Runner(vad_graph(data_dir / clip, a)).run()
    stats = ProcessRunner(vad_graph(data_dir / clip, b), scheme="ipc").run()
    tcp_spec = vad_graph(data_dir / clip, c)
    d = tcp_spec.to_dict()
    d["zmq"] = {"tcp_base_port": free_port_base(8)}
    from kikimimi.engine.graph import load_graph

    ProcessRunner(load_graph(d), scheme="tcp").run()
    assert len(segments(a)) >= 1
    assert a.read_text() == b.read_text() == c.read_text()
    by_node = {s["node"]: s for s in stats}
    assert by_node["vad"]["dropped"] == {} and by_node["sink"]["dropped"] == {}
    # Every chunk arrived: the source also emitted END_OF_STREAM on its two outputs (audio, video).
    assert by_node["vad"]["received"] == by_node["vad"]["processed"] == by_node["source"]["emitted"] - 2


def _bad_messages(spec_limit_bytes: int) -> list[tuple[str, list[bytes]]]:
    good = encode(AudioChunk(Header("file", 0, 0, time.monotonic_ns(), "intruder"),
                             np.zeros((320, 1), np.int16), 16000))
    head = bytes(good[0])
    rng = np.random.default_rng(7)
    return [
        ("truncated", [head[: len(head) // 2]]),
        ("truncated", [head, bytes(good[1])[:100]]),
        ("version", [head[:2] + b"\x09" + head[3:], bytes(good[1])]),
        ("oversized", [head, b"\0" * (spec_limit_bytes + 1)]),
        ("malformed", [rng.bytes(64)]),
        ("malformed", [rng.bytes(3), rng.bytes(1000)]),
        ("unknown_type", [b"KM\x01\x00" + msgpack.packb(["Bogus", ["file", 0, 0, 0, "x"], [], []])]),
        ("malformed", [bytes(f) for f in encode(VadEvent(Header("file", 0, 0, 0, "x"),
                                                           SpeechEventKind.SPEECH_START, 0, -1, 16000, 1.0))]),
    ]


def test_malformed_wire_messages_are_rejected_and_the_stream_goes_on(data_dir: Path, tmp_path: Path) -> None:
    clip = data_dir / LIBRI
    clean, dirty = tmp_path / "clean.jsonl", tmp_path / "dirty.jsonl"
    Runner(vad_graph(clip, clean)).run()
    # Real-time-ish pacing keeps the graph alive while the garbage arrives.
    runner = ProcessRunner(vad_graph(clip, dirty, speed=4.0, max_message_mb=1.0))
    result: dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.setdefault("stats", runner.run()))
    t.start()
    # Every node has bound its inputs and been told to go: the garbage cannot arrive before the receiver.
    assert runner.started.wait(120), "the graph did not start"
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.connect(runner.endpoints[("vad", "audio")])
    bad = _bad_messages(1024 * 1024)
    for _, frames in bad:
        sock.send_multipart(frames)
    sock.close(linger=-1)   # until delivered (the per-test timeout bounds a hang)
    ctx.term()
    t.join(60)
    assert not t.is_alive()
    vad = next(s for s in result["stats"] if s["node"] == "vad")
    expected: dict[str, int] = {}
    for kind, _ in bad:
        expected[kind] = expected.get(kind, 0) + 1
    assert vad["rejected_by_kind"] == expected
    assert vad["dropped"] == {"rejected": len(bad)}
    # Nothing the graph accepted was lost or changed by the garbage.
    assert dirty.read_text() == clean.read_text()


def _read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout_s: float) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    while needle not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} did not appear within {timeout_s} s; output: {buf!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"process ended before {needle!r}; output: {buf!r}")
            buf += chunk
    return buf


def stats_rows(text: str) -> dict[str, str]:
    """The --stats table's rows by node name (lines of format_stats; log lines start otherwise)."""
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and all(p.replace(",", "").isdigit() for p in parts[1:3]):
            rows[parts[0]] = line
    return rows


def test_sigterm_stops_a_multiprocess_graph_gracefully_without_orphans(data_dir: Path) -> None:
    clip = data_dir / "diarization/ami/dev00.wav"  # 30 s at real time: still running when we stop it
    proc = subprocess.Popen(
        [sys.executable, "-m", "kikimimi.launch.cli", "-v", "run", "--input", str(clip), "--transport", "zmq",
         "--stats"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        # A readiness wait, not a time limit: seven processes load their models first (8-15 s on this 2-core
        # machine under load); the bound only turns a hang into a failure.
        _read_until(proc, b"speech start", 120)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        out = proc.stdout.read() if proc.stdout else b""
        err = proc.stderr.read() if proc.stderr else b""
        assert proc.returncode == 0, err.decode()
        # Graceful, decided by what happened rather than by a stopwatch: the runner kills nodes that have not
        # finished 5 s after the stop (and says so); here none was killed, the console saw the end of stream,
        # and every node reported its counters in the --stats table (one row per node: name, then numbers).
        assert b"killing the remaining nodes" not in err and b"aborting" not in err, err.decode()
        assert b"end of stream" in out
        table = stats_rows(err.decode())
        from kikimimi.launch.cli import resolve_graph

        assert set(table) == {n.name for n in resolve_graph("default").nodes}, err.decode()
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)  # no process of the graph's session is left
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_node_that_dies_is_reported_and_the_rest_of_the_graph_finishes(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    runner = ProcessRunner(vad_graph(data_dir / "diarization/ami/dev00.wav", out, speed=1.0))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            runner.run()
        except GraphFailed as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    assert runner.started.wait(120), "the graph did not start"
    wait_until(out.exists, 60, "the sink's output file")
    runner.procs["vad"].kill()
    t.join(60)
    assert not t.is_alive()
    assert errors and "node 'vad' failed" in str(errors[0])
    # The sink got END_OF_STREAM on the dead node's behalf, closed its file and reported.
    assert "sink" in runner.results


def test_a_graph_split_over_two_launches_with_only_matches_one_process(data_dir: Path, tmp_path: Path) -> None:
    # What two machines do: each starts the same graph file with its own --only; edges go over tcp.
    clip = data_dir / LIBRI
    whole, split = tmp_path / "whole.jsonl", tmp_path / "split.jsonl"
    Runner(vad_graph(clip, whole)).run()
    d = vad_graph(clip, split).to_dict()
    d["zmq"] = {"tcp_base_port": free_port_base(8)}
    from kikimimi.engine.graph import load_graph

    spec = load_graph(d)
    machine_b = ProcessRunner(spec, scheme="tcp", only=["vad", "sink"])
    results: dict[str, Any] = {}
    t = threading.Thread(target=lambda: results.setdefault("b", machine_b.run()))
    t.start()
    results["a"] = ProcessRunner(spec, scheme="tcp", only=["source"]).run()
    t.join(60)
    assert not t.is_alive()
    assert [s["node"] for s in results["a"]] == ["source"]
    assert [s["node"] for s in results["b"]] == ["vad", "sink"]
    assert split.read_text() == whole.read_text()


def test_a_slow_consumer_gets_everything_after_its_producer_has_exited(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The consumer stalls while the producer sends more than ZeroMQ's queues hold: backpressure holds the
    producer back, and once it has sent its END_OF_STREAM it stays until the consumer has that too (the
    release handshake of engine/worker.py), so nothing is lost when it exits."""
    monkeypatch.setenv("KIKIMIMI_NODE_MODULES", "toy_nodes")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "sink.jsonl"
    g = GraphBuilder("slow")
    # 2000 messages: more than the receiver's ZeroMQ queue (HWM 1000) and the socket buffer hold; the consumer
    # stalls 4 s on its first message.
    g.node("src", "toy_ramp", count=2000)
    g.node("sink", "toy_collect", path=str(out), delay_first_s=4.0).connect("in", "src.audio", policy="block",
                                                                           capacity=1)
    runner = ProcessRunner(g.build())
    result: dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.setdefault("stats", runner.run()), daemon=True)
    t.start()
    t.join(60)
    if t.is_alive():
        runner.abort()
        t.join(30)
    got = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    rows = got
    assert "stats" in result, f"the sink never ended: it got {len(got)} messages, the last {got[-1:]}"
    stats = result["stats"]
    assert [r["seq"] for r in rows if r["type"] == "AudioChunk"] == list(range(2000))
    assert rows[-1]["type"] == "Control"
    assert next(s for s in stats if s["node"] == "sink")["dropped"] == {}
