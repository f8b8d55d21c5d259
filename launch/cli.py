"""The ``kikimimi`` command.

    kikimimi run [GRAPH] [--input FILE|mic] [--transport inproc|zmq] [--output FILE.jsonl [--watermarks]]
                 [--stats] [-v]
    kikimimi --version
    kikimimi nodes            # node kinds, their ports and parameters (and their backends' parameters)
    kikimimi check GRAPH      # validate a graph file and print it normalized
    kikimimi transcribe FILE... [--model NAME|PATH] [--format text|jsonl|vtt|srt] [--language CODE|auto]
                        [--backend NAME] [--output PATH] [--graph GRAPH]
    kikimimi speakers enroll|list|remove|verify|calibrate ...   # the speaker enrollment database

GRAPH is a YAML file or the name of a bundled graph (``default``). The console shows transcripts; with
``-v`` also speech events and, after the last transcript, the end of stream.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kikimimi.engine.errors import KikimimiError
from kikimimi.engine.graph import GraphSpec, load_graph
from kikimimi.engine.metrics import format_stats
from kikimimi.engine.node import Node
from kikimimi.engine.params import Param
from kikimimi.engine.registry import available_kinds, load_kind

GRAPH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class InputSource:
    """A built-in source kind that ``--input`` puts in place of the graph's ``input`` node."""

    kind: str
    keep: tuple[str, ...]
    """Parameters kept from the old input node when it was of this same kind (besides ``SHARED_SOURCE_PARAMS``)."""


# ``--input mic`` and ``--input FILE``: the engine's built-in audio sources. The one table of source kinds
# the CLI knows; everything else it reaches through the graph's ``input`` node and ``outputs`` roles.
INPUT_SOURCES = {
    "mic": InputSource("mic_source", ()),
    "file": InputSource("file_source", ("video", "speed")),   # audio-visual graphs keep reading the picture
}
# Parameters that mean the same for every audio source and carry over when --input swaps the source.
SHARED_SOURCE_PARAMS = ("sample_rate", "channels", "dtype", "chunk_ms")
OUTPUT_NODE = "output"
CONSOLE_KIND = "console_sink"
ABORTED_EXIT = 130   # as a shell reports a command ended by Ctrl-C: the run did not finish cleanly


def bundled_graphs() -> list[str]:
    return sorted(p.stem for p in GRAPH_DIR.glob("*.yaml"))


def resolve_graph(name_or_path: str) -> GraphSpec:
    path = Path(name_or_path)
    if not path.exists() and (GRAPH_DIR / f"{name_or_path}.yaml").exists():
        path = GRAPH_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        bundled = ", ".join(bundled_graphs())
        raise KikimimiError(f"graph {name_or_path!r} is neither a file nor a bundled graph; bundled: {bundled}")
    return load_graph(path)


def apply_input(spec: GraphSpec, input_: str | None, speed: float | None) -> GraphSpec:
    """The graph with its ``input`` node replaced per --input ("mic" or a file) and --speed (see INPUT_SOURCES).

    With only --speed, a file input keeps its file. Speed 0 (as fast as possible) also makes the graph
    lossless (every queue blocks, nothing ages out). A graph whose input is a file source with no path (the
    bundled ``av``: bundled graphs carry no data paths) needs --input: without it, KikimimiError says so."""
    if input_ is None and speed is None:
        _check_file_named(spec)
        return spec
    if spec.input_node is None:
        raise KikimimiError("this graph names no 'input' node, so --input/--speed cannot be applied")
    old = spec.node(spec.input_node)
    mic = INPUT_SOURCES["mic"]
    new = mic if input_ == "mic" or (input_ is None and old.kind == mic.kind) else INPUT_SOURCES["file"]
    params: dict[str, Any] = {k: v for k, v in old.params.items()
                              if k in SHARED_SOURCE_PARAMS or (old.kind == new.kind and k in new.keep)}
    if new is mic:
        if speed is not None:
            raise KikimimiError("--speed applies to file input only")
        return spec.with_node(old.name, new.kind, params)
    path = input_ if input_ is not None else old.params.get("path")
    if not path:
        _check_file_named(spec)
    if not Path(str(path)).exists():
        raise KikimimiError(f"input file not found: {path}")
    params["path"] = str(path)
    if speed is not None:
        params["speed"] = speed
    spec = spec.with_node(old.name, new.kind, params)
    return spec.lossless() if params.get("speed", 1.0) == 0 else spec


