"""Waiting on a condition with a deadline, for tests that watch a running graph from outside."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.01) -> None:
    """Return as soon as ``condition()`` is true; fail the test naming ``what`` after ``timeout_s``.

    The timeout only bounds a hang (the condition is an event of the pipeline, not a time): it is set far
    above what the wait takes on a loaded machine."""
    deadline = time.monotonic() + timeout_s
    tick = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s:g} s for {what}")
        tick.wait(poll_s)
