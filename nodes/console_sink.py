"""``console_sink``: prints messages as readable one-line summaries, as they arrive.

Transcripts: a final reads ``[stream] 1.23-4.56 s: text`` (utterance span in seconds: sample index
divided by the sample rate); a final with empty text (nothing recognized, e.g. a grammar backend that
rejected the utterance) prints nothing. Partials (non-final revisions) depend on ``partials``:

* ``live``: one status line redrawn in place as revisions arrive: carriage return, the line, and the
  ANSI erase-to-end-of-line (``ESC[K``); the unstable tail is dim (``ESC[2m``). The line is cut to the
  terminal width (keeping its end) so it never wraps. Any other line (a final, a speech event, end of
  stream) first erases the status line, prints, then redraws it. Only the newest stream's partial is
  shown; a final of that stream clears it, and so does the node's stop.
* ``lines``: one plain line per revision: ``[stream] 1.23-4.56 s ~ committed [unstable]``.
* ``off``: finals only.
* ``auto`` (default): ``live`` when the output is a terminal, ``off`` when it is not (a pipe or file
  gets only finished lines, no control characters).

VadEvents read like ``[file] speech start 0.52 s`` and ``[file] speech 0.52 s - 3.10 s (2.58 s, p=0.93)``
(``vad_events``: ``all`` both, ``start`` only the start, ``off`` (default) none; ``kikimimi -v run`` sets
``all``); progress watermarks never print. With ``end_of_stream: true`` (``-v``) the ends of stream the node
received print as ``[all] end of stream from fusion`` when the node stops, so after the last transcript (an
upstream such as the VAD ends before the recognizer's last finals reach the console).
AudioChunks are shown only with ``show_audio: true``; any other message is one line of type, stream,
seq and sample index. Every write is flushed at once. If the terminal goes away (a closed pipe),
printing stops with one warning.
"""

from __future__ import annotations

import shutil
import sys
import unicodedata
from typing import Any, TextIO

from kikimimi.engine.clock import Clock
from kikimimi.engine.messages import NO_SAMPLE, Control, ControlKind, Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.fused import TRANSCRIPT_TYPES, AnyTranscript
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.engine.msgs.vision import NO_FACE
from kikimimi.engine.node import Node, PortSpec
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig

PARTIAL_MODES = ("auto", "live", "lines", "off")
VAD_MODES = ("all", "start", "off")
ERASE_LINE = "\r\x1b[K"
DIM, RESET = "\x1b[2m", "\x1b[0m"


def _s(samples: int, rate: int) -> str:
    return f"{samples / rate:.2f} s"


def format_final(msg: AnyTranscript) -> str:
    """``[stream] 1.23-4.56 s: text`` for a final transcript; with speaker labels
    ``[stream] 1.23-4.56 s alice: text``, and ``... s alice: text | voice_1: text`` when its words were
    said by several speakers; ``... s face 0 (0.81) alice: text`` when a visible face spoke it; ``... s alice
    [happy 0.72]: text`` with the fused affect label and its probability."""
    r = msg.sample_rate
    head = f"[{msg.header.stream_id}] {msg.start_sample / r:.2f}-{msg.end_sample / r:.2f} s{_face(msg)}"
    runs: list[tuple[str, list[str]]] = []
    for w in msg.words:
        if w.speaker and (not runs or runs[-1][0] != w.speaker):
            runs.append((w.speaker, []))
        if runs:
            runs[-1][1].append(w.text)
    if len(runs) > 1:
        sep = "" if msg.language in ("ja", "zh", "th", "lo", "my", "km") else " "
        return head + _mood(msg) + " " + " | ".join(f"{who}: {sep.join(t.strip() for t in ws)}" for who, ws in runs)
    return f"{head}{_who(msg)}{_mood(msg)}: {msg.committed}"


def format_partial(msg: AnyTranscript) -> str:
    """``[stream] 1.23-4.56 s ~ committed [unstable]`` for a non-final revision (one line per revision)."""
    r = msg.sample_rate
    unstable = f"[{msg.unstable}]" if msg.unstable else ""
    text = " ".join(t for t in (msg.committed.strip(), unstable) if t)
    return (f"[{msg.header.stream_id}] {msg.start_sample / r:.2f}-{msg.end_sample / r:.2f} s{_face(msg)}{_who(msg)}"
            f"{_mood(msg)} ~ {text}")