def _check_file_named(spec: GraphSpec) -> None:
    """KikimimiError if the graph's input node is a file source that names no file (give it with --input)."""
    if spec.input_node is None:
        return
    node = spec.node(spec.input_node)
    if node.kind == INPUT_SOURCES["file"].kind and not node.params.get("path"):
        video = " (a video with sound)" if node.params.get("video") else ""
        raise KikimimiError(f"graph {spec.name!r} plays a file and names none: give it with --input FILE{video}")


def apply_output(spec: GraphSpec, output: str, watermarks: bool = False) -> GraphSpec:
    """The graph with a ``jsonl_sink`` named ``output`` writing every role of the graph's ``outputs`` to ``output``:
    transcripts (partials and finals) and speech events; the VAD's periodic progress watermarks only with
    ``watermarks`` (``--watermarks``), as they are for nodes downstream, not for a consumer of the file."""
    if not spec.outputs:
        raise KikimimiError(f"--output writes the graph's outputs, and graph {spec.name!r} names none; add to the "
                            f"graph file, e.g.: outputs: {{transcripts: node.port, events: node.port}} "
                            f"(its output ports: {', '.join(spec.output_ports()) or '(none)'})")
    feeds = list(dict.fromkeys(o.ref for o in spec.outputs))
    return spec.with_extra_node(OUTPUT_NODE, "jsonl_sink", {"path": output, "watermarks": watermarks},
                                {"in": {"from": feeds, "policy": "block", "capacity": 256}})


def apply_overrides(spec: GraphSpec, input_: str | None, output: str | None, speed: float | None,
                    transport: str | None, watermarks: bool = False) -> GraphSpec:
    """The graph with --input, --speed, --output (--watermarks) and --transport applied."""
    spec = apply_input(spec, input_, speed)
    if output is not None:
        spec = apply_output(spec, output, watermarks)
    if transport is not None:
        spec = spec.with_transport(transport)
    return spec


def find_param(cls: type[Node], name: str) -> Param | None:
    """The declaration of parameter ``name`` of node kind ``cls``: one of its own, or a plug-in's given as
    ``PLUGIN.NAME`` (``whisper.beam_size`` of the asr node); None if there is none."""
    own = next((p for p in cls.params if p.name == name), None)
    plugin, dot, rest = name.partition(".")
    if own is not None or not dot or plugin not in cls.plugin_names():
        return own
    return next((p for p in cls.plugin_params(plugin) if p.name == rest), None)


def apply_settings(spec: GraphSpec, settings: list[str]) -> GraphSpec:
    """The graph with each ``NODE.PARAM=VALUE`` applied, validated; PARAM may name a plug-in's parameter
    (``asr.whisper.beam_size=5``). VALUE is kept as text for a text parameter (``camera.device=0``,
    ``asr.model=1.0``) and read as YAML otherwise (3, 0.5, true, null)."""
    if not settings:
        return spec
    d = spec.to_dict()
    for item in settings:
        key, sep, raw = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or not node or not param:
            raise KikimimiError(f"--set {item!r} is not allowed; allowed: NODE.PARAM=VALUE, e.g. asr.model=tiny.en")
        if node not in d["nodes"]:
            raise KikimimiError(f"--set {item!r}: the graph has no node {node!r}; nodes: {', '.join(d['nodes'])}")
        spec_param = find_param(load_kind(d["nodes"][node]["kind"]), param)
        value: Any = raw if spec_param is not None and spec_param.type is str else (yaml.safe_load(raw) if raw else "")
        d["nodes"][node].setdefault("params", {})[param] = value
    return load_graph(d)


def apply_verbose(spec: GraphSpec) -> GraphSpec:
    """The graph with every ``console_sink`` showing events too (``-v``): speech start and speech segment lines,
    and the end of stream after the last transcript. Without ``-v`` the console shows transcripts only."""
    d = spec.to_dict()
    consoles = [nd for nd in d["nodes"].values() if nd["kind"] == CONSOLE_KIND]
    for nd in consoles:
        nd.setdefault("params", {}).update(vad_events="all", end_of_stream=True)
    return load_graph(d) if consoles else spec


