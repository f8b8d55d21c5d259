"""Per-node counters: what came in, what was processed, what was dropped and why, and how long it took."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import cast

# Reasons a message can be dropped; every drop is counted under exactly one of them.
DROP_OVERFLOW = "overflow"        # a bounded queue was full (drop_oldest) or superseded (latest)
DROP_STALE = "stale"              # older than the input's max age when it reached the head
DROP_REJECTED = "rejected"        # failed wire validation (the kind is counted separately)
DROP_ERROR = "error"              # the node raised while processing it
DROP_FLUSHED = "flushed"          # discarded by a FLUSH control
DROP_ABORTED = "aborted"          # still queued when the node was aborted (hard stop)
DROP_NO_FACE = "no_face"          # speech that no visible face produced, suppressed by the graph's request
DROP_REASONS = (DROP_OVERFLOW, DROP_STALE, DROP_REJECTED, DROP_ERROR, DROP_FLUSHED, DROP_ABORTED, DROP_NO_FACE)


@dataclass
class NodeStats:
    """Counters of one node. Thread-safe increments; :meth:`snapshot` gives a plain dict for reports."""

    node: str
    received: int = 0
    processed: int = 0
    emitted: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    rejected_by_kind: Counter[str] = field(default_factory=Counter)
    busy_ns: int = 0
    max_busy_ns: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_received(self, n: int = 1) -> None:
        with self._lock:
            self.received += n

    def count_drop(self, reason: str, n: int = 1) -> None:
        if reason not in DROP_REASONS:
            raise ValueError(f"drop reason {reason!r} is not one of {DROP_REASONS}")
        with self._lock:
            self.dropped[reason] += n

    def count_rejected(self, kind: str) -> None:
        with self._lock:
            self.dropped[DROP_REJECTED] += 1
            self.rejected_by_kind[kind] += 1

    def count_processed(self, busy_ns: int) -> None:
        with self._lock:
            self.processed += 1
            self.busy_ns += busy_ns
            if busy_ns > self.max_busy_ns:
                self.max_busy_ns = busy_ns

    def count_emitted(self, n: int = 1) -> None:
        with self._lock:
            self.emitted += n

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def snapshot(self) -> dict[str, object]:
        """Plain data (str, int, dict) for printing, JSON or the wire."""
        with self._lock:
            return {
                "node": self.node,
                "received": self.received,
                "processed": self.processed,
                "emitted": self.emitted,
                "dropped": dict(self.dropped),
                "rejected_by_kind": dict(self.rejected_by_kind),
                "busy_ns": self.busy_ns,
                "max_busy_ns": self.max_busy_ns,
            }


def format_stats(snapshots: list[dict[str, object]]) -> str:
    """A fixed-width table of node counters, one row per node."""
    head = f"{'node':<16} {'recv':>8} {'proc':>8} {'emit':>8} {'drop':>6}  {'busy ms':>9} {'max ms':>8}  drops"
    lines = [head, "-" * len(head)]
    for s in snapshots:
        dropped = cast(dict[str, int], s["dropped"])
        rejected = cast(dict[str, int], s.get("rejected_by_kind") or {})
        detail = ", ".join(f"{k}={v}" for k, v in sorted(dropped.items()) if v)
        if rejected:
            detail += " (" + ", ".join(f"{k}={v}" for k, v in sorted(rejected.items())) + ")"  # type: ignore[union-attr]
        lines.append(
            f"{s['node']!s:<16} {s['received']:>8} {s['processed']:>8} {s['emitted']:>8} "
            f"{sum(dropped.values()):>6}  {int(s['busy_ns']) / 1e6:>9.1f} {int(s['max_busy_ns']) / 1e6:>8.2f}  "
            f"{detail or '-'}"
        )
    return "\n".join(lines)