def _who(msg: AnyTranscript) -> str:
    """`` alice`` when the fusion node labelled the speaker, else empty."""
    speaker = getattr(msg, "speaker", "")
    return f" {speaker}" if speaker else ""


def _mood(msg: AnyTranscript) -> str:
    """`` [happy 0.72]``: the fused affect label and its probability, when the fusion node attached affect."""
    fused = [a for a in getattr(msg, "affect", ()) if a.modality == "fused" and a.name not in ("arousal", "valence")]
    return f" [{fused[0].name} {fused[0].value:.2f}]" if fused else ""


def _face(msg: AnyTranscript) -> str:
    """`` face 3 (0.81)`` when the fusion node attached the face that spoke (`` face 3`` without a score when it
    did so with no speaking probability to report), else empty."""
    face_id, score = getattr(msg, "face_id", NO_FACE), getattr(msg, "face_score", 0.0)
    if face_id < 0:
        return ""
    return f" face {face_id} ({score:.2f})" if score > 0 else f" face {face_id}"


def format_message(msg: Message, show_audio: bool = False) -> str | None:
    """The console line for ``msg``, or None if it is not shown (partial transcripts: see :func:`format_partial`)."""
    h = msg.header
    tag = f"[{h.stream_id}]"
    if isinstance(msg, TRANSCRIPT_TYPES):
        return format_final(msg) if msg.final and msg.committed.strip() else None
    if isinstance(msg, VadEvent):
        if msg.kind is SpeechEventKind.PROGRESS:
            return None               # watermarks are for nodes, not people
        if msg.kind is SpeechEventKind.SPEECH_START:
            return f"{tag} speech start {_s(msg.start_sample, msg.sample_rate)}"
        rate = msg.sample_rate
        return (f"{tag} speech {_s(msg.start_sample, rate)} - {_s(msg.end_sample, rate)} "
                f"({_s(msg.end_sample - msg.start_sample, rate)}, p={msg.probability:.2f})")
    if isinstance(msg, AudioChunk):
        if not show_audio:
            return None
        return (f"{tag} audio #{h.seq} {_s(h.sample_index, msg.sample_rate)} +{msg.n_samples} samples "
                f"({msg.sample_rate} Hz, {msg.channels} ch, {msg.samples.dtype})")
    at = "" if h.sample_index == NO_SAMPLE else f" sample {h.sample_index}"
    return f"{tag} {msg.type_name} #{h.seq}{at} from {h.source or '?'}"