def follow_model_setting(spec: GraphSpec, settings: list[str]) -> GraphSpec:
    """``--set REC.model=NAME`` on the graph's recognizer (the node where its ``transcripts`` output starts) also
    sets the nodes that follow the recognizer's model (the affect node), as ``transcribe --model`` does; their
    own ``--set`` still wins, being applied after."""
    from kikimimi.launch.transcribe import TRANSCRIPTS, follow_recognizer_model, recognizer

    if TRANSCRIPTS not in spec.roles:
        return spec
    try:
        rec = recognizer(spec)
    except KikimimiError:
        return spec
    models = [v for k, _, v in (item.partition("=") for item in settings) if k == f"{rec.name}.model" and v]
    return follow_recognizer_model(spec, rec.name, models[-1]) if models else spec


def cmd_run(args: argparse.Namespace) -> int:
    from kikimimi.engine.runner import Runner, install_stop_signals

    if args.watermarks and args.output is None:
        raise KikimimiError("--watermarks applies to --output FILE.jsonl only")
    spec = apply_overrides(resolve_graph(args.graph), args.input, args.output, args.speed, args.transport,
                           args.watermarks)
    if args.verbose:
        spec = apply_verbose(spec)
    spec = follow_model_setting(spec, args.set or [])
    spec = apply_settings(spec, args.set or [])   # last: --set wins over -v (and over a followed model)
    if spec.transport == "zmq":
        from kikimimi.engine.procs import ProcessRunner

        only = args.only.split(",") if args.only else None
        prunner = ProcessRunner(spec, scheme=args.zmq_scheme, only=only, log_level=args.log_level)
        restore = install_stop_signals(prunner.stop, prunner.abort)
        try:
            stats = prunner.run()
        finally:
            restore()
        aborted = prunner.aborted
    else:
        if args.only:
            raise KikimimiError("--only needs --transport zmq")
        runner = Runner(spec)
        restore = install_stop_signals(runner.stop, runner.abort)
        try:
            runner.run()
        finally:
            restore()
        stats = runner.stats()
        aborted = runner.aborted
    if args.stats:
        print(format_stats(stats), file=sys.stderr)
    if aborted:
        print("kikimimi: aborted: nodes were ended before they finished; what they still held was discarded "
              "(counted under 'aborted' with --stats)", file=sys.stderr)
        return ABORTED_EXIT
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    for kind, target in sorted(available_kinds().items()):
        try:
            cls = load_kind(kind)
        except (ImportError, KikimimiError) as exc:
            print(f"{kind}  ({target}: cannot load: {exc})\n")
            continue
        print(f"{kind}: {cls.help}")
        for p in cls.inputs:
            print(f"  input  {p.name} <- {p.type_names()} (default queue: {p.queue.policy.value}, "
                  f"capacity {p.queue.capacity})")
        for p in cls.outputs:
            print(f"  output {p.name} -> {p.type_names()}")
        for prm in cls.params:
            print(f"  param  {prm.describe()}")
        for plugin in cls.plugin_names():
            try:
                declared = cls.plugin_params(plugin)
            except (ImportError, KikimimiError) as exc:
                print(f"  {cls.param_selector} {plugin}: cannot load: {exc}")
                continue
            print(f"  {cls.param_selector} {plugin}: parameters given as {plugin}.NAME")
            for prm in declared:
                print(f"    param  {plugin}.{prm.describe()}")
        print()
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    spec = resolve_graph(args.graph)
    print(spec.to_yaml(), end="")
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    from kikimimi.engine.runner import install_stop_signals
    from kikimimi.launch.transcribe import Interrupts, Progress, transcribe

    interrupts = Interrupts()
    restore = install_stop_signals(interrupts.stop, interrupts.abort)   # for the whole batch, between files too
    try:
        results = transcribe(args.files, resolve_graph(args.graph), args.format, args.output, args.model,
                             args.language, args.backend, Progress(sys.stderr), interrupts, args.set or [],
                             speakers=args.speakers)
    finally:
        restore()
    if interrupts.requested:
        return ABORTED_EXIT
    return 1 if any(r.error is not None for r in results) else 0


