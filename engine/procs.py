"""The multi-process runner: one process per node, edges over ZeroMQ (ipc:// or tcp://).

The parent writes the graph and its endpoints into a fresh run directory, starts one
``kikimimi.engine.worker`` per node, waits until every node has started (a failing node aborts the
whole launch with its error), then tells them all to go. Stopping (SIGINT/SIGTERM, or ``stop()``)
asks the sources to finish; END_OF_STREAM then flows through the graph and every node reports its
counters as it exits. Nodes still running ``shutdown_timeout_s`` (5 s, as the in-process runner) after
the stop are killed, so the parent never leaves orphans. A node that dies is reported, and the parent
sends END_OF_STREAM on its behalf so the nodes downstream can finish, then stops the graph.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack
import zmq

from kikimimi.engine.errors import GraphError
from kikimimi.engine.graph import GraphSpec
from kikimimi.engine.messages import Control, ControlKind, Header
from kikimimi.engine.node import Source
from kikimimi.engine.runner import GraphFailed
from kikimimi.engine.wire import encode
from kikimimi.engine.zmq_transport import input_endpoints

log = logging.getLogger("kikimimi.procs")
START_TIMEOUT_S = 60.0


class ProcessRunner:
    """Runs the nodes of ``spec`` (or the subset ``only``) as child processes."""

    def __init__(self, spec: GraphSpec, scheme: str = "ipc", only: list[str] | None = None,
                 shutdown_timeout_s: float = 5.0, log_level: str = "WARNING") -> None:
        self.spec = spec
        self.scheme = scheme
        self.names = [n.name for n in spec.nodes if only is None or n.name in only]
        unknown = set(only or ()) - {n.name for n in spec.nodes}
        if unknown:
            names = ", ".join(n.name for n in spec.nodes)
            raise GraphError("--only", f"no node {sorted(unknown)[0]!r}; nodes: {names}")
        self.shutdown_timeout_s = shutdown_timeout_s
        self.log_level = log_level
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.results: dict[str, dict[str, object]] = {}
        self.errors: dict[str, str] = {}
        self._stop_at: float | None = None
        self._abort = False
        self.started = threading.Event()
        """Set once every node has bound its inputs, reported ready and been told to go."""
        self.aborted = False
        """True once nodes were killed: abort(), or a stop that outlived the shutdown timeout."""
        self._awaiting: dict[str, set[tuple[str, str]]] = {}   # node -> local consumers yet to get its END
        self._released: set[str] = set()
        self._run_dir = Path(tempfile.mkdtemp(prefix="kkm-"))
        self.endpoints = input_endpoints(spec, scheme, str(self._run_dir))

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Graceful: sources finish, the rest drains (safe to call from a signal handler)."""
        if self._stop_at is None:
            self._stop_at = time.monotonic()

    def abort(self) -> None:
        """Hard: kill every node now (safe to call from a signal handler)."""
        self._abort = True

    # ------------------------------------------------------------------ run
    def run(self) -> list[dict[str, object]]:
        """Run to the end of stream (or a stop); returns each node's counters in graph order."""
        ctx = zmq.Context()
        control = ctx.socket(zmq.ROUTER)
        control.setsockopt(zmq.LINGER, 0)
        control_ep = f"ipc://{self._run_dir}/control"
        control.bind(control_ep)
        (self._run_dir / "graph.json").write_text(json.dumps(self.spec.to_dict()))
        (self._run_dir / "endpoints.json").write_text(json.dumps({
            "control": control_ep,
            "inputs": {f"{n}.{p}": ep for (n, p), ep in self.endpoints.items()},
        }))
        try:
            for name in self.names:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "kikimimi.engine.worker", "--run-dir", str(self._run_dir),
                     "--node", name, "--log-level", self.log_level],
                    stdin=subprocess.DEVNULL,
                )
            self._await_ready(control)
            for name in self.names:
                control.send_multipart([name.encode(), msgpack.packb({"cmd": "go"})])
            self._awaiting = {name: {dest for dests in self.spec.routes(name).values() for dest in dests
                                     if dest[0] in self.names} for name in self.names}
            self._release_done(control)
            self.started.set()
            self._supervise(ctx, control)
        finally:
            self._kill_all()
            control.close(linger=0)
            ctx.term()
            shutil.rmtree(self._run_dir, ignore_errors=True)
        if self.errors:
            name, err = next(iter(self.errors.items()))
            raise GraphFailed(f"node {name!r} failed: {err}")
        return [self.results[n] for n in self.names if n in self.results]

    def _recv(self, control: zmq.Socket, timeout_ms: int) -> tuple[str, dict[str, object]] | None:
        if not control.poll(timeout_ms):
            return None
        ident, payload = control.recv_multipart()
        return ident.decode(), msgpack.unpackb(payload)

    def _await_ready(self, control: zmq.Socket) -> None:
        ready: set[str] = set()
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(ready) < len(self.names):
            if self._abort or self._stop_at is not None:
                raise GraphFailed("stopped while the nodes were starting")
            if time.monotonic() > deadline:
                missing = sorted(set(self.names) - ready)
                raise GraphFailed(f"nodes did not start within {START_TIMEOUT_S:.0f} s: {', '.join(missing)}")
            for name, proc in self.procs.items():
                if name not in ready and proc.poll() is not None and name not in self.errors:
                    raise GraphFailed(f"node {name!r} exited with code {proc.returncode} while starting")
            got = self._recv(control, 50)
            if got is None:
                continue
            name, msg = got
            if msg.get("ev") == "failed":
                raise GraphFailed(f"node {name!r} could not start: {msg.get('error')}")
            if msg.get("ev") == "ready":
                ready.add(name)

    def _supervise(self, ctx: zmq.Context, control: zmq.Socket) -> None:
        stop_sent = False
        dead_handled: set[str] = set()
        while len(self.results) + len(dead_handled) < len(self.names):
            if self._abort:
                log.warning("aborting: killing all nodes")
                self.aborted = True
                return
            if self._stop_at is not None:
                if not stop_sent:
                    for name in self.names:
                        if issubclass(self.spec.node(name).cls, Source):
                            control.send_multipart([name.encode(), msgpack.packb({"cmd": "stop"})])
                    stop_sent = True
                if time.monotonic() - self._stop_at > self.shutdown_timeout_s:
                    log.warning("shutdown took longer than %.1f s: killing the remaining nodes",
                                self.shutdown_timeout_s)
                    self.aborted = True
                    return
            got = self._recv(control, 50)
            if got is not None:
                self._event(control, *got)
            for name, proc in self.procs.items():
                if proc.poll() is not None and name not in self.results and name not in dead_handled:
                    if self._recv_pending_done(control, name):
                        continue
                    dead_handled.add(name)
                    self.errors[name] = f"process exited with code {proc.returncode}"
                    log.error("node %r died (exit code %s): sending end of stream on its behalf and "
                              "stopping the graph", name, proc.returncode)
                    self._send_eos_for(ctx, name)
                    for waiting in self._awaiting.values():    # a dead consumer acknowledges nothing
                        waiting.difference_update({d for d in waiting if d[0] == name})
                    self._release_done(control)
                    self.stop()  # what feeds the dead node can no longer deliver: wind the graph down

    def _release_done(self, control: zmq.Socket) -> None:
        """Tell each node whose every local consumer has its END_OF_STREAM that it may exit (consumers on
        other machines, under --only, cannot answer here and are not waited for)."""
        for name, waiting in self._awaiting.items():
            if not waiting and name not in self._released:
                self._released.add(name)
                control.send_multipart([name.encode(), msgpack.packb({"cmd": "release"})])

    def _recv_pending_done(self, control: zmq.Socket, name: str) -> bool:
        """A process may exit just after its 'done' was queued: drain the control socket first."""
        while (got := self._recv(control, 0)) is not None:
            self._event(control, *got)
        return name in self.results

    def _event(self, control: zmq.Socket, name: str, msg: dict[str, object]) -> None:
        """A worker's 'eos' (an input of ``name`` received END_OF_STREAM) or 'done' (its counters)."""
        if msg.get("ev") == "eos":
            self._awaiting.get(str(msg.get("source")), set()).discard((name, str(msg.get("port"))))
            self._release_done(control)
        elif msg.get("ev") == "done":
            self.results[name] = msg.get("stats")  # type: ignore[assignment]
            if msg.get("error"):
                self.errors[name] = str(msg["error"])

    def _send_eos_for(self, ctx: zmq.Context, name: str) -> None:
        for dests in self.spec.routes(name).values():
            for dest in dests:
                sock = ctx.socket(zmq.PUSH)
                sock.connect(self.endpoints[dest])
                eos = Control(Header("all", 0, -1, time.monotonic_ns(), name), ControlKind.END_OF_STREAM,
                              f"node {name} died")
                sock.send_multipart(encode(eos))
                sock.close(linger=500)

    def _kill_all(self) -> None:
        # Nodes that reported 'done' are only closing sockets: give them a moment to exit by themselves.
        grace = 0.0 if self._abort or len(self.results) < len(self.names) else 2.0
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            if proc.poll() is None and grace:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.error("process %d did not exit after SIGKILL", proc.pid)
