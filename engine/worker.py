"""One node in its own process, over ZeroMQ: ``python -m kikimimi.engine.worker --run-dir D --node N``.

Started by :class:`kikimimi.engine.procs.ProcessRunner`. The run directory holds ``graph.json`` (the
graph, as plain data) and ``endpoints.json``. The worker talks to its parent over a DEALER socket
with msgpack maps (never pickle):

    worker -> parent: {"ev": "ready"} | {"ev": "failed", "error": str} | {"ev": "done", "stats": {...}}
                      | {"ev": "eos", "port": str, "source": str}   (an input received END_OF_STREAM)
    parent -> worker: {"cmd": "go"} | {"cmd": "stop"} | {"cmd": "abort"}
                      | {"cmd": "release"}   (every consumer here has this node's END_OF_STREAM: it may exit)

SIGINT is ignored (the parent coordinates a terminal's Ctrl-C); SIGTERM asks for a graceful stop. On
Linux the worker gets SIGTERM when its parent dies, so no orphan keeps running.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import msgpack
import zmq

from kikimimi.engine.clock import MonotonicClock
from kikimimi.engine.driver import NodeDriver
from kikimimi.engine.graph import load_graph
from kikimimi.engine.messages import Control, register_types
from kikimimi.engine.node import Source
from kikimimi.engine.runner import build_node
from kikimimi.engine.zmq_transport import LINGER_MS, ZmqReceiver, ZmqSender

log = logging.getLogger("kikimimi.worker")
PR_SET_PDEATHSIG = 1
HARD_EXIT_AFTER_S = 3.0


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the parent-pid watchdog below still ends us


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kikimimi-worker")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level, format=f"%(levelname)s [{args.node}] %(name)s: %(message)s")
    parent = os.getppid()
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    run_dir = Path(args.run_dir)
    spec = load_graph(json.loads((run_dir / "graph.json").read_text()))
    # What this process may receive: control messages, and the types on the graph's ports.
    register_types([Control, *spec.message_types()])
    eps = json.loads((run_dir / "endpoints.json").read_text())
    endpoints = {tuple(k.split(".", 1)): v for k, v in eps["inputs"].items()}
    name = args.node

    ctx = zmq.Context()
    control = ctx.socket(zmq.DEALER)
    control.setsockopt(zmq.IDENTITY, name.encode())
    control.setsockopt(zmq.LINGER, 1000)
    control.connect(eps["control"])

    def tell(**msg: object) -> None:
        control.send(msgpack.packb(msg))

    try:
        node, inbox, upstream = build_node(spec, name, MonotonicClock())
        driver = NodeDriver(node, inbox, upstream)
        ns = spec.node(name)
        receiver = None
        if inbox is not None:
            bindings = {i.port: endpoints[(name, i.port)] for i in ns.inputs}
            specs = {i.port: node.input_spec(i.port) for i in ns.inputs}
            receiver = ZmqReceiver(ctx, inbox, bindings, specs, node.stats,  # type: ignore[arg-type]
                                   int(spec.zmq.max_message_mb * 1024 * 1024))
            driver.wait_hook = receiver.pump
        routes = {port: [endpoints[d] for d in dests] for port, dests in spec.routes(name).items()}
        sender = ZmqSender(ctx, routes, driver.abort_event)
        node.bind(sender.emit)
        driver.start_node()
    except Exception as exc:
        log.exception("could not start")
        tell(ev="failed", error=f"{type(exc).__name__}: {exc}")
        control.close(linger=1000)
        ctx.term()
        return 1

    def graceful(signum: int, frame: object) -> None:
        driver.stop_event.set()
        # If the graceful stop does not finish in time (parent gone, peers dead), leave anyway.
        threading.Timer(HARD_EXIT_AFTER_S, lambda: os._exit(3)).start()

    signal.signal(signal.SIGTERM, graceful)
    tell(ev="ready")

    go = threading.Event()
    released = False
    thread = threading.Thread(target=driver.run, name=f"node-{name}", daemon=True)

    def acknowledge_ends() -> None:
        """Tell the parent of every END_OF_STREAM this node's inputs received (it releases their senders)."""
        while receiver is not None and receiver.ends_received:
            port, source = receiver.ends_received.popleft()
            tell(ev="eos", port=port, source=source)

    def turn() -> bool:
        """One turn of the control loop (acknowledgements, one command, the parent watchdog); False: leave."""
        nonlocal released
        acknowledge_ends()
        if control.poll(50):
            cmd = msgpack.unpackb(control.recv()).get("cmd")
            if cmd == "go" and not go.is_set():
                go.set()
                thread.start()
            elif cmd == "release":
                released = True
            elif cmd == "stop":
                if isinstance(node, Source):
                    driver.stop_event.set()
            elif cmd == "abort":
                driver.abort_event.set()
                driver.stop_event.set()
                if inbox is not None:
                    inbox.close(discard=True)
                if not go.is_set():
                    return False
        if os.getppid() != parent:
            log.error("parent process is gone: stopping")
            driver.stop_event.set()
            driver.abort_event.set()
            if not go.is_set():
                return False
        return True

    while not driver.finished.is_set() and turn():
        pass
    if go.is_set():
        thread.join()
    acknowledge_ends()
    # Stay until every consumer of this node on this machine has received its END_OF_STREAM (the parent says
    # "release"): over ipc, libzmq can drop what a process still had in flight when it exits while the
    # receiver's queue is full, whatever the linger (zeromq/libzmq#4660), and a consumer then waits for ever.
    while go.is_set() and not released and not driver.abort_event.is_set() and turn():
        pass
    sender.close(linger_ms=0 if driver.abort_event.is_set() else LINGER_MS)
    if receiver is not None:
        receiver.close()
    tell(ev="done", stats=node.stats.snapshot(), error=None if driver.error is None else str(driver.error))
    control.close(linger=1000)
    ctx.term()
    return 0 if driver.error is None else 2


if __name__ == "__main__":
    sys.exit(main())
