"""``kikimimi transcribe`` (batch profile) against faster-whisper's own ``transcribe()`` on the same files.

For each model: WER of our batch transcription and of faster-whisper (same model directory, int8, beam 5,
whole clip, 2 threads, its default settings), and both wall times (ours includes building each file's graph;
faster-whisper's model load is left out), as a ratio. Optionally (``--streaming``) the streaming finals too:
the same graph at full speed with partials (what ``kikimimi run --speed 0`` decodes, beam 1), against
faster-whisper's whole-clip ``transcribe()`` with beam 1 (the same beam), so the penalty of the live path is
one number per model.

Inputs: the LibriSpeech clips of ../shared/data (sorted; ``--n`` of them), with MANIFEST.tsv references;
``--japanese``: the Japanese clips instead (CER, language ja, model base).

Run:  .venv/bin/python bench/batch_vs_offline.py [--n 70] [--models base,tiny.en] [--language en] [--streaming]
      [--japanese]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from kikimimi.engine.graph import GraphSpec
from kikimimi.launch import transcribe as tr
from kikimimi.launch.cli import resolve_graph
from kikimimi.launch.subtitles import file_text
from kikimimi.models.asr.resolve import resolve_model
from kikimimi.models.asr.text import ErrorCount, cer, wer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def clips(n: int, japanese: bool = False) -> list[tuple[Path, str]]:
    with (DATA / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        rows = sorted((r for r in csv.DictReader(f, delimiter="\t")
                       if (r["language"] == "ja" if japanese else "librispeech" in r["path"])),
                      key=lambda r: r["path"])
    return [(DATA / r["path"], r["reference"]) for r in rows[:n]]


def score(pairs: list[tuple[str, str]], language: str = "en") -> ErrorCount:
    total = ErrorCount(0, 0)
    for ref, hyp in pairs:
        total = total + (cer(ref, hyp) if language == "ja" else wer(ref, hyp))
    return total


def ours(files: list[tuple[Path, str]], model: str, language: str, streaming: bool) -> tuple[ErrorCount, float]:
    base = resolve_graph("default")
    original = GraphSpec.batch
    if streaming:   # the streaming path at full speed: lossless, partials on (what `run --speed 0` decodes)
        GraphSpec.batch = GraphSpec.lossless  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        texts = [file_text(tr.run_file(base, str(p), model, language).finals) for p, _ in files]
        wall = time.perf_counter() - t0
    finally:
        GraphSpec.batch = original  # type: ignore[method-assign]
    return score([(ref, t) for (_, ref), t in zip(files, texts, strict=True)], language), wall


def faster_whisper(files: list[tuple[Path, str]], model: str, language: str, beam: int = 5
                   ) -> tuple[ErrorCount, float]:
    from faster_whisper import WhisperModel

    m = WhisperModel(str(resolve_model(model).path), device="cpu", compute_type="int8", cpu_threads=2)
    t0 = time.perf_counter()
    texts = []
    for p, _ in files:
        segments, _ = m.transcribe(str(p), beam_size=beam, language=None if language == "auto" else language)
        texts.append(("" if language == "ja" else " ").join(s.text.strip() for s in segments))
    wall = time.perf_counter() - t0
    return score([(ref, t) for (_, ref), t in zip(files, texts, strict=True)], language), wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=70)
    ap.add_argument("--models", default="base,tiny.en")
    ap.add_argument("--language", default="en")
    ap.add_argument("--streaming", action="store_true", help="also the streaming finals at full speed")
    ap.add_argument("--japanese", action="store_true", help="the Japanese clips (CER), model base")
    args = ap.parse_args(argv)
    files = clips(args.n, args.japanese)
    if args.japanese:
        args.language, args.models = "ja", "base"
    print(f"{len(files)} {'Japanese' if args.japanese else 'LibriSpeech'} clips, language {args.language}"
          f" ({'CER' if args.japanese else 'WER'} below)")
    for model in args.models.split(","):
        lang = "en" if model.endswith(".en") else args.language
        fw, fw_s = faster_whisper(files, model, lang)
        ob, ob_s = ours(files, model, lang, streaming=False)
        print(f"{model:8s} faster-whisper transcribe(): WER {fw.rate:6.2%}  {fw_s:6.1f} s")
        print(f"{model:8s} kikimimi transcribe (batch): WER {ob.rate:6.2%}  {ob_s:6.1f} s  "
              f"(penalty {100 * (ob.rate - fw.rate):+.2f} points, wall x{ob_s / fw_s:.2f})")
        if args.streaming:
            fw1, fw1_s = faster_whisper(files, model, lang, beam=1)
            st, st_s = ours(files, model, lang, streaming=True)
            print(f"{model:8s} faster-whisper beam 1:       WER {fw1.rate:6.2%}  {fw1_s:6.1f} s")
            print(f"{model:8s} kikimimi streaming finals:   WER {st.rate:6.2%}  {st_s:6.1f} s  "
                  f"(beam 1; penalty {100 * (st.rate - fw1.rate):+.2f} points against beam 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
