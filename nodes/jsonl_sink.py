"""``jsonl_sink``: writes every data message as one JSON object per line (JSON Lines).

The line format is :func:`kikimimi.engine.jsonio.message_to_json`: ``{"type", "header", <fields>}``.
Arrays are written as their dtype and shape (and their data with ``include_arrays``). With
``include_timing: false`` the header's ``t_ns`` is left out, so the same input gives byte-identical
output on every run. With ``watermarks: false`` the VAD's periodic progress watermarks (``VadEvent`` of kind
``progress``, which tell downstream nodes how far the VAD has decided) are left out: ``kikimimi run --output``
writes them only with ``--watermarks``. Each line is flushed as it is written, so the file can be followed live.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from kikimimi.engine.clock import Clock
from kikimimi.engine.errors import ParamError
from kikimimi.engine.jsonio import message_to_json
from kikimimi.engine.messages import Message
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.engine.node import Node, PortSpec
from kikimimi.engine.params import REQUIRED, Param, ParamValues
from kikimimi.engine.queues import QueueConfig

STDOUT = "-"


class JsonlSink(Node):
    """Writes messages to a JSON-lines file (or stdout with path "-")."""

    kind = "jsonl_sink"
    help = "Writes each message as one JSON object per line to a file or stdout."
    inputs = (PortSpec("in", (Message,), queue=QueueConfig.make("block", 256), help="any messages"),)
    params = (
        Param("path", str, REQUIRED, 'output file, "-" for stdout (an existing file is overwritten)'),
        Param("include_arrays", bool, False, "write array data as nested lists (not just dtype and shape)"),
        Param("include_timing", bool, True, "write header.t_ns (false: output is identical across runs)"),
        Param("watermarks", bool, True, "write the VAD's progress watermarks (false: speech start/end events only)"),
    )

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        if not self.p.path:
            raise ParamError(f'node {name!r} (jsonl_sink): path must be a file name or "-" for stdout')
        self._out: TextIO | None = None
        self._owned = False

    def on_start(self) -> None:
        """Open the output (FileNotFoundError names the path if its folder does not exist)."""
        if self.p.path == STDOUT:
            self._out, self._owned = sys.stdout, False
        else:
            self._out, self._owned = open(self.p.path, "w", encoding="utf-8"), True  # noqa: SIM115

    def on_message(self, port: str, msg: Message) -> None:
        """Write one line for ``msg`` and flush it (nothing for a watermark without ``watermarks``)."""
        out = self._out
        if out is None:
            raise RuntimeError(f"jsonl_sink {self.name!r}: message before on_start() or after on_stop()")
        if not self.p.watermarks and isinstance(msg, VadEvent) and msg.kind is SpeechEventKind.PROGRESS:
            return
        obj = message_to_json(msg, self.p.include_arrays, self.p.include_timing)
        out.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
        out.flush()

    def on_stop(self) -> None:
        """Close the file (stdout is only flushed)."""
        if self._out is None:
            return
        if self._owned:
            self._out.close()
        else:
            self._out.flush()
        self._out = None
