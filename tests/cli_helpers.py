"""Helpers for tests of the ``kikimimi`` command: a small real graph file, the --stats table, and a
running ``kikimimi`` subprocess whose output is read as it comes (readiness from its lines, not sleeps)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

CLI = [sys.executable, "-m", "kikimimi.launch.cli"]


def write_vad_graph(path: Path, clip: Path, sink: Path, *, speed: float = 0.0,
                    zmq: dict[str, Any] | None = None) -> Path:
    """A graph file ``file_source -> webrtc_vad -> jsonl_sink`` (timing left out, so runs compare equal), with
    ``input: source`` (for --input) and ``outputs: {events: vad.events}`` (for --output)."""
    graph: dict[str, Any] = {
        "version": 1, "name": "vad_file", "input": "source", "outputs": {"events": "vad.events"},
        "nodes": {
            "source": {"kind": "file_source", "params": {"path": str(clip), "speed": speed}},
            "vad": {"kind": "webrtc_vad", "inputs": {"audio": {"from": "source.audio", "policy": "block",
                                                               "capacity": 64}}},
            "sink": {"kind": "jsonl_sink", "params": {"path": str(sink), "include_timing": False},
                     "inputs": {"in": "vad.events"}},
        },
    }
    if zmq is not None:
        graph["zmq"] = zmq
    path.write_text(yaml.safe_dump(graph, sort_keys=False))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def stats_table(text: str) -> dict[str, tuple[int, int, int, int]]:
    """(recv, proc, emit, drop) of each node row of the ``--stats`` table in ``text`` (other lines ignored)."""
    rows: dict[str, tuple[int, int, int, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 7 and all(p.isdigit() for p in parts[1:5]):
            recv, proc, emit, drop = (int(p) for p in parts[1:5])
            rows[parts[0]] = (recv, proc, emit, drop)
    return rows


class Hung(AssertionError):
    """A ``kikimimi`` subprocess did not end within the time given to it."""


class Running:
    """A ``kikimimi`` subprocess in its own session, with stdout and stderr collected as they arrive.

    Use as a context manager: on the way out the whole process group is killed if it is still running."""

    def __init__(self, args: list[str], cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._fds = {"out": self.proc.stdout.fileno(), "err": self.proc.stderr.fileno()}
        self._buf = {"out": b"", "err": b""}
        self._open = set(self._fds)

    @property
    def out(self) -> str:
        return self._buf["out"].decode(errors="replace")

    @property
    def err(self) -> str:
        return self._buf["err"].decode(errors="replace")

    def pump(self, timeout_s: float) -> None:
        """Read what has arrived on either pipe (waiting at most ``timeout_s`` for something)."""
        fds = {self._fds[k]: k for k in self._open}
        if not fds:
            return
        ready, _, _ = select.select(list(fds), [], [], max(0.0, timeout_s))
        for fd in ready:
            chunk = os.read(fd, 65536)
            if chunk:
                self._buf[fds[fd]] += chunk
            else:
                self._open.discard(fds[fd])

    def wait_for(self, stream: str, needle: str, timeout_s: float) -> None:
        """Return once ``needle`` has appeared on ``stream`` ("out" or "err"); fail if the process ends first or
        after ``timeout_s`` (a bound on a hang, not a time the test relies on)."""
        deadline = time.monotonic() + timeout_s
        while needle.encode() not in self._buf[stream]:
            if stream not in self._open:
                raise AssertionError(f"the process ended before {needle!r} on std{stream}; exit code "
                                     f"{self.proc.wait()}\nstdout:\n{self.out}\nstderr:\n{self.err}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} did not appear on std{stream} within {timeout_s:g} s\n"
                                     f"stdout:\n{self.out}\nstderr:\n{self.err}")
            self.pump(left)

    def finish(self, timeout_s: float) -> int:
        """Read both pipes to their end and wait for the exit; the exit code (fails after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while self._open:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Hung(f"the process did not end within {timeout_s:g} s\n"
                                     f"stdout:\n{self.out}\nstderr:\n{self.err}")
            self.pump(left)
        return self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        # The group, not only the process: a zmq launch leaves its node workers there if it dies.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def wait_for_ports(host: str, ports: list[int], timeout_s: float, running: Running | None = None) -> None:
    """Return once every TCP port accepts a connection (a ZeroMQ node has bound its input there); fail after
    ``timeout_s`` (a bound on a hang), or at once if ``running`` ends first."""
    deadline = time.monotonic() + timeout_s
    pending = list(ports)
    while pending:
        try:
            socket.create_connection((host, pending[0]), timeout=1.0).close()
            pending.pop(0)
            continue
        except OSError:
            pass
        if running is not None and running.proc.poll() is not None:
            code = running.finish(10)
            raise AssertionError(f"the process ended (exit code {code}) before {host}:{pending[0]} was bound\n"
                                 f"stdout:\n{running.out}\nstderr:\n{running.err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{host}:{pending[0]} was not bound within {timeout_s:g} s")
        if running is not None:
            running.pump(0.05)   # keep its pipes drained while waiting (a full pipe would stall it)
        else:
            time.sleep(0.05)
