"""`kikimimi transcribe` as a user runs it on real recordings: several files to a folder of subtitles, language
detection with the multilingual model, and a graph file given with --graph.

tests/test_transcribe.py covers the formats on one file and stdout; here: one subtitle file per input named after
it, cue texts scored against the MANIFEST.tsv references, the detected language in the jsonl output, and a graph
file that changes the recognizer. In-process (like test_transcribe.py), so the models load once.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from kikimimi.launch.cli import GRAPH_DIR, main
from kikimimi.models.asr.text import ErrorCount, cer, wer

pytest.importorskip("ctranslate2")
pytest.importorskip("onnxruntime")

LIBRI = ("en/librispeech/1988/1988-24833-0000.flac",    # 3.3 s each, three speakers
         "en/librispeech/3752/3752-4944-0000.flac",
         "en/librispeech/2412/2412-153948-0002.flac")
JFK = "en/jfk/jfk.flac"
FLEURS_JA = "ja/fleurs/fleurs_ja_1837.wav"
GRID = "av/grid/bbaf2n.mpg"
CUE = re.compile(r"^(\d\d):(\d\d):(\d\d)[.,](\d{3}) --> (\d\d):(\d\d):(\d\d)[.,](\d{3})$")
# Measured with the default graph's model (Whisper base, language auto) on the 4 files (50 words): 1 error
# ("Freyr" for FRERE), corpus WER 2 %; the worst file 12.5 % (1 of 8 words). The bounds leave room for a
# word or two more without letting a broken pipeline (lost or shuffled utterances, wrong file) pass.
MAX_CORPUS_WER = 0.10
MAX_FILE_WER = 0.30


def manifest(data_dir: Path) -> dict[str, dict[str, str]]:
    with open(data_dir / "MANIFEST.tsv", encoding="utf-8", newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f, delimiter="\t")}


def transcribe(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["transcribe", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def cues(text: str, fmt: str) -> list[tuple[int, int, str]]:
    """(start ms, end ms, text) of every cue of a WebVTT or SRT document, checking its framing."""
    lines = text.splitlines()
    if fmt == "vtt":
        assert lines[:2] == ["WEBVTT", ""]
    out = []
    for i, line in enumerate(lines):
        m = CUE.match(line)
        if not m:
            continue
        if fmt == "srt":
            assert lines[i - 1] == str(len(out) + 1)            # cues numbered 1, 2, ...
        g = [int(x) for x in m.groups()]
        start = ((g[0] * 60 + g[1]) * 60 + g[2]) * 1000 + g[3]
        end = ((g[4] * 60 + g[5]) * 60 + g[6]) * 1000 + g[7]
        body = []
        for t in lines[i + 1:]:
            if not t:
                break
            body.append(t)
        out.append((start, end, " ".join(body)))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["vtt", "srt"])
def test_several_files_give_one_subtitle_file_each_matching_the_references(
        fmt: str, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [*LIBRI, JFK]
    out_dir = tmp_path / "subs"                 # made by transcribe
    assert transcribe(capsys, *(str(data_dir / f) for f in files), "--format", fmt, "--output", str(out_dir)) == ""
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(f"{Path(f).stem}.{fmt}" for f in files)
    rows = manifest(data_dir)
    total = ErrorCount()
    for f in files:
        got = cues((out_dir / f"{Path(f).stem}.{fmt}").read_text(encoding="utf-8"), fmt)
        assert got, f
        duration_ms = float(rows[f]["duration_s"]) * 1000
        assert all(0 <= a < b <= duration_ms + 50 for a, b, _ in got), (f, got)
        assert all(got[i][1] <= got[i + 1][0] for i in range(len(got) - 1)), (f, got)   # in order, no overlap
        e = wer(rows[f]["reference"], " ".join(t for _, _, t in got))
        assert e.rate <= MAX_FILE_WER, (f, got, rows[f]["reference"])
        total += e
    assert total.length == 50 and total.rate <= MAX_CORPUS_WER, total


@pytest.mark.slow
def test_language_auto_detects_japanese_and_english_per_file(data_dir: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    ja, en = str(data_dir / FLEURS_JA), str(data_dir / LIBRI[1])
    out = transcribe(capsys, "--model", "base", "--language", "auto", "--format", "jsonl", ja, en)
    finals = [json.loads(line) for line in out.splitlines()]
    assert finals and all(o["final"] for o in finals)
    by_file = {f: [o for o in finals if o["file"] == f] for f in (ja, en)}
    assert {o["language"] for o in by_file[ja]} == {"ja"}
    assert {o["language"] for o in by_file[en]} == {"en"}
    rows = manifest(data_dir)
    # Measured: CER 10 % on the Japanese clip (Whisper base: 6 of 60 characters), 1 word error of 8 on the English one.
    ja_text = "".join(o["committed"] for o in by_file[ja])
    assert " " not in ja_text and cer(rows[FLEURS_JA]["reference"], ja_text).rate < 0.25, ja_text
    en_text = " ".join(o["committed"] for o in by_file[en])
    assert wer(rows[LIBRI[1]]["reference"], en_text).rate <= MAX_FILE_WER, en_text


@pytest.mark.slow
def test_graph_file_given_with_graph_is_the_one_run(data_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The default graph, written to a file with its recognizer switched to pocketsphinx and the GRID grammar.
    Whisper base (the default graph) hears this clip as "Bimble F-Tuna"; the grammar search gives the GRID
    sentence word for word, in the grammar's lower-case words."""
    pytest.importorskip("pocketsphinx")
    pytest.importorskip("av")
    graph = yaml.safe_load((GRAPH_DIR / "default.yaml").read_text(encoding="utf-8"))
    graph["name"] = "grid_commands"
    graph["nodes"]["asr"]["params"] = {"backend": "sphinx", "model": "grid"}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(graph), encoding="utf-8")
    clip = str(data_dir / GRID)
    out = transcribe(capsys, "--graph", str(path), "--format", "jsonl", clip)
    (final,) = [json.loads(line) for line in out.splitlines()]
    reference = manifest(data_dir)[GRID]["reference"]
    assert final["file"] == clip and final["committed"] == reference == "bin blue at f two now"
    assert [w["text"] for w in final["words"]] == reference.split()