def _version() -> str:
    """The installed kikimimi's version (its package metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kikimimi")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kikimimi", description="Real-time streaming speech engine.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    ap.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="run: the console also shows speech events and the end of stream (else transcripts only)")
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a graph")
    run.add_argument("graph", nargs="?", default="default",
                     help="graph file or bundled graph name (default: default)")
    run.add_argument("--input", help="audio/video file, or 'mic' (replaces the graph's input node)")
    run.add_argument("--speed", type=float,
                     help="file playback speed: 1 = real time (default), 0 = as fast as possible (lossless)")
    run.add_argument("--transport", choices=["inproc", "zmq"], help="override the graph's transport")
    run.add_argument("--zmq-scheme", choices=["ipc", "tcp"], default="ipc",
                     help="ZeroMQ endpoints: ipc (one machine, default) or tcp (across machines)")
    run.add_argument("--only", help="with zmq: run only these nodes (comma-separated) on this machine")
    run.add_argument("--output", help="also write the graph's outputs (every role under 'outputs:' in the graph "
                                      "file: transcripts, partials included, and speech events) to this JSONL file")
    run.add_argument("--watermarks", action="store_true",
                     help="with --output: also write the VAD's progress watermarks (every 100 ms; for debugging)")
    run.add_argument("--stats", action="store_true", help="print per-node counters at exit")
    run.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,   # as `kikimimi -v run`
                     help="the console also shows speech events and the end of stream (else transcripts only)")
    run.add_argument("--set", action="append", metavar="NODE.PARAM=VALUE",
                     help="set a node parameter (repeatable), e.g. --set asr.backend=sphinx --set asr.model=grid; "
                          "a backend's: --set asr.whisper.beam_size=5")
    run.set_defaults(func=cmd_run)

    nodes = sub.add_parser("nodes", help="list node kinds, their ports and parameters")
    nodes.set_defaults(func=cmd_nodes)

    check = sub.add_parser("check", help="validate a graph and print it normalized")
    check.add_argument("graph")
    check.set_defaults(func=cmd_check)

    tr = sub.add_parser("transcribe", help="transcribe files with the streaming graph, as fast as possible",
                        epilog="exit status: 0 all files transcribed; 1 some files failed (each named on stderr as "
                               "'kikimimi: error: FILE: reason'; the others are written); 2 usage error, such as a bad "
                               "--model, --language, --backend or --set (nothing run); 130 interrupted")
    tr.add_argument("files", nargs="+", metavar="FILE",
                    help="audio or video files (any format libsndfile or FFmpeg reads: wav, flac, mp3, m4a, ogg, "
                         "webm, mp4, ...)")
    tr.add_argument("--model", help="asr model: a name (base, tiny.en, ...) or a path (default: the graph's)")
    tr.add_argument("--format", default="text", choices=["text", "jsonl", "vtt", "srt"],
                    help="text: 'path<TAB>text' per file; jsonl: one final transcript per line; vtt/srt: subtitles")
    tr.add_argument("--language", help="language: en, ja, ... ; auto (detected); auto:en,ja (detected among "
                    "those only) (default: the graph's)")
    tr.add_argument("--backend", help="asr backend (e.g. sphinx for grammar commands; default: the graph's)")
    tr.add_argument("--output", help="write here instead of stdout; vtt/srt: a folder (a trailing '/', an existing "
                                     "folder, or several files; made if missing) gets one FILE_STEM.vtt/.srt per "
                                     "file")
    tr.add_argument("--speakers", action="store_true",
                    help="vtt/srt: put the speaker's name in each cue (WebVTT '<v NAME>', SRT 'NAME: ')")
    tr.add_argument("--graph", default="default",
                    help="graph to run (default: the bundled default graph, the same one `run` uses)")
    tr.add_argument("--set", action="append", metavar="NODE.PARAM=VALUE",
                    help="set a node parameter (repeatable; wins over the batch settings), e.g. "
                         "--set asr.whisper.final_window_ms=30000")
    tr.set_defaults(func=cmd_transcribe)

    # ``kikimimi speakers ...``: enrollment database commands (launch/speakers.py)
    from kikimimi.launch.speakers import add_parser as add_speakers_parser

    add_speakers_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except KikimimiError as exc:
        print(f"kikimimi: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"kikimimi: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
