"""``kikimimi transcribe FILE...``: the default streaming graph, run over files as fast as possible.

The graph is the bundled ``default`` graph itself (file or mic -> vad + features -> asr -> fusion ->
console), changed in three places only: its input node becomes a ``file_source`` at speed 0 (every
queue blocking, nothing ages out: lossless playback as fast as the nodes go), the recognizer gets the
``--model`` / ``--language`` / ``--backend`` given (``--model`` also on nodes that declare they follow the
recognizer's model, such as the affect node, when they have a head for it), and its sinks (nodes without
outputs: the console) are left out. The transcripts come from the graph's ``transcripts`` output
(``outputs:`` in the graph file), which a :class:`TranscriptCollector` taps. The recognizer is found from
that output too: the node where its transcripts start (see :func:`recognizer`). So a file transcribes
exactly as it would stream live, only faster, and no node kind is named here.

Each file runs through its own graph (a new Runner), one after the other, in this process: nodes that load
their weights through :func:`kikimimi.models.weights.shared` load them once for all the files.

While a file runs, a progress bar goes to stderr when stderr is a terminal (plain text, redrawn
with a carriage return): how far into the file's audio the graph's outputs have got, and with several files
how far the whole batch has got. Where the results go is checked before anything runs
(:func:`plan_output`); a file that cannot be transcribed gets a one-line error and the batch goes on.
"""

from __future__ import annotations

import json
import logging
import os
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
    error: str | None = None
    """Why it could not be transcribed (None: it was)."""


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


def follow_recognizer_model(spec: GraphSpec, recognizer_node: str, model: str) -> GraphSpec:
    """``spec`` with ``model`` set on the nodes that declare they read the recognizer's model
    (``follows_recognizer_model``, such as the affect node's encoder) and can take it (``can_follow``)."""
    for other in spec.nodes:
        follows = getattr(other.cls, "follows_recognizer_model", False)
        if other.name != recognizer_node and follows and other.cls.can_follow(model):
            spec = spec.with_node(other.name, other.kind, {**other.params, "model": model})
    return spec


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
        if "model" in options:
            spec = follow_recognizer_model(spec, node.name, str(options["model"]))
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
    """A progress bar on a terminal, nothing otherwise: per file ``[#####-----]  50%  jfk.flac  5.5/11.0 s`` and, with
    several files, overall ``| file 2/3 [###-------] 30% of 36.6 s``. :meth:`begin` gives the batch (each file's
    duration, None if unknown), :meth:`update` the current file's progress, :meth:`done` clears the line after a
    file (the next file's bar follows)."""

    def __init__(self, out: TextIO, enabled: bool | None = None, width: int = 30) -> None:
        self.out = out
        isatty = getattr(out, "isatty", None)
        self.enabled = enabled if enabled is not None else bool(callable(isatty) and isatty())
        self.width = width
        self._last = ""
        self._totals: list[float | None] = []
        self._index = 0        # the file now running, in the batch (files done so far)

    def begin(self, totals: Sequence[float | None]) -> None:
        """A batch of ``len(totals)`` files starts; ``totals``: their durations in seconds (None: unknown)."""
        self._totals = list(totals)
        self._index = 0

    def _bar(self, frac: float, width: int) -> str:
        fill = int(min(max(frac, 0.0), 1.0) * width)
        return f"[{'#' * fill}{'-' * (width - fill)}]"

    def _overall(self, done_s: float) -> str:
        n = len(self._totals)
        if n < 2:
            return ""
        known = [t for t in self._totals if t]
        text = f"  | file {min(self._index + 1, n)}/{n}"
        if len(known) == n and self._index < n:
            before = sum(t or 0.0 for t in self._totals[:self._index])
            total = sum(known)
            frac = (before + min(done_s, self._totals[self._index] or 0.0)) / total
            text += f" {self._bar(frac, 10)} {frac * 100:3.0f}% of {total:.1f} s"
        return text

    def update(self, label: str, done_s: float, total_s: float | None) -> None:
        """The file now running, ``label``, has got ``done_s`` of its ``total_s`` seconds far."""
        if not self.enabled:
            return
        if total_s:
            frac = min(max(done_s / total_s, 0.0), 1.0)
            line = f"{self._bar(frac, self.width)} {frac * 100:3.0f}%  {label}  {done_s:.1f}/{total_s:.1f} s"
        else:
            line = f"{label}  {done_s:.1f} s"
        line += self._overall(done_s)
        if line != self._last:
            self.out.write("\r" + line + "\x1b[K")
            self.out.flush()
            self._last = line

    def done(self) -> None:
        """Clear the bar: the file ended (the next :meth:`update` is about the batch's next file)."""
        if self.enabled and self._last:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self._last = ""
        self._index += 1


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


