"""``kikimimi transcribe FILE...``: the default streaming graph, run over files as fast as possible.

The graph is the bundled ``default`` graph itself (file or mic -> vad + features -> asr -> fusion ->
console), changed in three places only: its input node becomes a ``file_source`` at speed 0 (every
queue blocking, nothing ages out: lossless playback as fast as the nodes go), the asr node gets the
``--model`` / ``--language`` / ``--backend`` given (and its ``audio`` input, if it has one the graph
leaves unconnected, is fed from the input node: raw-audio backends such as sphinx need it), and the
console becomes a
:class:`TranscriptCollector` that keeps the final transcripts. So a file transcribes exactly as it
would stream live, only faster. Each file runs through its own graph, one after the other.

While a file runs, a progress bar goes to stderr when stderr is a terminal (plain text, redrawn
with a carriage return): the share of the file's audio the features node has taken in.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from kikimimi.engine.clock import Clock
from kikimimi.engine.errors import KikimimiError
from kikimimi.engine.graph import GraphSpec, load_graph
from kikimimi.engine.jsonio import message_to_json
from kikimimi.engine.messages import Message
from kikimimi.engine.msgs.fused import TRANSCRIPT_TYPES, AnyTranscript
from kikimimi.engine.node import Node, PortSpec
from kikimimi.engine.params import ParamValues
from kikimimi.engine.queues import QueueConfig
from kikimimi.engine.registry import register
from kikimimi.launch.subtitles import file_text, format_srt, format_vtt, make_cues

FORMATS = ("text", "jsonl", "vtt", "srt")
COLLECTOR = "transcript_collector"
ASR_KIND = "asr"
CONSOLE_KIND = "console_sink"


class TranscriptCollector(Node):
    """Keeps every final Transcript it receives (in arrival order); everything else is ignored."""

    kind = COLLECTOR
    help = "Collects final transcripts in memory (used by `kikimimi transcribe`)."
    inputs = (PortSpec("in", (Message,), queue=QueueConfig.make("block", 256), help="transcripts"),)

    def __init__(self, name: str, params: ParamValues | dict[str, Any] | None = None,
                 clock: Clock | None = None) -> None:
        super().__init__(name, params, clock)
        self.finals: list[AnyTranscript] = []

    def on_message(self, port: str, msg: Message) -> None:
        """Keep ``msg`` if it is a final transcript."""
        if isinstance(msg, TRANSCRIPT_TYPES) and msg.final:
            self.finals.append(msg)


register(TranscriptCollector)


@dataclass(frozen=True, slots=True)
class FileResult:
    """One input file and its final transcripts, in order."""

    path: str
    finals: tuple[AnyTranscript, ...]


def transcribe_graph(base: GraphSpec, path: str, model: str | None = None, language: str | None = None,
                     backend: str | None = None) -> GraphSpec:
    """``base`` (the default graph) set up to transcribe ``path``: file input at speed 0, asr options, collector."""
    from kikimimi.launch.cli import apply_overrides

    spec = apply_overrides(base, path, None, 0.0, "inproc")
    asr = [n for n in spec.nodes if n.kind == ASR_KIND]
    if len(asr) != 1:
        raise KikimimiError(f"transcribe needs a graph with exactly one {ASR_KIND!r} node; found {len(asr)}")
    node = asr[0]
    declared = {p.name for p in node.cls.params}
    params = dict(node.params)
    for name, value in (("model", model), ("language", language), ("backend", backend)):
        if value is None:
            continue
        if name not in declared:
            raise KikimimiError(f"the asr node has no parameter {name!r}; parameters: {', '.join(sorted(declared))}")
        params[name] = value
    spec = spec.with_node(node.name, node.kind, params)
    if (node.cls.input_spec("audio") is not None and "audio" not in {i.port for i in node.inputs}
            and spec.input_node is not None):
        # Backends that take raw audio (sphinx) read the asr node's audio input: feed it from the source.
        d = spec.to_dict()
        d["nodes"][node.name]["inputs"]["audio"] = {"from": f"{spec.input_node}.audio", "policy": "block",
                                                    "capacity": 512}
        spec = load_graph(d)
    consoles = [n.name for n in spec.nodes if n.kind == CONSOLE_KIND]
    if not consoles:
        raise KikimimiError("transcribe needs a console_sink in the graph (it is replaced by the collector)")
    for name in consoles:
        spec = spec.with_node(name, COLLECTOR, {})
    return spec.lossless()


def media_duration(path: str) -> float | None:
    """The file's duration in seconds, or None if it cannot be read cheaply."""
    try:
        import soundfile

        return float(soundfile.info(path).duration)
    except (RuntimeError, OSError, ImportError, ValueError):
        pass
    try:
        import av

        with av.open(path) as c:
            return None if c.duration is None else c.duration / 1_000_000
    except (ImportError, OSError, ValueError):
        return None


