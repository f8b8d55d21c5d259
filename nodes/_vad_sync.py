"""Keep VAD events in step with the data they describe.

A node that takes audio (or features, or video) on one input and :class:`VadEvent` on another gets
them in no fixed order: over a file at full speed the VAD may run far ahead of the data, or behind it.
:class:`VadGate` holds the events until the data reaches them, and holds the data back when it is
more than ``lookahead`` samples past the VAD's PROGRESS watermark (so an utterance's end is not missed
because its data came in first). Live input is never held: there the VAD keeps up. Use::

    gate.on_event(ev)                       # for each VadEvent (returns an event forced out, if any)
    while True:
        consume_data_up_to(gate.data_limit(data_end, force))
        ev = gate.pop_due(data_end, force)
        if ev is None:
            break
        apply(ev)

``force`` (end of stream, or the data source ended) releases everything. Both holds are bounded:
at most ``max_pending`` events wait; past that the oldest is released (and counted in ``forced``);
how much data the caller holds is its own bound.

A caller that holds whole messages rather than samples (the asr node: messages of feature frames,
which it gives whole) uses :meth:`VadGate.mark_limit` instead of :meth:`VadGate.data_limit`: the
watermark's bound alone, None when nothing holds the data. The data then does not stop at a pending
SPEECH_END; the caller gives everything up to the watermark, then pops the events it reached (it
decodes partials only after that, so no partial reads past an end it has been sent). The avsr and speaker
nodes use :meth:`~VadGate.data_limit`.

After the VAD's END_OF_STREAM the caller sets ``mark`` to None: no watermark will come, the data is
no longer held for one.
"""

from __future__ import annotations

from collections import deque

from kikimimi.engine.errors import ParamError
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent


def event_position(ev: VadEvent) -> int:
    """The sample an event happens at: the start of a SPEECH_START, else the end."""
    return ev.start_sample if ev.kind is SpeechEventKind.SPEECH_START else ev.end_sample


class VadGate:
    """Holds VAD events until the data reaches them, and data past the VAD's watermark; see the module."""

    def __init__(self, lookahead: int, max_pending: int = 64) -> None:
        if lookahead < 0 or max_pending < 1:
            raise ParamError(f"VadGate lookahead={lookahead}, max_pending={max_pending}; allowed: lookahead >= 0, "
                             "max_pending >= 1")
        self.lookahead = lookahead
        self.max_pending = max_pending
        self.pending: deque[VadEvent] = deque()
        self.mark: int | None = None
        self.forced = 0

    def on_event(self, ev: VadEvent) -> VadEvent | None:
        """Take one event: PROGRESS moves the watermark; others wait. Returns the oldest waiting event
        when more than ``max_pending`` wait (the caller applies it now), else None."""
        if ev.kind is SpeechEventKind.PROGRESS:
            self.mark = ev.start_sample if self.mark is None else max(self.mark, ev.start_sample)
            return None
        self.pending.append(ev)
        if len(self.pending) > self.max_pending:
            self.forced += 1
            return self.pending.popleft()
        return None

    def mark_limit(self, force: bool = False) -> int | None:
        """The watermark's bound on the data alone: ``mark + lookahead``, or None (no bound) when the VAD
        sent no watermark or with ``force``. Unlike :meth:`data_limit` it ignores a pending SPEECH_END."""
        return None if force or self.mark is None else self.mark + self.lookahead

    def data_limit(self, data_end: int, force: bool = False) -> int:
        """How far (exclusive sample index) the data may be consumed now, given data up to ``data_end``:
        not past :meth:`mark_limit`, nor past the end of a pending SPEECH_END (even with ``force``)."""
        limit = data_end
        mark = self.mark_limit(force)
        if mark is not None:
            limit = min(limit, mark)
        ev = self.pending[0] if self.pending else None
        if ev is not None and ev.kind is SpeechEventKind.SPEECH_END:
            limit = min(limit, ev.end_sample)
        return limit

    def pop_due(self, data_end: int, force: bool = False) -> VadEvent | None:
        """The oldest waiting event if the data reached it (or ``force``), removed; else None."""
        if not self.pending:
            return None
        if force or event_position(self.pending[0]) <= data_end:
            return self.pending.popleft()
        return None

    def reset(self) -> None:
        """Forget the waiting events and the watermark."""
        self.pending.clear()
        self.mark = None
