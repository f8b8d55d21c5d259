"""``kikimimi transcribe`` over a batch of files: wall time per file and in all, and how often models load.

Runs what ``kikimimi transcribe FILE...`` runs, in this one process: the bundled default graph (file input
at speed 0, lossless), a new Runner per file, one file after the other (:func:`kikimimi.launch.transcribe.
run_file`). Per file it prints the seconds of audio, the setup time (building and starting the graph:
node construction and ``on_start``, where models load and warm up), the run time, and the model loads
that file caused; then the totals and :func:`kikimimi.models.weights.loads` (how many times each shared
weight was loaded in the process). Nodes that load their weights through ``weights.shared`` load them
once for the whole batch: the first file's setup holds the loads, the others' setup only the warmup.

Inputs: the first N (default 40) LibriSpeech clips of ../shared/data/en/librispeech, sorted by path;
Whisper tiny.en by default to keep it short (``--base`` for Whisper base), language en.

Run:  .venv/bin/python bench/transcribe_batch.py [--n 40] [--base] [--graph default] [--reload]

``--reload`` clears the weights cache before each file: what every file cost before the models loaded
through :mod:`kikimimi.models.weights` (run it and the default next to each other for the ratio).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kikimimi.launch.cli import resolve_graph
from kikimimi.launch.subtitles import file_text
from kikimimi.launch.transcribe import media_duration, run_file
from kikimimi.models.weights import clear, loads

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LIBRISPEECH = DATA / "en" / "librispeech"


def clips(folder: Path, n: int) -> list[Path]:
    """The first ``n`` audio files under ``folder`` (sorted by path); ValueError if there are none."""
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".flac", ".wav"))
    if not files:
        raise ValueError(f"no .flac/.wav files under {folder}")
    return files[:n]


def total_loads() -> int:
    return sum(loads().values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40, help="number of files (default 40)")
    ap.add_argument("--base", action="store_true", help="Whisper base instead of tiny.en")
    ap.add_argument("--data", type=Path, default=LIBRISPEECH, help="folder of clips (default: LibriSpeech)")
    ap.add_argument("--graph", default="default", help="graph (default: the bundled default graph)")
    ap.add_argument("--language", default="en", help="asr language (default en)")
    ap.add_argument("--reload", action="store_true", help="forget the loaded weights before each file "
                    "(kikimimi.models.weights.clear), as every file loaded every model before the shared cache")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error(f"--n must be >= 1, got {args.n}")
    model = "base" if args.base else "tiny.en"
    files = clips(args.data, args.n)
    base = resolve_graph(args.graph)
    print(f"kikimimi transcribe, in-process: {len(files)} files of {args.data}, model {model}, graph {args.graph}")
    print(f"{'#':>3} {'file':<26} {'audio s':>8} {'setup s':>8} {'run s':>7} {'total s':>8} {'loads':>5}  text")
    t_all = time.perf_counter()
    audio_s = setup_s = run_s = 0.0
    setups: list[float] = []
    loaded = 0
    for i, f in enumerate(files, 1):
        if args.reload:
            loaded += total_loads()
            clear()
        before = total_loads()
        t0 = time.perf_counter()
        r = run_file(base, str(f), model=model, language=args.language)
        took = time.perf_counter() - t0
        dur = media_duration(str(f)) or 0.0
        audio_s += dur
        setup_s += r.setup_s
        run_s += r.run_s
        setups.append(r.setup_s)
        text = file_text(r.finals)
        print(f"{i:>3} {f.name:<26} {dur:8.2f} {r.setup_s:8.2f} {r.run_s:7.2f} {took:8.2f} "
              f"{total_loads() - before:>5}  {text[:50]}", flush=True)
    wall = time.perf_counter() - t_all
    print()
    print(f"total wall {wall:.1f} s for {audio_s:.1f} s of audio (x{audio_s / wall:.1f} real time); "
          f"setup {setup_s:.1f} s, run {run_s:.1f} s")
    rest = setups[1:]
    print(f"setup of the first file {setups[0]:.2f} s; of each later file {sum(rest) / len(rest):.2f} s on average"
          if rest else f"setup of the one file {setups[0]:.2f} s")
    counts = loads()
    if counts:
        print(f"model loads (kikimimi.models.weights.loads): {loaded + total_loads()} in all"
              + (" (cache cleared before each file: --reload)" if args.reload else ""))
        for key, n in sorted(counts.items(), key=lambda kv: repr(kv[0])):
            print(f"  {n:>3} x {key!r}")
    else:
        print("model loads (kikimimi.models.weights.loads): none counted; no node loads its weights through "
              "weights.shared, so every file's setup loads every model again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