class Progress:
    """A one-line progress bar on a terminal: ``[#####-----]  50%  name  6.0/12.0 s``; nothing otherwise."""

    def __init__(self, out: TextIO, enabled: bool | None = None, width: int = 30) -> None:
        self.out = out
        isatty = getattr(out, "isatty", None)
        self.enabled = enabled if enabled is not None else bool(callable(isatty) and isatty())
        self.width = width
        self._last = ""

    def update(self, label: str, done_s: float, total_s: float | None) -> None:
        if not self.enabled:
            return
        if total_s:
            frac = min(max(done_s / total_s, 0.0), 1.0)
            fill = int(frac * self.width)
            line = (f"[{'#' * fill}{'-' * (self.width - fill)}] {frac * 100:3.0f}%  {label}  "
                    f"{done_s:.1f}/{total_s:.1f} s")
        else:
            line = f"{label}  {done_s:.1f} s"
        if line != self._last:
            self.out.write("\r" + line + "\x1b[K")
            self.out.flush()
            self._last = line

    def done(self) -> None:
        if self.enabled and self._last:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self._last = ""


def _audio_seconds(runner: Any, spec: GraphSpec) -> float:
    """Seconds of audio the features node (else the source) has taken in so far."""
    feats = [n for n in spec.nodes if n.kind == "features"]
    src = spec.node(spec.input_node) if spec.input_node else None
    chunk_ms = float(src.params.get("chunk_ms", 20)) if src is not None else 20.0
    if feats:
        count = runner.nodes[feats[0].name].stats.processed
    elif src is not None:
        count = runner.nodes[src.name].stats.emitted
    else:
        return 0.0
    return count * chunk_ms / 1000.0


def run_file(base: GraphSpec, path: str, model: str | None = None, language: str | None = None,
             backend: str | None = None, progress: Progress | None = None) -> FileResult:
    """Transcribe one file through the streaming graph; its final transcripts in order."""
    from kikimimi.engine.runner import GraphFailed, Runner, install_stop_signals

    spec = transcribe_graph(base, path, model, language, backend)
    runner = Runner(spec)
    collectors = [n for name, n in runner.nodes.items() if isinstance(n, TranscriptCollector)]
    total = media_duration(path) if progress is not None and progress.enabled else None
    restore = install_stop_signals(runner.stop, runner.abort)
    try:
        runner.start()
        while not runner.wait(0.1):
            if progress is not None:
                progress.update(Path(path).name, _audio_seconds(runner, spec), total)
    finally:
        restore()
        if progress is not None:
            progress.done()
    failed = [(n, d.error) for n, d in runner.drivers.items() if d.error is not None]
    if failed:
        name, err = failed[0]
        raise GraphFailed(f"{path}: node {name!r} failed: {type(err).__name__}: {err}") from err
    finals = sorted((t for c in collectors for t in c.finals),
                    key=lambda t: (t.header.stream_id, t.start_sample, t.utterance_id))
    return FileResult(path, tuple(finals))


def render(results: Sequence[FileResult], fmt: str) -> str:
    """The whole output for ``fmt`` (vtt/srt: of one file)."""
    if fmt == "text":
        return "".join(f"{r.path}\t{file_text(r.finals)}\n" for r in results)
    if fmt == "jsonl":
        lines = []
        for r in results:
            for t in r.finals:
                obj = {"file": r.path, **message_to_json(t, include_timing=False)}
                lines.append(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
        return "".join(lines)
    if fmt in ("vtt", "srt"):
        if len(results) != 1:
            raise KikimimiError(f"--format {fmt} renders one file at a time, got {len(results)}")
        cues = make_cues(results[0].finals)
        return format_vtt(cues) if fmt == "vtt" else format_srt(cues)
    raise KikimimiError(f"--format {fmt!r} is not allowed; allowed: {', '.join(FORMATS)}")


def _write(text: str, path: Path | None) -> None:
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        path.write_text(text, encoding="utf-8")


def transcribe(files: Sequence[str], base: GraphSpec, fmt: str = "text", output: str | None = None,
               model: str | None = None, language: str | None = None, backend: str | None = None,
               progress: Progress | None = None) -> list[FileResult]:
    """Transcribe ``files`` in order and write ``fmt`` to stdout or ``output``.

    text and jsonl: one stream of lines for all files (written as each file finishes when printing to
    stdout). vtt and srt: one document per file; with several files ``output`` must be a folder (made
    if missing) that receives ``<file stem>.vtt`` / ``.srt``.
    """
    if fmt not in FORMATS:
        raise KikimimiError(f"--format {fmt!r} is not allowed; allowed: {', '.join(FORMATS)}")
    for f in files:
        if not Path(f).is_file():
            raise KikimimiError(f"input file not found: {f}")
    out_path = Path(output) if output is not None else None
    out_dir: Path | None = None
    if fmt in ("vtt", "srt") and len(files) > 1:
        if out_path is None or (out_path.exists() and not out_path.is_dir()):
            raise KikimimiError(f"--format {fmt} with {len(files)} files needs --output DIR (one .{fmt} per file)")
        out_dir, out_path = out_path, None
        out_dir.mkdir(parents=True, exist_ok=True)
    results: list[FileResult] = []
    for f in files:
        r = run_file(base, f, model, language, backend, progress)
        results.append(r)
        if out_dir is not None:
            _write(render([r], fmt), out_dir / f"{Path(f).stem}.{fmt}")
        elif out_path is None:
            _write(render([r], fmt), None)
    if out_path is not None:
        _write(render(results, fmt), out_path)
    return results
