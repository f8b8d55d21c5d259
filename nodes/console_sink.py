"""``console_sink``: prints messages as readable one-line summaries, as they arrive.

VadEvents read like ``[file] speech start 0.52 s`` and ``[file] speech 0.52 s - 3.10 s (2.58 s, p=0.93)``
(times are sample indices divided by the sample rate). AudioChunks are shown only with
``show_audio: true``; any other message is one line of type, stream, seq and sample index. Every line
is flushed at once. If the terminal goes away (a closed pipe), printing stops with one warning.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from kikimimi.engine.clock import Clock
from kikimimi.engine.messages import (
    NO_SAMPLE,
    AudioChunk,
    Control,
    ControlKind,
    Message,
    SpeechEventKind,
    VadEvent,
)
from kikimimi.engine.node import Node, PortSpec
from kikimimi.engine.params import Param, ParamValues
from kikimimi.engine.queues import QueueConfig


def _s(samples: int, rate: int) -> str:
    return f"{samples / rate:.2f} s"


def format_message(msg: Message, show_audio: bool = False) -> str | None:
    """The console line for ``msg``, or None if it is not shown."""
    h = msg.header
    tag = f"[{h.stream_id}]"
    if isinstance(msg, VadEvent):
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


class ConsoleSink(Node):
    """Prints VAD events (and, optionally, audio chunks) and summaries of other messages."""

    kind = "console_sink"
    help = "Prints messages live as readable lines (speech events with times in seconds)."
    inputs = (PortSpec("in", (Message,), queue=QueueConfig.make("block", 256), help="any messages"),)
    params = (
        Param("stream", str, "stdout", "where to print", choices=("stdout", "stderr")),
        Param("show_audio", bool, False, "also print a line per AudioChunk"),
    )

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        self._broken = False

    def _write(self, line: str) -> None:
        if self._broken:
            return
        out: TextIO = sys.stdout if self.p.stream == "stdout" else sys.stderr
        try:
            out.write(line + "\n")
            out.flush()
        except BrokenPipeError:
            self._broken = True
            self.log.warning("console_sink %s: %s was closed; no more output", self.name, self.p.stream)

    def on_message(self, port: str, msg: Message) -> None:
        """Print the message's line, if it has one."""
        line = format_message(msg, self.p.show_audio)
        if line is not None:
            self._write(line)

    def on_control(self, port: str, ctrl: Control) -> None:
        """Say when a stream ends."""
        if ctrl.kind is ControlKind.END_OF_STREAM:
            self._write(f"[{ctrl.header.stream_id}] end of stream from {ctrl.header.source or '?'}")
