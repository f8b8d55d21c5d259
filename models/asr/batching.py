"""Decoding the due streams of one recognizer together, in one batched call.

Many streams share one :class:`~kikimimi.models.asr.recognizer.Recognizer`. :meth:`BatchDecoder.pump`
asks each stream's :class:`~kikimimi.models.asr.recognizer.RecognizerStream` for the request due now
(``step``), runs the due requests of all streams in one ``decode`` call, feeds each output back
(``apply``) and hands every new revision to the caller, again and again until no stream is due.

Batching: with ``batch_wait``, a due partial is held until every stream with an open utterance has
one due, or until its own stream's next message (the caller counts them in ``wait_msgs``), a
``release`` (a tick, the end), a final or a pump for one stream, so streams that are due at about the
same time share one decode call. Finals never wait. The partial interval adapts to the measured decode
time (:class:`~kikimimi.models.asr.policy.AdaptiveInterval`); a stream the caller says is lagging
behind real time skips its partials (counted in ``skipped_partials``), never its final.

A request that comes with its output (``ready``: a speculative final the stream kept, decoded earlier
by :meth:`BatchDecoder.speculate`) is applied without decoding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Protocol, TypeVar

from kikimimi.models.asr.policy import AdaptiveInterval
from kikimimi.models.asr.recognizer import DecodeRequest, Recognizer, RecognizerStream, Revision

MAX_ROUNDS = 16
"""Decode rounds per pump at most (each round decodes what the previous one left due)."""


class Scheduled(Protocol):
    """What the batcher needs of a stream: its recognizer state and its held partial."""

    rs: RecognizerStream
    waiting: DecodeRequest | None   # a due partial held for batching
    wait_msgs: int                  # messages of the stream since it was held


T = TypeVar("T", bound=Scheduled)


class BatchDecoder:
    """Runs the due requests of many streams of ``recognizer`` together; see the module docstring."""

    def __init__(self, recognizer: Recognizer, interval: AdaptiveInterval, batch_wait: bool = True) -> None:
        self.recognizer = recognizer
        self.interval = interval
        self.batch_wait = batch_wait
        self.decode_calls = 0
        self.decode_seconds = 0.0
        self.skipped_partials = 0

    def pump(self, streams: Collection[T], partial: bool, lagging: Callable[[T], bool],
             send: Callable[[T, Revision], None], only: T | None = None, release: bool = False,
             quiet: Callable[[T], bool] | None = None) -> None:
        """Decode every due stream of ``streams`` (only ``only``'s new requests, if given) together,
        repeatedly, until none is due; ``send`` gets each revision to publish, in order. ``partial``:
        partials may be decoded (finals always are); ``release``: held partials go now; ``quiet``: streams
        that decode no partial now (not counted as skipped)."""
        for _ in range(MAX_ROUNDS):
            batch: list[tuple[T, DecodeRequest]] = []
            for st in [only] if only is not None else streams:
                if st.waiting is not None:
                    continue
                lag = partial and lagging(st)
                req = st.rs.step(self.interval.frames,
                                 partial=partial and not lag and not (quiet is not None and quiet(st)))
                if req is None and lag and st.rs.utterance_open:
                    self.skipped_partials += 1
                if req is None:
                    continue
                if req.final or not self.batch_wait:
                    batch.append((st, req))
                else:
                    st.waiting, st.wait_msgs = req, 0
            waiting = [st for st in streams if st.waiting is not None]
            if waiting:
                n_open = sum(1 for st in streams if st.rs.utterance_open)
                if (release or only is not None or batch or len(waiting) >= n_open
                        or any(st.wait_msgs > 0 for st in waiting)):
                    for st in waiting:
                        batch.append((st, st.waiting))  # type: ignore[arg-type]
                        st.waiting = None
            if not batch:
                return
            todo = [r for _, r in batch if r.ready is None]
            decoded = iter(self._decode(todo) if todo else [])
            outs = [r.ready if r.ready is not None else next(decoded) for _, r in batch]
            for (st, req), out in zip(batch, outs, strict=True):
                rev = st.rs.apply(req, out)
                if rev is not None:
                    send(st, rev)

    def speculate(self, stream: RecognizerStream, end_sample: int) -> bool:
        """Decode the final an endpoint of ``stream`` at ``end_sample`` would ask for, now, and let the
        stream keep it (:mod:`~kikimimi.models.asr.speculation`); False if no such request is due."""
        req = stream.speculate(end_sample)
        if req is None:
            return False
        stream.keep(req, self._decode([req])[0])
        return True

    def _decode(self, requests: list[DecodeRequest]) -> list[object]:
        t0 = time.perf_counter()
        outs = self.recognizer.decode(requests)
        dt = time.perf_counter() - t0
        self.decode_calls += 1
        self.decode_seconds += dt
        if any(not r.final for r in requests):
            self.interval.observe(dt)
        return outs