class SetupFailed(KikimimiError):
    """The graph for a file could not be built or started (a bad model, language, backend or --set value; not
    the file's content, which :func:`check_input` vets first)."""


def run_file(base: GraphSpec, path: str, model: str | None = None, language: str | None = None,
             backend: str | None = None, progress: Progress | None = None,
             interrupts: Interrupts | None = None, settings: Sequence[str] = ()) -> FileResult:
    """Transcribe one file through the streaming graph; its final transcripts in order. ``interrupts``
    stops or aborts it (what was heard until then is kept)."""
    from kikimimi.engine.runner import GraphFailed, Runner

    t0 = time.perf_counter()
    try:
        spec = transcribe_graph(base, path, model, language, backend, settings)
        runner = Runner(spec)
    except KikimimiError as e:
        raise SetupFailed(str(e)) from e
    collector = TranscriptCollector()
    runner.tap(spec.output(TRANSCRIPTS).ref, collector.add)
    position = AudioPosition()
    for out in spec.outputs:
        runner.tap(out.ref, position.add)
    total = media_duration(path) if progress is not None and progress.enabled else None
    t1 = t0
    try:
        try:
            runner.start()
        except KikimimiError as e:
            raise SetupFailed(str(e)) from e
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


def render(results: Sequence[FileResult], fmt: str, speakers: bool = False) -> str:
    """The whole output for ``fmt`` (vtt/srt: of one file; ``speakers``: cues name their speaker)."""
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
        duration = media_duration(results[0].path)
        end_ms = None if duration is None else int(duration * 1000)
        cues = make_cues(results[0].finals, speakers=speakers, end_ms=end_ms)
        return format_vtt(cues) if fmt == "vtt" else format_srt(cues)
    raise KikimimiError(f"--format {fmt!r} is not allowed; allowed: {', '.join(FORMATS)}")


@dataclass(frozen=True, slots=True)
class OutputPlan:
    """Where ``transcribe`` writes: stdout (both None), one ``file``, or one document per input in ``folder``."""

    file: Path | None = None
    folder: Path | None = None


def _is_folder_name(output: str) -> bool:
    return output.endswith(("/", os.sep)) or Path(output).is_dir()


