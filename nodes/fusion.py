"""``fusion``: the point where a transcript meets everything else known about its utterance.

Today it forwards :class:`~kikimimi.engine.messages.Transcript` revisions unchanged, keeping each
utterance's revisions in order:

* Each (stream, utterance_id) remembers the highest revision forwarded and whether its final was.
* A revision at or below the highest one forwarded for its utterance is out of date: it is counted
  (``dropped_out_of_date``, and in the node's stats as ``stale``) and dropped. So is any revision that
  arrives after its utterance's final, and any revision of an utterance this node has already
  forgotten (see below).
* Everything else is forwarded at once, in arrival order. A final passes even when partials before
  it were lost upstream (only a higher revision already forwarded, or an earlier final, stops it).
* Memory stays bounded: a stream keeps the state of its ``keep_utterances`` newest utterances; older
  finished ones are forgotten and everything at or below the newest forgotten id counts as out of
  date. END_OF_STREAM for a stream forgets that stream ("all": every stream).

Later issues attach more here, on the same per-utterance state: the speaker of the utterance
(``SpeakerTurn`` messages from a diarization node, matched by stream and sample span) and affect
labels (emotion / prosody estimates over the utterance's span). The node then waits, within a
bounded latency, for those to arrive before forwarding a final, and adds them to what it emits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kikimimi.engine.clock import Clock
from kikimimi.engine.messages import ALL_STREAMS, Control, ControlKind, Message, Transcript
from kikimimi.engine.metrics import DROP_STALE
from kikimimi.engine.node import Node, PortSpec
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig


@dataclass
class _Utterance:
    revision: int
    final: bool


@dataclass
class _Stream:
    utterances: dict[int, _Utterance] = field(default_factory=dict)
    forgotten_upto: int = -1          # every utterance id <= this one is forgotten (out of date)


class FusionNode(Node):
    """Forwards transcript revisions in order per utterance, dropping out-of-date ones."""

    kind = "fusion"
    help = ("Joins what is known about each utterance; for now forwards transcripts, dropping out-of-date "
            "revisions per utterance.")
    inputs = (PortSpec("transcripts", (Transcript,), queue=QueueConfig.make("block", 256),
                       help="transcript revisions (partials and finals) from an asr node"),)
    outputs = (PortSpec("transcripts", (Transcript,), help="the same revisions, out-of-date ones removed"),)
    params = (
        Param("keep_utterances", int, 64, "per stream, remember the revision state of this many newest "
              "utterances", min=1, max=100_000),
    )

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        self._streams: dict[str, _Stream] = {}
        self.forwarded = 0
        self.finals = 0
        self.dropped_out_of_date = 0

    def on_message(self, port: str, msg: Message) -> None:
        """Forward ``msg`` if it is newer than everything forwarded for its utterance; else count and drop it."""
        if not isinstance(msg, Transcript):
            return
        st = self._streams.setdefault(msg.header.stream_id, _Stream())
        utt = st.utterances.get(msg.utterance_id)
        if (msg.utterance_id <= st.forgotten_upto
                or (utt is not None and (utt.final or msg.revision <= utt.revision))):
            self.dropped_out_of_date += 1
            self.stats.count_drop(DROP_STALE)
            return
        if utt is None:
            st.utterances[msg.utterance_id] = _Utterance(msg.revision, msg.final)
            self._prune(st)
        else:
            utt.revision, utt.final = msg.revision, msg.final
        self.forwarded += 1
        self.finals += int(msg.final)
        self.emit("transcripts", msg)

    def _prune(self, st: _Stream) -> None:
        """Forget the oldest utterances beyond ``keep_utterances`` (their ids become out of date)."""
        excess = len(st.utterances) - self.p.keep_utterances
        if excess <= 0:
            return
        for uid in sorted(st.utterances)[:excess]:
            del st.utterances[uid]
            st.forgotten_upto = max(st.forgotten_upto, uid)

    def on_control(self, port: str, ctrl: Control) -> None:
        """END_OF_STREAM forgets the stream's utterances ("all": every stream)."""
        if ctrl.kind is not ControlKind.END_OF_STREAM:
            return
        sid = ctrl.header.stream_id
        if sid == ALL_STREAMS:
            self._streams.clear()
        else:
            self._streams.pop(sid, None)