def display_width(text: str) -> int:
    """Terminal cells ``text`` takes (East Asian wide and full-width characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def fit_tail(text: str, width: int) -> str:
    """``text`` cut from the left to at most ``width`` cells, starting with an ellipsis when cut."""
    if display_width(text) <= width:
        return text
    out: list[str] = []
    used = 1  # the ellipsis
    for c in reversed(text):
        w = display_width(c)
        if used + w > width:
            break
        out.append(c)
        used += w
    return "…" + "".join(reversed(out))


def live_line(msg: AnyTranscript, width: int, color: bool = True) -> str:
    """The status line of a partial: ``[stream] 1.23 s: committed unstable``, cut to ``width`` cells.

    The unstable tail is dim when ``color``; the cut keeps the end of the text, where it changes.
    """
    head = f"[{msg.header.stream_id}] {msg.start_sample / msg.sample_rate:.2f} s: "
    committed, unstable = msg.committed, msg.unstable
    plain = fit_tail(head + committed + unstable, max(width, 8))
    if not color or not unstable:
        return plain
    # Re-split the cut text: its last len(unstable) characters (or all of it) are the unstable tail.
    n = min(len(unstable), len(plain))
    return plain[:-n] + DIM + plain[-n:] + RESET if n else plain


class ConsoleSink(Node):
    """Prints transcripts (live partials on a terminal), VAD events, and summaries of other messages."""

    kind = "console_sink"
    help = ("Prints messages live as readable lines: final transcripts with their times, partials redrawn "
            "in place on a terminal, speech events.")
    inputs = (PortSpec("in", (Message,), queue=QueueConfig.make("block", 256), help="any messages"),)
    params = (
        Param("stream", str, "stdout", "where to print", choices=("stdout", "stderr")),
        Param("show_audio", bool, False, "also print a line per AudioChunk"),
        Param("partials", str, "auto", "partial transcripts: live = redraw one line in place, lines = one line "
              "per revision, off = finals only, auto = live on a terminal, else off", choices=PARTIAL_MODES),
        Param("vad_events", str, "off", "speech events: all = start and end lines, start = start lines only, "
              "off = none", choices=VAD_MODES),
        Param("end_of_stream", bool, False, "print each end of stream received (which upstream sent it) when the "
              "node stops, after the last transcript"),
    )

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        self._broken = False
        self._mode = "off"
        self._live: AnyTranscript | None = None     # the partial on the status line
        self._shown = False                       # the status line has something on screen
        self._ends: list[str] = []                # end-of-stream lines, printed at stop

    def _out(self) -> TextIO:
        return sys.stdout if self.p.stream == "stdout" else sys.stderr

    def on_start(self) -> None:
        """Decide the partials mode (``auto``: live if the output is a terminal)."""
        mode = self.p.partials
        if mode == "auto":
            isatty = getattr(self._out(), "isatty", None)
            mode = "live" if callable(isatty) and isatty() else "off"
        self._mode = mode

    def _raw(self, text: str) -> None:
        if self._broken:
            return
        out = self._out()
        try:
            out.write(text)
            out.flush()
        except BrokenPipeError:
            self._broken = True
            self.log.warning("console_sink %s: %s was closed; no more output", self.name, self.p.stream)

    def _write(self, line: str) -> None:
        """Print ``line``; a live status line is erased first and redrawn after it."""
        if self._shown:
            self._raw(ERASE_LINE + line + "\n")
            self._shown = False
            self._redraw()
        else:
            self._raw(line + "\n")

    def _redraw(self) -> None:
        if self._live is None:
            if self._shown:
                self._raw(ERASE_LINE)
                self._shown = False
            return
        width = shutil.get_terminal_size((100, 24)).columns - 1
        self._raw(ERASE_LINE + live_line(self._live, width))
        self._shown = True

    def _transcript(self, msg: AnyTranscript) -> None:
        live = self._live
        if msg.final:
            if live is not None and live.header.stream_id == msg.header.stream_id:
                self._live = None
                if not msg.committed.strip():
                    self._redraw()                 # rejected / empty: just clear the partial
            line = format_message(msg)
            if line is not None:
                self._write(line)
            return
        if self._mode == "lines":
            self._write(format_partial(msg))
        elif self._mode == "live":
            self._live = msg
            self._redraw()

    def on_message(self, port: str, msg: Message) -> None:
        """Print the message's line, if it has one (partial transcripts as the mode says)."""
        if isinstance(msg, TRANSCRIPT_TYPES):
            self._transcript(msg)
            return
        if isinstance(msg, VadEvent) and (self.p.vad_events == "off" or (
                self.p.vad_events == "start" and msg.kind is not SpeechEventKind.SPEECH_START)):
            return
        line = format_message(msg, self.p.show_audio)
        if line is not None:
            self._write(line)

    def on_control(self, port: str, ctrl: Control) -> None:
        """Note an end of stream (with ``end_of_stream``), to print it at stop after every transcript."""
        if ctrl.kind is ControlKind.END_OF_STREAM and self.p.end_of_stream:
            self._ends.append(f"[{ctrl.header.stream_id}] end of stream from {ctrl.header.source or '?'}")

    def on_stop(self) -> None:
        """Clear the status line, print the ends of stream received (with ``end_of_stream``), in arrival order,
        and leave the terminal on a fresh line."""
        self._live = None
        if self._shown:
            self._raw(ERASE_LINE)
            self._shown = False
        for line in self._ends:
            self._raw(line + "\n")
        self._ends.clear()