def plan_output(files: Sequence[str], fmt: str, output: str | None) -> OutputPlan:
    """Check ``output`` before any work and say where the results go: ``None`` is stdout; a trailing slash or an
    existing folder is a folder (made if missing, with vtt/srt only: one ``<file stem>.<fmt>`` per input, also
    when several inputs are given with a new name); anything else is one file whose folder must exist.
    KikimimiError naming the problem if the output cannot be written."""
    if fmt not in FORMATS:
        raise KikimimiError(f"--format {fmt!r} is not allowed; allowed: {', '.join(FORMATS)}")
    per_file = fmt in ("vtt", "srt")
    if output is None:
        if per_file and len(files) > 1:
            raise KikimimiError(f"--format {fmt} with {len(files)} files needs --output DIR (one .{fmt} per file)")
        return OutputPlan()
    path = Path(output)
    if _is_folder_name(output) or (per_file and len(files) > 1):
        if not per_file:
            raise KikimimiError(f"--output {output}: --format {fmt} writes one file for all inputs, not a folder; "
                                f"give a file name, e.g. {path / ('transcripts.' + ('txt' if fmt == 'text' else fmt))}")
        if path.exists() and not path.is_dir():
            raise KikimimiError(f"--output {output}: is a file; --format {fmt} with {len(files)} files needs a folder "
                                f"(one .{fmt} per file)")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise KikimimiError(f"--output {output}: cannot make the folder: {e.strerror or e}") from None
        if not os.access(path, os.W_OK):
            raise KikimimiError(f"--output {output}: the folder is not writable")
        seen: dict[str, str] = {}
        for f in files:
            name = f"{Path(f).stem}.{fmt}"
            if name in seen:
                raise KikimimiError(f"--output {output}: {seen[name]} and {f} would both be written to {name}")
            seen[name] = f
        return OutputPlan(folder=path)
    parent = path.parent
    if not parent.is_dir():
        raise KikimimiError(f"--output {output}: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise KikimimiError(f"--output {output}: not writable")
    return OutputPlan(file=path)


def _write(text: str, path: Path | None, report: TextIO) -> None:
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        path.write_text(text, encoding="utf-8")
        report.write(f"wrote {path}\n")
        report.flush()


def _fail(report: TextIO, path: str, reason: str) -> FileResult:
    report.write(f"kikimimi: error: {path}: {reason}\n")
    report.flush()
    return FileResult(path, (), error=reason)


def check_input(path: str) -> str | None:
    """Why ``path`` cannot be transcribed (missing, a directory, not an audio or video file), or None."""
    from kikimimi.models.media import media_kind

    try:
        media_kind(path)
    except FileNotFoundError:
        return "no such file"
    except KikimimiError as e:
        return str(e).replace(repr(path) + " ", "", 1)
    return None


def transcribe(files: Sequence[str], base: GraphSpec, fmt: str = "text", output: str | None = None,
               model: str | None = None, language: str | None = None, backend: str | None = None,
               progress: Progress | None = None, interrupts: Interrupts | None = None,
               settings: Sequence[str] = (), report: TextIO | None = None,
               speakers: bool = False) -> list[FileResult]:
    """Transcribe ``files`` in order and write ``fmt`` to stdout or ``output`` (see :func:`plan_output`, checked
    before anything runs); ``settings`` as in :func:`transcribe_graph`. After a request on ``interrupts`` the
    file being transcribed ends where it stopped, is written, and no later file starts.

    text and jsonl: one stream of lines for all files (written as each file finishes when printing to stdout).
    vtt and srt: one document per file (to stdout, a file, or ``<file stem>.vtt`` / ``.srt`` in a folder).

    A file that cannot be transcribed (missing, a directory, not audio or video, a node failing on it) gets one
    line ``kikimimi: error: FILE: reason`` on ``report`` (stderr) and a result with ``error`` set; the others go
    on and are written. Each file written to disk is announced on ``report`` as ``wrote PATH``. ``speakers``: vtt
    and srt cues name their speaker. A graph that cannot be set up for the first file to run (a bad model,
    language, backend or ``--set`` value) raises :class:`SetupFailed`: the settings are wrong for every file.
    """
    report = report if report is not None else sys.stderr
    plan = plan_output(files, fmt, output)
    bad = {f: why for f in dict.fromkeys(files) if (why := check_input(f)) is not None}
    results: list[FileResult] = []
    todo = [f for f in files if f not in bad]
    if progress is not None:
        progress.begin([media_duration(f) if progress.enabled else None for f in todo])
    for f in files:
        if interrupts is not None and interrupts.requested:
            log.warning("interrupted: %d of %d files transcribed", len(results), len(files))
            break
        if f in bad:
            results.append(_fail(report, f, bad[f]))
            continue
        try:
            r = run_file(base, f, model, language, backend, progress, interrupts, settings)
        except SetupFailed as e:
            if not any(r.error is None for r in results):
                raise       # nothing has run with these settings: a usage error for the whole batch (exit 2)
            results.append(_fail(report, f, str(e)))
            continue
        except (KikimimiError, OSError) as e:
            results.append(_fail(report, f, str(e).removeprefix(f"{f}: ")))
            continue
        results.append(r)
        try:
            if plan.folder is not None:
                _write(render([r], fmt, speakers), plan.folder / f"{Path(f).stem}.{fmt}", report)
            elif plan.file is None:
                _write(render([r], fmt, speakers), None, report)
        except OSError as e:
            results[-1] = _fail(report, f, f"cannot write its result: {e}")
        if r.interrupted:   # Ctrl-C / SIGTERM: what was heard so far is written; the batch ends here
            log.warning("interrupted: %d of %d files transcribed, %s up to where it stopped",
                        len(results) - 1, len(files), f)
            break
    good = [r for r in results if r.error is None]
    if plan.file is not None and good:
        try:
            _write(render(good, fmt, speakers), plan.file, report)
        except OSError as e:
            raise KikimimiError(f"--output {plan.file}: cannot write: {e}") from None
    return results
