"""``kikimimi transcribe FILE...``: the default streaming graph, run over files as fast as possible.

The graph is the bundled ``default`` graph itself (file or mic -> vad + features -> asr -> fusion ->
console), changed in three places only: its input node becomes a ``file_source`` at speed 0 (every
queue blocking, nothing ages out: lossless playback as fast as the nodes go), the recognizer gets the
``--model`` / ``--language`` / ``--backend`` given, and its sinks (nodes without outputs: the console)
are left out. The transcripts come from the graph's ``transcripts`` output (``outputs:`` in the graph
file), which a :class:`TranscriptCollector` taps. The recognizer is found from that output too: the node
where its transcripts start (see :func:`recognizer`). So a file transcribes exactly as it would stream
live, only faster, and no node kind is named here.

Each file runs through its own graph (a new Runner), one after the other, in this process: nodes that load
their weights through :func:`kikimimi.models.weights.shared` load them once for all the files.

While a file runs, a progress bar goes to stderr when stderr is a terminal (plain text, redrawn
with a carriage return): how far into the file's audio the graph's outputs have got.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from kikimimi.engine.errors import KikimimiError
from kikimimi.engine.graph import GraphSpec, NodeSpec
from kikimimi.engine.jsonio import message_to_json
from kikimimi.engine.messages import NO_SAMPLE, Message
from kikimimi.engine.msgs.fused import TRANSCRIPT_TYPES, AnyTranscript
from kikimimi.launch.subtitles import file_text, format_srt, format_vtt, make_cues

if TYPE_CHECKING:
    from kikimimi.engine.runner import Runner

log = logging.getLogger("kikimimi.transcribe")

FORMATS = ("text", "jsonl", "vtt", "srt")
TRANSCRIPTS = "transcripts"
"""The output role transcribe reads (``outputs: {transcripts: node.port}`` in the graph file)."""
RECOGNIZER_PARAMS = ("model", "language", "backend")


class TranscriptCollector:
    """Keeps every final transcript given to :meth:`add` (in arrival order); everything else is ignored.
    A Runner tap: ``runner.tap(spec.output("transcripts").ref, collector.add)``."""

    def __init__(self) -> None:
        self.finals: list[AnyTranscript] = []

    def add(self, msg: Message) -> None:
        """Keep ``msg`` if it is a final transcript."""
        if isinstance(msg, TRANSCRIPT_TYPES) and msg.final:
            self.finals.append(msg)


class AudioPosition:
    """How far into the audio the messages given to :meth:`add` have got (seconds): the furthest sample
    position (``header.sample_index`` or ``end_sample``) over its sample rate, of messages that have one.
    A Runner tap on each output of the graph (VAD events carry a watermark every 100 ms of audio)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._lock = threading.Lock()

    def add(self, msg: Message) -> None:
        rate = getattr(msg, "sample_rate", None)
        if not isinstance(rate, int) or rate <= 0:
            return
        end = max(msg.header.sample_index, getattr(msg, "end_sample", NO_SAMPLE))
        if end == NO_SAMPLE:
            return
        with self._lock:
            self.seconds = max(self.seconds, end / rate)


@dataclass(frozen=True, slots=True)
class FileResult:
    """One input file and its final transcripts, in order; with the wall time it took to build and start
    its graph (``setup_s``: node construction and start, where models load and warm up) and to run it."""

    path: str
    finals: tuple[AnyTranscript, ...]
    setup_s: float = 0.0
    run_s: float = 0.0
    interrupted: bool = False
    """A signal stopped it: ``finals`` end where it stopped (and the files after it were not started)."""


def _carries_transcripts(spec: GraphSpec, node: str, port: str) -> bool:
    ospec = spec.node(node).cls.output_spec(port)
    return ospec is not None and any(issubclass(t, TRANSCRIPT_TYPES) for t in ospec.types)


def recognizer(spec: GraphSpec, role: str = TRANSCRIPTS) -> NodeSpec:
    """The node where the transcripts of output ``role`` start: walking upstream from that output over the
    edges that carry transcripts (fusion's ``transcripts`` input, fed by the recognizer), the node that has
    no such input. KikimimiError if that is not exactly one node."""
    out = spec.output(role)
    found: list[str] = []
    todo, seen = [out.node], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        ups = [src for i in spec.node(name).inputs for src, port in i.sources if _carries_transcripts(spec, src, port)]
        if ups:
            todo.extend(ups)
        else:
            found.append(name)
    if len(found) != 1:
        raise KikimimiError(f"transcribe sets --model/--language/--backend on the one node where the graph's "
                            f"{role!r} output ({out.ref}) starts; found {len(found)}: {', '.join(sorted(found))}")
    return spec.node(found[0])


