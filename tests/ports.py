"""Free TCP ports for tests that run graphs over ZeroMQ tcp:// (the graph's ``zmq.tcp_base_port``).

A graph over tcp binds one port per input port of its nodes, consecutive from ``tcp_base_port``
(engine/zmq_transport.py: ``input_endpoints``), so a test needs a base whose next ``n`` ports are all free.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST, HIGHEST = 10000, 65000   # graph files accept 1024..65000; stay clear of the well-known ports


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands out to outgoing connections (a port there can be taken at any time)."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999   # Linux's default


def free_port_base(n: int, host: str = "127.0.0.1", tries: int = 200) -> int:
    """A port ``base`` such that ``base .. base + n - 1`` can all be bound on ``host`` right now.

    Bases are drawn at random outside the ephemeral range (so outgoing connections do not take them
    between this check and the graph's bind) and checked by binding every port without SO_REUSEADDR.
    Raises RuntimeError if ``tries`` draws find no free run of ``n`` ports."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    eph_lo, eph_hi = _ephemeral_range()
    spans = [(lo, hi - n + 1) for lo, hi in ((LOWEST, eph_lo - 1), (eph_hi + 1, HIGHEST)) if hi - n + 1 > lo]
    if not spans:
        raise RuntimeError(f"no room for {n} consecutive ports outside the ephemeral range {eph_lo}-{eph_hi}")
    rng = random.Random()
    for _ in range(tries):
        lo, hi = rng.choice(spans)
        base = rng.randint(lo, hi)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind((host, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError(f"found no {n} consecutive free ports on {host} in {tries} tries")
