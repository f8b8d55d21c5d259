"""Model weights loaded once per process and shared by every user that asks with the same key.

A streaming model splits what is shared (weights, sessions: heavy, read-only while inference runs) from
per-stream state. Many nodes, or many graphs run one after another in one process (``kikimimi
transcribe`` over a batch of files), ask for the same weights: :func:`shared` loads them on the first
request and hands the same object to every later one with an equal key::

    model = shared(("silero", "onnx", threads), lambda: SileroVad(threads=threads))

The key names everything that changes what is loaded (kind, path or name, device, thread count). The
loader runs at most once per key, under a per-key lock, so two threads asking at once wait for one
load. Held objects are kept for the life of the process (:func:`clear` drops them, for tests and
benchmarks); :func:`loads` counts how often each key was actually loaded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_held: dict[Hashable, Any] = {}
_key_locks: dict[Hashable, threading.Lock] = {}
_loads: dict[Hashable, int] = {}


def shared(key: Hashable, load: Callable[[], T]) -> T:
    """The object loaded for ``key``: ``load()`` on the first call with that key, the same object after."""
    with _lock:
        if key in _held:
            return _held[key]  # type: ignore[no-any-return]
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        with _lock:
            if key in _held:
                return _held[key]  # type: ignore[no-any-return]
        obj = load()
        with _lock:
            _held[key] = obj
            _loads[key] = _loads.get(key, 0) + 1
        return obj


def loads() -> dict[Hashable, int]:
    """How many times each key was loaded since the process started (or since :func:`clear`)."""
    with _lock:
        return dict(_loads)


def clear() -> None:
    """Forget every held object and the load counts (the next request loads again)."""
    with _lock:
        _held.clear()
        _loads.clear()
        _key_locks.clear()