def transcribe_graph(base: GraphSpec, path: str, model: str | None = None, language: str | None = None,
                     backend: str | None = None, settings: Sequence[str] = ()) -> GraphSpec:
    """``base`` (the default graph) set up to transcribe ``path``: file input at speed 0, every node's batch
    settings (:meth:`GraphSpec.batch`: finals only, beam search, whole sentences), recognizer options, sinks
    left out, then ``settings`` (``NODE.PARAM=VALUE``, as ``run --set``; they win over the batch settings).
    The graph must name its ``transcripts`` output (GraphError says how, if not)."""
    from kikimimi.launch.cli import apply_overrides, apply_settings

    base.output(TRANSCRIPTS)
    spec = apply_overrides(base, path, None, 0.0, "inproc")
    options = {k: v for k, v in zip(RECOGNIZER_PARAMS, (model, language, backend), strict=True) if v is not None}
    if options:
        node = recognizer(spec)
        declared = {p.name for p in node.cls.params}
        for name in options:
            if name not in declared:
                raise KikimimiError(f"the recognizer node {node.name!r} ({node.kind}) has no parameter {name!r}; "
                                    f"parameters: {', '.join(sorted(declared))}")
        spec = spec.with_node(node.name, node.kind, {**node.params, **options})
    sinks = spec.sinks()
    if sinks:
        spec = spec.without_nodes(sinks)
    return apply_settings(spec.batch(), list(settings))


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


class Interrupts:
    """Stop and abort requests for a batch (the CLI connects them to SIGINT/SIGTERM): passed on to the runner
    of the file being transcribed, and remembered, so that no later file starts. Thread-safe."""

    def __init__(self) -> None:
        self.requested = 0          # 0: none, 1: stop, 2: abort
        self._runner: Runner | None = None
        self._lock = threading.Lock()

    def attach(self, runner: Runner | None) -> None:
        """``runner`` (None: no runner) gets the requests from now on, and those made before."""
        with self._lock:
            self._runner = runner
            if runner is not None and self.requested >= 1:
                runner.stop()
            if runner is not None and self.requested >= 2:
                runner.abort()

    def stop(self) -> None:
        with self._lock:
            self.requested = max(self.requested, 1)
            if self._runner is not None:
                self._runner.stop()

    def abort(self) -> None:
        with self._lock:
            self.requested = 2
            if self._runner is not None:
                self._runner.abort()


def run_file(base: GraphSpec, path: str, model: str | None = None, language: str | None = None,
             backend: str | None = None, progress: Progress | None = None,
             interrupts: Interrupts | None = None, settings: Sequence[str] = ()) -> FileResult:
    """Transcribe one file through the streaming graph; its final transcripts in order. ``interrupts``
    stops or aborts it (what was heard until then is kept)."""
    from kikimimi.engine.runner import GraphFailed, Runner

    spec = transcribe_graph(base, path, model, language, backend, settings)
    t0 = time.perf_counter()
    runner = Runner(spec)
    collector = TranscriptCollector()
    runner.tap(spec.output(TRANSCRIPTS).ref, collector.add)
    position = AudioPosition()
    for out in spec.outputs:
        runner.tap(out.ref, position.add)
    total = media_duration(path) if progress is not None and progress.enabled else None
    t1 = t0
    try:
        runner.start()
        if interrupts is not None:
            interrupts.attach(runner)
        t1 = time.perf_counter()
        while not runner.wait(0.1):
            if progress is not None:
                progress.update(Path(path).name, position.seconds, total)
    finally:
        if interrupts is not None:
            interrupts.attach(None)
        if progress is not None:
            progress.done()
    t2 = time.perf_counter()
    failed = [(n, d.error) for n, d in runner.drivers.items() if d.error is not None]
    if failed:
        name, err = failed[0]
        raise GraphFailed(f"{path}: node {name!r} failed: {type(err).__name__}: {err}") from err
    finals = sorted(collector.finals, key=lambda t: (t.header.stream_id, t.start_sample, t.utterance_id))
    return FileResult(path, tuple(finals), t1 - t0, t2 - t1, runner.stop_requested)


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
               progress: Progress | None = None, interrupts: Interrupts | None = None,
               settings: Sequence[str] = ()) -> list[FileResult]:
    """Transcribe ``files`` in order and write ``fmt`` to stdout or ``output``; ``settings`` as in
    :func:`transcribe_graph`. After a request on
    ``interrupts`` the file being transcribed ends where it stopped, is written, and no later file starts.

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
        if interrupts is not None and interrupts.requested:
            log.warning("interrupted: %d of %d files transcribed", len(results), len(files))
            break
        r = run_file(base, f, model, language, backend, progress, interrupts, settings)
        results.append(r)
        if out_dir is not None:
            _write(render([r], fmt), out_dir / f"{Path(f).stem}.{fmt}")
        elif out_path is None:
            _write(render([r], fmt), None)
        if r.interrupted:   # Ctrl-C / SIGTERM: what was heard so far is written; the batch ends here
            log.warning("interrupted: %d of %d files transcribed, %s up to where it stopped",
                        len(results) - 1, len(files), f)
            break
    if out_path is not None:
        _write(render(results, fmt), out_path)
    return results
