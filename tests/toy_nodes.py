"""Small node kinds for engine tests (registered when imported; also via KIKIMIMI_NODE_MODULES)."""

from __future__ import annotations

import json
import threading
from typing import ClassVar

import numpy as np

from kikimimi.engine.messages import Control, Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.node import Node, PortSpec, Source
from kikimimi.engine.params import Param
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.registry import register


@register
class RampSource(Source):
    """Emits `count` chunks of `size` int16 samples holding their own absolute indices (mod 2**15)."""

    kind = "toy_ramp"
    outputs = (PortSpec("audio", (AudioChunk,)),)
    params = (Param("count", int, 10), Param("size", int, 160), Param("stream_id", str, "toy"),
              Param("forever", bool, False))

    def on_start(self) -> None:
        self.i = 0

    def produce(self, stop: threading.Event) -> bool:
        if self.i >= self.p.count and not self.p.forever:
            return False
        start = self.i * self.p.size
        data = (np.arange(start, start + self.p.size) % 32768).astype(np.int16).reshape(-1, 1)
        self.emit("audio", AudioChunk(self.header("audio", self.p.stream_id, start), data, 16000))
        self.i += 1
        if self.p.forever:
            stop.wait(0.005)
        return True


@register
class Gain(Node):
    """Passes audio through, negated (a middle node that touches the data)."""

    kind = "toy_gain"
    inputs = (PortSpec("audio", (AudioChunk,), QueueConfig.make("block", 16)),)
    outputs = (PortSpec("audio", (AudioChunk,)),)
    params = (Param("fail_on", int, -1, help="raise on the chunk with this seq"),)

    def on_message(self, port: str, msg: Message) -> None:
        if not isinstance(msg, AudioChunk):
            return
        if msg.header.seq == self.p.fail_on:
            raise RuntimeError(f"failing on purpose at seq {msg.header.seq}")
        out = AudioChunk(self.header("audio", msg.header.stream_id, msg.header.sample_index, msg.header.t_ns),
                         (-msg.samples.astype(np.int32)).clip(-32768, 32767).astype(np.int16), msg.sample_rate)
        self.emit("audio", out)


@register
class Collect(Node):
    """Records what arrives: in `Collect.seen` (this process) and, if `path` is set, as JSON lines."""

    kind = "toy_collect"
    inputs = (PortSpec("in", (Message,), QueueConfig.make("block", 64)),)
    params = (Param("path", str, None, nullable=True), Param("delay_s", float, 0.0),
              Param("delay_first_s", float, 0.0, help="extra wait after the first message (a stalled consumer)"))
    seen: ClassVar[dict[str, list[Message]]] = {}

    def on_start(self) -> None:
        Collect.seen[self.name] = []
        self.file = open(self.p.path, "w") if self.p.path else None  # noqa: SIM115
        self.first = True

    def on_message(self, port: str, msg: Message) -> None:
        self._record(msg)
        delay = self.p.delay_s + (self.p.delay_first_s if self.first else 0.0)
        self.first = False
        if delay:
            threading.Event().wait(delay)

    def on_control(self, port: str, ctrl: Control) -> None:
        self._record(ctrl)

    def _record(self, msg: Message) -> None:
        Collect.seen[self.name].append(msg)
        if self.file is not None:
            row = {"type": msg.type_name, "seq": msg.header.seq, "source": msg.header.source,
                   "index": msg.header.sample_index}
            if isinstance(msg, AudioChunk):
                row["sum"] = int(msg.samples.astype(np.int64).sum())
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()

    def on_stop(self) -> None:
        if self.file is not None:
            self.file.close()
