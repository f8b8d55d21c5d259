"""``fusion``: the point where a transcript meets everything else known about its utterance.

It turns each recognizer :class:`~kikimimi.engine.msgs.speech.Transcript` revision into a
:class:`~kikimimi.engine.msgs.fused.LabeledTranscript` (the same text, span and words, plus who spoke
it, the face that spoke it and, later, how), keeping each utterance's revisions in order:

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

Speakers (optional ``speakers`` input, SpeakerTurn from a speaker node): each transcript gets the
speaker whose turns overlap its span most (final turns first, else the provisional ones) with the
turn's score; each word of a final gets the speaker of the turn holding its midpoint. A final waits
until the speaker node's final turns reach its end (or the speaker input ended), at most
``speaker_wait_ms``; later transcripts of the same stream wait behind it, so order is kept. Turns are
matched by sample span, not by utterance id (the two nodes number utterances independently); each
stream keeps its ``keep_turns`` newest turns.

Faces (optional ``active`` input, ActiveSpeaker from an active_speaker node): each transcript gets the
face whose speaking probability, averaged over the ActiveSpeaker windows ending inside its span, is
highest, with that mean as ``face_score``; ``face_id`` stays -1 when no face reaches ``face_threshold``.
Only windows ending inside the span count, and a final waits (with the speakers, at most
``speaker_wait_ms``) until a window ending after its end arrived, so the label does not depend on
arrival order.
With ``require_face`` the graph asks for speech that no visible face produced to be suppressed: a final
without a speaking face is dropped (counted as ``suppressed_no_face`` and in the stats as ``no_face``),
and so is a partial whose evidence so far says nobody in view speaks. A final whose windows did not
arrive in time is not suppressed on missing evidence: it goes out without a face (``face_timeouts``,
logged).

Affect (optional ``affect`` input, Affect from an affect node): each transcript gets the voice estimates that
overlap its span (finals when there are any, weighted by overlap), and, when a face is attached, that face's
expression estimates over the span (source ``face``), plus a fused label (:mod:`kikimimi.models.affect.fuse`).
A final waits (with the speakers, at most ``speaker_wait_ms``) until the voice finals reach its end
(``speaker_slack_ms``) or the affect input ended; each stream keeps its ``keep_affect`` newest estimates.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kikimimi.engine.clock import Clock
from kikimimi.engine.messages import Control, ControlKind, Message
from kikimimi.engine.metrics import DROP_NO_FACE, DROP_STALE
from kikimimi.engine.msgs.affect import Affect
from kikimimi.engine.msgs.fused import TRANSCRIPT_TYPES, AnyTranscript, LabeledTranscript
from kikimimi.engine.msgs.speaker import SpeakerTurn
from kikimimi.engine.msgs.vision import NO_FACE, ActiveSpeaker
from kikimimi.engine.node import PortSpec
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.streams import StreamNode
from kikimimi.models.affect.fuse import affect_labels, span_affect
from kikimimi.models.labeling import has_evidence, label, label_face

TICK_NS = 20_000_000
MAX_WAITING = 256          # transcripts per stream held behind a final that waits for its speaker


@dataclass
class _Utterance:
    revision: int
    final: bool


@dataclass
class _Stream:
    utterances: dict[int, _Utterance] = field(default_factory=dict)
    forgotten_upto: int = -1          # every utterance id <= this one is forgotten (out of date)
    turns: deque[SpeakerTurn] = field(default_factory=deque)
    final_end: int = -1               # end sample of the newest final speaker turn
    speakers_ended: bool = False
    waiting: deque[tuple[int, AnyTranscript]] = field(default_factory=deque)   # (deadline ns, transcript)
    active: deque[ActiveSpeaker] = field(default_factory=deque)
    active_end: int = -1              # newest end sample of an ActiveSpeaker window
    active_ended: bool = False
    affect: deque[Affect] = field(default_factory=deque)
    affect_end: int = -1              # newest end sample of a final voice estimate
    affect_ended: bool = False
    transcripts_ended: bool = False   # the recognizer's END_OF_STREAM came: forget it once nothing waits


class FusionNode(StreamNode[_Stream]):
    """Forwards transcript revisions in order per utterance, with speaker labels; see the module docstring."""

    kind = "fusion"
    help = ("Joins what is known about each utterance: transcripts (out-of-date revisions dropped) labelled "
            "with the speaker turns that overlap them, the visible face that spoke (optionally dropping speech "
            "no visible face produced) and how it sounded (affect).")
    inputs = (
        PortSpec("transcripts", TRANSCRIPT_TYPES, queue=QueueConfig.make("block", 256),
                 help="transcript revisions (partials and finals) from an asr or avsr node"),
        PortSpec("speakers", (SpeakerTurn,), queue=QueueConfig.make("block", 256),
                 help="speaker turns from a speaker node (optional)"),
        PortSpec("active", (ActiveSpeaker,), queue=QueueConfig.make("block", 1024),
                 help="speaking probabilities of visible faces from an active_speaker node (optional)"),
        PortSpec("affect", (Affect,), queue=QueueConfig.make("block", 256),
                 help="voice (and face) affect estimates from an affect node (optional)"),
    )
    # Files at full speed: a final waits for its speaker turns and faces however long they take (an hour).
    lossless_params = {"speaker_wait_ms": 3_600_000}
    outputs = (PortSpec("transcripts", (LabeledTranscript,), help="the same revisions, out-of-date ones removed, "
                        "labelled with speakers and face ids when those inputs are connected"),)
    params = (
        Param("keep_utterances", int, 64, "per stream, remember the revision state of this many newest "
              "utterances", min=1, max=100_000),
        Param("keep_turns", int, 256, "per stream, keep this many newest speaker turns", min=1, max=100_000),
        Param("speaker_wait_ms", int, 500, "a final waits at most this long for its speaker turns", min=0),
        Param("speaker_slack_ms", int, 250, "a final's speaker turns count as complete once they reach this "
              "close to its end", min=0),
        Param("keep_active", int, 4096, "per stream, keep this many newest ActiveSpeaker messages", min=1,
              max=1_000_000),
        Param("face_threshold", float, 0.5, "mean speaking probability a face needs to be named the speaker",
              min=0.0, max=1.0),
        Param("require_face", bool, False, "drop speech that no visible face was found to speak"),
        Param("keep_affect", int, 256, "per stream, keep this many newest affect estimates", min=1, max=100_000),
    )

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        self.forwarded = 0
        self.finals = 0
        self.dropped_out_of_date = 0
        self.speaker_timeouts = 0
        self.suppressed_no_face = 0
        self.face_timeouts = 0          # finals forwarded unlabelled because the faces' windows were late
        self.tick_interval_ns = TICK_NS

    @property
    def _wants_speakers(self) -> bool:
        return self.connected_inputs is not None and "speakers" in self.connected_inputs

    @property
    def _wants_affect(self) -> bool:
        return self.connected_inputs is not None and "affect" in self.connected_inputs

    @property
    def _wants_faces(self) -> bool:
        return self.connected_inputs is not None and "active" in self.connected_inputs

    def open_stream(self, sid: str, msg: Message) -> _Stream:
        return _Stream()

    def on_message(self, port: str, msg: Message) -> None:
        """A transcript is forwarded (or waits for its speaker and faces); a speaker turn or an active-speaker
        window is remembered and may release waiting finals."""
        if isinstance(msg, ActiveSpeaker):
            st = self.stream(msg)
            st.active.append(msg)
            while len(st.active) > self.p.keep_active:
                st.active.popleft()
            st.active_end = max(st.active_end, msg.end_sample)
            self._release(st)
            self._forget_if_done(msg.header.stream_id, st)
            return
        if isinstance(msg, Affect):
            st = self.stream(msg)
            st.affect.append(msg)
            while len(st.affect) > self.p.keep_affect:
                st.affect.popleft()
            if msg.final and msg.source == "voice":
                st.affect_end = max(st.affect_end, msg.end_sample)
            self._release(st)
            self._forget_if_done(msg.header.stream_id, st)
            return
        if isinstance(msg, SpeakerTurn):
            st = self.stream(msg)
            st.turns.append(msg)
            while len(st.turns) > self.p.keep_turns:
                st.turns.popleft()
            if msg.final:
                st.final_end = max(st.final_end, msg.end_sample)
            self._release(st)
            self._forget_if_done(msg.header.stream_id, st)
            return
        if not isinstance(msg, TRANSCRIPT_TYPES):
            return
        st = self.stream(msg)
        if st.waiting or (msg.final and not self._complete(st, msg)):
            st.waiting.append((self.clock.now_ns() + self.p.speaker_wait_ms * 1_000_000, msg))
            if len(st.waiting) > MAX_WAITING:
                self.speaker_timeouts += 1
                self._forward(st, st.waiting.popleft()[1])
            self._release(st)
            return
        self._forward(st, msg)

    def on_tick(self, now_ns: int) -> None:
        """Finals whose wait is over go out with what is known."""
        for sid, st in list(self.streams.items()):
            if st.waiting:
                self._release(st, now_ns)
                self._forget_if_done(sid, st)

    def on_control(self, port: str, ctrl: Control) -> None:
        """END_OF_STREAM on ``speakers`` or ``active`` releases the finals that waited for them. On
        ``transcripts`` no more transcripts come: the stream's utterances are forgotten ("all": every stream)
        once the finals still waiting for their speaker turns or faces have gone out (those inputs ended, or
        the wait ran out), not before: the recognizer often finishes a file before the speaker node does."""
        if ctrl.kind is not ControlKind.END_OF_STREAM:
            return
        for s in self.targets(ctrl):
            st = self.streams[s]
            if port == "speakers":
                st.speakers_ended = True
            elif port == "active":
                st.active_ended = True
            elif port == "affect":
                st.affect_ended = True
            elif port == "transcripts":
                st.transcripts_ended = True
            self._release(st)
            self._forget_if_done(s, st)

    def _forget_if_done(self, sid: str, st: _Stream) -> None:
        if st.transcripts_ended and not st.waiting:
            del self.streams[sid]

    def on_stop(self) -> None:
        """Forward everything still waiting."""
        for st in self.streams.values():
            self._release(st, force=True)

    # ------------------------------------------------------------------ internals
    def _complete(self, st: _Stream, msg: AnyTranscript) -> bool:
        slack = self.p.speaker_slack_ms * msg.sample_rate // 1000
        speakers = not self._wants_speakers or st.speakers_ended or st.final_end >= msg.end_sample - slack
        affect = not self._wants_affect or st.affect_ended or st.affect_end >= msg.end_sample - slack
        return speakers and affect and self._faces_complete(st, msg)

    def _faces_complete(self, st: _Stream, msg: AnyTranscript) -> bool:
        """Every active-speaker window ending inside the transcript's span has arrived (or none will): one
        ending after the span came (the faces of one frame arrive one after another, so a window ending exactly
        at the span's end does not yet say that the frame's other faces are in)."""
        return not self._wants_faces or st.active_ended or st.active_end > msg.end_sample

    def _release(self, st: _Stream, now_ns: int | None = None, force: bool = False) -> None:
        while st.waiting:
            deadline, msg = st.waiting[0]
            done = not msg.final or self._complete(st, msg)
            if not (force or done or (now_ns is not None and now_ns >= deadline)):
                return
            if msg.final and not done:
                self.speaker_timeouts += 1
            st.waiting.popleft()
            self._forward(st, msg)

    def _forward(self, st: _Stream, msg: AnyTranscript) -> None:
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
        out = msg if isinstance(msg, LabeledTranscript) else LabeledTranscript.of(msg)
        if st.turns:
            out = label(out, st.turns)
        if st.active:
            out = label_face(out, st.active, self.p.face_threshold)
        if st.affect:
            voice = span_affect(st.affect, out.start_sample, out.end_sample, "voice")
            face = (span_affect(st.affect, out.start_sample, out.end_sample, "face", out.face_id)
                    if out.face_id != NO_FACE else None)
            labels = affect_labels(voice, face)
            if labels:
                out = dataclasses.replace(out, affect=labels)
        if self.p.require_face and out.face_id == NO_FACE:
            if out.final and not self._faces_complete(st, out):
                # The faces' evidence is late (a slow vision path, a stalled camera): pass the speech on
                # unlabelled rather than call it speech nobody in view produced.
                self.face_timeouts += 1
                self.throttled(logging.WARNING, "face_timeout", "fusion %s: the active-speaker windows did not reach "
                               "the end of a final in time; forwarding it without a face", self.name)
            elif out.final or has_evidence(out, st.active):
                self.suppressed_no_face += 1
                self.stats.count_drop(DROP_NO_FACE)
                return
        self.forwarded += 1
        self.finals += int(out.final)
        self.emit("transcripts", out)

    def _prune(self, st: _Stream) -> None:
        """Forget the oldest utterances beyond ``keep_utterances`` (their ids become out of date)."""
        excess = len(st.utterances) - self.p.keep_utterances
        if excess <= 0:
            return
        for uid in sorted(st.utterances)[:excess]:
            del st.utterances[uid]
            st.forgotten_upto = max(st.forgotten_upto, uid)
