"""Files at full speed repeat exactly (lossless profile), and batch transcription decodes whole utterances
with beam search (batch profile): each node kind declares what it changes (``lossless_params``,
``batch_params``) and :meth:`GraphSpec.lossless` / :meth:`GraphSpec.batch` apply it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kikimimi.launch.cli import main, resolve_graph
from kikimimi.launch.transcribe import transcribe_graph
from kikimimi.models.asr.text import wer


def test_profiles_set_each_nodes_parameters_and_skip_an_unselected_backends() -> None:
    spec = resolve_graph("default")
    lossless = spec.lossless()
    assert lossless.node("asr").params["max_lag_ms"] == 0 and lossless.node("asr").params["vad_lookahead_ms"] == 0
    assert lossless.node("speaker").params["vad_lookahead_ms"] == 0
    assert lossless.node("fusion").params["speaker_wait_ms"] == 3_600_000
    assert lossless.node("asr").params.get("partials", True) is True
    batch = spec.batch()
    asr = batch.node("asr").params
    assert asr["partials"] is False and asr["whisper.beam_size"] == 5 and asr["max_lag_ms"] == 0
    assert batch.node("vad").params["min_silence_ms"] == 1000
    assert all(n.inputs == m.inputs for n, m in zip(batch.nodes, lossless.nodes, strict=True))
    sphinx = spec.with_node("asr", "asr", {**spec.node("asr").params, "backend": "sphinx"}).batch()
    assert "whisper.beam_size" not in sphinx.node("asr").params and sphinx.node("asr").params["partials"] is False
    sphinx.node("asr").cls.check_params(sphinx.node("asr").params, "asr")   # valid for the sphinx backend


def test_transcribe_uses_the_batch_profile(data_dir: Path) -> None:
    spec = transcribe_graph(resolve_graph("default"), str(data_dir / "en/jfk/jfk.flac"))
    assert spec.node("asr").params["partials"] is False and spec.node("vad").params["min_silence_ms"] == 1000


def test_transcribe_settings_win_over_the_batch_profile(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``transcribe --set``: a node parameter the user sets is applied after the batch profile, so it wins
    (beam 1 instead of the profile's 5); a bad one fails before any file is decoded, naming what is allowed."""
    jfk = str(data_dir / "en/jfk/jfk.flac")
    spec = transcribe_graph(resolve_graph("default"), jfk,
                            settings=["asr.whisper.beam_size=1", "asr.whisper.final_window_ms=30000"])
    asr = spec.node("asr").params
    assert asr["whisper.beam_size"] == 1 and asr["whisper.final_window_ms"] == 30000 and asr["partials"] is False
    plain = transcribe_graph(resolve_graph("default"), jfk)
    assert all(n.inputs == m.inputs for n, m in zip(spec.nodes, plain.nodes, strict=True))  # queues stay lossless
    assert main(["transcribe", "--set", "asr.whisper.final_window_ms=-2", jfk]) == 2
    err = capsys.readouterr().err
    assert "final_window_ms" in err and "-2" in err and capsys.readouterr().out == ""


@pytest.mark.slow
def test_transcribe_gives_the_same_bytes_on_every_run(data_dir: Path) -> None:
    """Two runs of the command, as a user makes them: speaker labels, word times and confidences included.
    JFK's last utterance is still going when the file ends; 1998-15444-0007 ends less than 500 ms after its
    speech (its final once ended at the VAD's end or at the file's, by whether a decode ran in between)."""
    files = [str(data_dir / p) for p in ("en/librispeech/2414/2414-128291-0005.flac",
                                         "en/librispeech/1998/1998-15444-0007.flac", "diarization/ami/dev01.wav",
                                         "en/jfk/jfk.flac")]
    outs = []
    for _ in range(2):
        run = subprocess.run([sys.executable, "-m", "kikimimi.launch.cli", "transcribe", "--model", "tiny.en",
                              "--format", "jsonl", *files], capture_output=True, text=True, timeout=600, check=False)
        assert run.returncode == 0, run.stderr
        outs.append(run.stdout)
    assert outs[0] == outs[1]
    finals = [json.loads(line) for line in outs[0].splitlines()]
    assert len({f["file"] for f in finals}) == len(files) and all(f["final"] for f in finals)
    assert all(w["speaker"].startswith("voice_") for f in finals for w in f["words"])   # every word labelled


@pytest.mark.slow
def test_batch_transcription_matches_faster_whisper_offline(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Whole utterances with beam 5 against faster-whisper's own transcribe() (beam 5, whole clip, int8) on the
    same LibriSpeech clips: measured 6.4 % both on the first 20 clips with base (streaming finals before: 9.7 %)."""
    from faster_whisper import WhisperModel

    from kikimimi.models.asr.resolve import resolve_model

    with (data_dir / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        rows = sorted((r for r in csv.DictReader(f, delimiter="\t") if "librispeech" in r["path"]),
                      key=lambda r: r["path"])[::7]                # 10 clips over 10 speakers
    files = [str(data_dir / r["path"]) for r in rows]
    assert main(["transcribe", "--model", "tiny.en", "--language", "en", "--format", "jsonl", *files]) == 0
    ours: dict[str, list[str]] = {}
    for line in capsys.readouterr().out.splitlines():
        o = json.loads(line)
        ours.setdefault(o["file"], []).append(o["committed"])
    model = WhisperModel(str(resolve_model("tiny.en").path), device="cpu", compute_type="int8", cpu_threads=2)
    ours_wer = theirs_wer = None
    for r, path in zip(rows, files, strict=True):
        segments, _ = model.transcribe(path, beam_size=5, language="en")
        text = " ".join(s.text for s in segments)
        a, b = wer(r["reference"], " ".join(ours.get(path, []))), wer(r["reference"], text)
        ours_wer, theirs_wer = (a, b) if ours_wer is None else (ours_wer + a, theirs_wer + b)
    assert ours_wer is not None and theirs_wer is not None
    print(f"\nWER ours {ours_wer.rate:.2%}, faster-whisper offline {theirs_wer.rate:.2%} ({ours_wer.length} words)")
    assert ours_wer.rate <= theirs_wer.rate + 0.01
