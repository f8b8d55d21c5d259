"""`kikimimi transcribe`: subtitle/text formats (unit) and the CLI over real clips through the streaming graph."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from kikimimi.engine.errors import GraphError, KikimimiError
from kikimimi.engine.graph import load_graph
from kikimimi.engine.jsonio import message_from_json, message_to_json
from kikimimi.engine.messages import NO_SAMPLE, Header
from kikimimi.engine.msgs.fused import TRANSCRIPT_TYPES
from kikimimi.engine.msgs.speech import SpeechEventKind, Transcript, VadEvent, Word
from kikimimi.launch.cli import main, resolve_graph
from kikimimi.launch.subtitles import Cue, file_text, format_srt, format_vtt, make_cues, timestamp
from kikimimi.launch.transcribe import (
    TRANSCRIPTS,
    AudioPosition,
    Progress,
    TranscriptCollector,
    recognizer,
    transcribe_graph,
)

JFK = "en/jfk/jfk.flac"
LIBRI = "en/librispeech/1688/1688-142285-0004.flac"   # "his statement of having been a shop boy ..."
VTT_CUE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})$")
SRT_CUE = re.compile(r"^(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})$")

RATE = 16000


def final(utt: int, words: list[tuple[str, float, float]], language: str = "en", joiner: str = " ") -> Transcript:
    ws = tuple(Word(t, round(a * RATE), round(b * RATE), 0.9) for t, a, b in words)
    text = joiner.join(t for t, _, _ in words)
    start = ws[0].start_sample if ws else 0
    end = ws[-1].end_sample if ws else 0
    return Transcript(Header("file", utt, 0, 0, "fusion"), utt, 3, text, "", True, start, end, RATE, language, ws)


# ---------------------------------------------------------------------- formats (unit)
def test_timestamps() -> None:
    assert timestamp(1230) == "00:00:01.230"
    assert timestamp(1230, ",") == "00:00:01,230"
    assert timestamp(3_723_004) == "01:02:03.004"
    with pytest.raises(ValueError, match="must be >= 0 ms, got -1"):
        timestamp(-1)


def test_one_cue_per_utterance_from_word_times() -> None:
    cues = make_cues([final(0, [("Hello", 1.23, 1.5), ("world.", 1.6, 2.0)]), final(1, [("Bye.", 3.0, 3.4)])],
                     min_s=0)
    assert cues == [Cue(1230, 2000, "Hello world."), Cue(3000, 3400, "Bye.")]
    assert format_vtt(cues) == ("WEBVTT\n\n00:00:01.230 --> 00:00:02.000\nHello world.\n"
                                "\n00:00:03.000 --> 00:00:03.400\nBye.\n")
    assert format_srt(cues) == ("1\n00:00:01,230 --> 00:00:02,000\nHello world.\n\n"
                                "2\n00:00:03,000 --> 00:00:03,400\nBye.\n\n")
    # By default a cue stays on screen for at least 1 s, where the next cue (or the media's end) leaves room.
    held = make_cues([final(0, [("Hello", 1.23, 1.5), ("world.", 1.6, 2.0)]), final(1, [("Bye.", 3.0, 3.4)])])
    assert held == [Cue(1230, 2230, "Hello world."), Cue(3000, 4000, "Bye.")]
    assert make_cues([final(0, [("Bye.", 3.0, 3.4)])], end_ms=3600) == [Cue(3000, 3600, "Bye.")]


def test_long_utterances_split_on_word_boundaries_by_time_and_length() -> None:
    words = [(f"word{i:02d}", i * 0.5, i * 0.5 + 0.4) for i in range(40)]   # 20 s, 279 chars
    cues = make_cues([final(0, words)])
    assert len(cues) > 5
    assert all(len(c.text) <= 42 and (c.end_ms - c.start_ms) <= 7000 for c in cues)
    assert " ".join(c.text for c in cues) == " ".join(w for w, _, _ in words)
    long_word = make_cues([final(0, [("a" * 50, 0.0, 1.0), ("b", 1.0, 1.2)])])
    assert [c.text for c in long_word] == ["a" * 50, "b"]


def test_cue_times_never_go_backwards() -> None:
    cues = make_cues([final(0, [("one", 1.0, 2.0)]), final(1, [("two", 1.5, 1.5)]), final(2, [("three", 0.5, 0.6)])],
                     min_s=0)
    starts_ends = [(c.start_ms, c.end_ms) for c in cues]
    assert starts_ends == [(1000, 2000), (2000, 2001), (2001, 2002)]


def test_words_without_duration_run_to_the_next_cue_or_the_utterance_end() -> None:
    words = [("first", 0.0, 0.5), ("part", 0.5, 1.0), ("then", 1.0, 1.0), ("timing", 1.0, 1.0), ("is", 1.0, 1.0),
             ("lost", 1.0, 1.0)]
    t = final(0, words)
    t = Transcript(t.header, 0, 3, t.committed, "", True, 0, 4 * RATE, RATE, "en", t.words)
    cues = make_cues([t], max_chars=12)
    assert cues == [Cue(0, 1000, "first part"), Cue(1000, 2500, "then timing"), Cue(2500, 4000, "is lost")]


def test_finals_without_words_and_empty_finals() -> None:
    t = Transcript(Header("file", 0, 0, 0, "fusion"), 0, 1, "no words here", "", True, 16000, 48000, RATE, "en")
    empty = Transcript(Header("file", 1, 0, 0, "fusion"), 1, 1, "", "", True, 50000, 60000, RATE, "en")
    assert make_cues([t, empty]) == [Cue(1000, 3000, "no words here")]
    assert file_text([t, empty, t]) == "no words here no words here"


def test_japanese_is_joined_without_spaces() -> None:
    ja = [final(0, [("今日は", 0.0, 0.5), ("晴れ", 0.5, 0.9)], "ja", ""), final(1, [("です。", 1.0, 1.4)], "ja", "")]
    assert file_text(ja) == "今日は晴れです。"
    assert [c.text for c in make_cues(ja, min_s=0)] == ["今日は晴れ", "です。"]
    assert [c.text for c in make_cues(ja)] == ["今日は晴れです。"]     # a 0.4 s cue joins its neighbour


def test_no_stray_fragment_at_the_end_of_a_long_utterance() -> None:
    """45 characters: cutting at 42 would leave "silly." alone for 0.3 s; the cut moves to the comma."""
    words = [("I", 0.0, 0.2), ("think,", 0.2, 0.6), ("to", 0.8, 0.9), ("be", 0.9, 1.0), ("honest,", 1.0, 1.4),
             ("this", 1.5, 1.7), ("whole", 1.7, 2.0), ("business", 2.0, 2.5), ("is", 2.5, 2.6), ("silly.", 2.6, 2.9)]
    cues = make_cues([final(0, words)])
    assert [c.text for c in cues] == ["I think, to be honest,", "this whole business is silly."]
    assert all(c.end_ms - c.start_ms >= 1000 for c in cues)


def test_punctuation_never_makes_a_cue_of_its_own() -> None:
    cues = make_cues([final(0, [("Wait", 0.0, 0.5), ("for", 0.5, 0.7), ("it", 0.7, 1.0), ("...", 1.0, 1.1)]),
                      final(1, [("in...", 1.3, 1.6)])])
    assert [c.text for c in cues] == ["Wait for it... in..."]


def test_japanese_cues_keep_20_characters() -> None:
    chars = "今日はとても良い天気ですね、公園に散歩に行きましょう。"      # 27 characters
    ja = final(0, [(ch, i * 0.2, i * 0.2 + 0.2) for i, ch in enumerate(chars)], "ja", "")
    cues = make_cues([ja])
    assert [c.text for c in cues] == ["今日はとても良い天気ですね、", "公園に散歩に行きましょう。"]
    sentence = "it is a fine day, let us go out"                                # 31 characters of 42
    english = final(0, [(w, i * 0.4, i * 0.4 + 0.4) for i, w in enumerate(sentence.split())])
    assert [c.text for c in make_cues([english])] == [sentence]


def test_speakers_split_cues_and_are_named() -> None:
    t = final(0, [("Hello", 0.0, 0.6), ("there.", 0.6, 1.2), ("Hi", 1.3, 1.8), ("back.", 1.8, 2.4)])
    ws = (*(Word(w.text, w.start_sample, w.end_sample, w.confidence, "Ann") for w in t.words[:2]),
          *(Word(w.text, w.start_sample, w.end_sample, w.confidence, "Bob & co") for w in t.words[2:]))
    t = Transcript(t.header, 0, 3, t.committed, "", True, t.start_sample, t.end_sample, RATE, "en", ws)
    assert [c.text for c in make_cues([t])] == ["Hello there. Hi back."]
    cues = make_cues([t], speakers=True)
    assert [(c.speaker, c.text) for c in cues] == [("Ann", "Hello there."), ("Bob & co", "Hi back.")]
    assert format_vtt(cues).splitlines()[3] == "<v Ann>Hello there."
    assert format_vtt(cues).splitlines()[6] == "<v Bob &amp; co>Hi back."
    assert format_srt(cues).splitlines()[2] == "Ann: Hello there."


def test_final_transcripts_with_words_round_trip_through_json() -> None:
    t = final(0, [("Hello", 1.23, 1.5), ("world.", 1.6, 2.0)])
    obj = json.loads(json.dumps(message_to_json(t)))
    assert obj["words"][0] == {"text": "Hello", "start_sample": 19680, "end_sample": 24000, "confidence": 0.9,
                               "speaker": ""}
    assert message_from_json(obj) == t


def test_progress_bar_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    plain = io.StringIO()
    Progress(plain).update("a.flac", 1.0, 2.0)
    assert plain.getvalue() == ""
    tty = Tty()
    bar = Progress(tty, width=10)
    bar.update("a.flac", 5.0, 10.0)
    bar.update("a.flac", 5.0, 10.0)      # unchanged: not redrawn
    bar.done()
    assert tty.getvalue() == "\r[#####-----]  50%  a.flac  5.0/10.0 s\x1b[K" + "\r\x1b[K"

    batch = Tty()
    bar = Progress(batch, width=10)
    bar.begin([10.0, 30.0])
    bar.update("a.flac", 10.0, 10.0)
    bar.done()
    bar.update("b.flac", 15.0, 30.0)     # 10 + 15 of 40 s: 62 %
    assert batch.getvalue().split("\r")[-1] == ("[#####-----]  50%  b.flac  15.0/30.0 s  | file 2/2 [######----]  62% "
                                                "of 40.0 s\x1b[K")


# ---------------------------------------------------------------------- the graph
def test_transcribe_runs_the_default_graph_with_file_input_and_without_sinks(data_dir: Path) -> None:
    base = resolve_graph("default")
    spec = transcribe_graph(base, str(data_dir / JFK), model="tiny.en", language="en")
    kinds = {n.name: n.kind for n in spec.nodes}
    assert kinds == {**{n.name: n.kind for n in base.nodes if n.name != "console"}, "source": "file_source"}
    assert spec.node("source").params["speed"] == 0.0
    assert spec.node("asr").params["model"] == "tiny.en" and spec.node("asr").params["language"] == "en"
    for n in spec.nodes:     # same edges
        assert {i.port: i.sources for i in n.inputs} == {i.port: i.sources for i in base.node(n.name).inputs}
    assert all(i.queue.max_age_ns is None for n in spec.nodes for i in n.inputs)
    assert spec.output(TRANSCRIPTS).ref == "fusion.transcripts"


def test_the_recognizer_is_where_the_transcripts_output_starts() -> None:
    assert recognizer(resolve_graph("default")).name == "asr"
    assert recognizer(resolve_graph("av")).name == "asr"
    d = resolve_graph("default").to_dict()
    d["nodes"]["rec"] = d["nodes"].pop("asr")
    d["nodes"]["fusion"]["inputs"]["transcripts"]["from"] = ["rec.transcripts"]
    assert recognizer(load_graph(d)).name == "rec"
    d["outputs"]["transcripts"] = "rec.transcripts"
    assert recognizer(load_graph(d)).name == "rec"
    d = resolve_graph("default").to_dict()
    d["nodes"]["asr2"] = d["nodes"]["asr"]
    d["nodes"]["fusion"]["inputs"]["transcripts"]["from"] = ["asr.transcripts", "asr2.transcripts"]
    with pytest.raises(KikimimiError, match=r"the one node where the graph's 'transcripts' output "
                                            r"\(fusion.transcripts\) starts; found 2: asr, asr2"):
        recognizer(load_graph(d))


def test_a_graph_without_a_transcripts_output_says_which_key_to_add(data_dir: Path) -> None:
    d = resolve_graph("default").to_dict()
    del d["outputs"]
    with pytest.raises(GraphError, match=r"names no outputs, so it has no 'transcripts' output; add to the graph "
                                         r"file: outputs: \{transcripts: node.port\}"):
        transcribe_graph(load_graph(d), str(data_dir / JFK))


def test_collector_keeps_finals_and_position_follows_the_outputs() -> None:
    partial = Transcript(Header("file", 0, 0, 0, "fusion"), 0, 0, "he", "llo", False, 0, 8000, RATE, "en")
    done = final(0, [("Hello", 0.0, 0.5)])
    collector = TranscriptCollector()
    for m in (partial, done):
        collector.add(m)
    assert collector.finals == [done]
    pos = AudioPosition()
    pos.add(partial)
    assert pos.seconds == 0.5
    pos.add(VadEvent(Header("file", 1, 24000, 0, "vad"), SpeechEventKind.PROGRESS, 24000, NO_SAMPLE, RATE, 0.1))
    assert pos.seconds == 1.5
    pos.add(done)          # behind the furthest position: unchanged
    assert pos.seconds == 1.5


# ---------------------------------------------------------------------- the CLI on real clips
def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["transcribe", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def times(m: re.Match[str]) -> tuple[int, int]:
    g = [int(x) for x in m.groups()]
    return ((g[0] * 60 + g[1]) * 60 + g[2]) * 1000 + g[3], ((g[4] * 60 + g[5]) * 60 + g[6]) * 1000 + g[7]


def check_cues(lines: list[str], pattern: re.Pattern[str]) -> list[str]:
    """Check every timing line and that cue times never go backwards; return the cue texts."""
    spans = [times(m) for m in map(pattern.match, lines) if m]
    assert spans, "no cues"
    assert all(a < b for a, b in spans)
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))
    texts = [lines[i + 1] for i, ln in enumerate(lines) if pattern.match(ln)]
    assert all(t.strip() for t in texts)
    return texts


@pytest.mark.slow
def test_text_format_one_line_per_file(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jfk, libri = str(data_dir / JFK), str(data_dir / LIBRI)
    code, out, err = cli(["--model", "tiny.en", "--language", "en", jfk, libri], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == [jfk, libri]
    texts = [ln.split("\t", 1)[1].lower() for ln in lines]
    assert "your country" in texts[0]
    assert "shop boy" in texts[1] or "best of all" in texts[1]
    assert "\r" not in err and "[#" not in err      # stderr is not a terminal: no progress bar


@pytest.mark.slow
def test_vtt_srt_and_jsonl(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jfk = str(data_dir / JFK)
    code, out, err = cli(["--model", "tiny.en", "--format", "vtt", jfk], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "WEBVTT" and lines[1] == ""
    vtt_texts = check_cues(lines, VTT_CUE)
    assert "country" in " ".join(vtt_texts).lower()

    srt_path = tmp_path / "jfk.srt"
    code, out, err = cli(["--model", "tiny.en", "--format", "srt", "--output", str(srt_path), jfk], capsys)
    assert code == 0 and out == "", err
    blocks = srt_path.read_text().strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [str(i) for i in range(1, len(blocks) + 1)]
    srt_texts = check_cues(srt_path.read_text().splitlines(), SRT_CUE)
    assert "country" in " ".join(srt_texts).lower()

    code, out, err = cli(["--model", "tiny.en", "--format", "jsonl", jfk], capsys)
    assert code == 0, err
    objs = [json.loads(ln) for ln in out.splitlines()]
    assert objs and all(o["type"] == "LabeledTranscript" and o["final"] and o["file"] == jfk for o in objs)
    finals = [message_from_json({k: v for k, v in o.items() if k != "file"}) for o in objs]
    assert all(t.words for t in finals if isinstance(t, TRANSCRIPT_TYPES) and t.committed)
    assert " ".join(t.committed for t in finals if isinstance(t, TRANSCRIPT_TYPES)).lower().count("country") >= 1


def test_usage_errors_name_the_problem(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli([str(tmp_path / "nope.flac")], capsys)
    assert code == 1 and err == f"kikimimi: error: {tmp_path / 'nope.flac'}: no such file\n"
    jfk = str(data_dir / JFK)
    code, _, err = cli(["--format", "srt", jfk, jfk], capsys)
    assert code == 2 and "--format srt with 2 files needs --output DIR" in err
    with pytest.raises(SystemExit):
        cli(["--format", "docx", jfk], capsys)


@pytest.mark.slow
def test_japanese_text_is_joined_without_spaces(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = str(data_dir / "ja/fleurs/fleurs_ja_1837.wav")
    code, out, err = cli(["--language", "ja", clip], capsys)
    assert code == 0, err
    path, text = out.rstrip("\n").split("\t")
    assert path == clip and "復興" in text and " " not in text


@pytest.mark.slow
def test_a_file_of_several_utterances_keeps_every_one(data_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """At full speed the VAD runs ahead of the features; no utterance may be dropped or merged away."""
    import soundfile as sf
    import soxr

    parts = []
    for clip in (LIBRI, JFK, LIBRI):
        x, sr = sf.read(str(data_dir / clip), dtype="float32", always_2d=True)
        parts += [soxr.resample(x.mean(axis=1), sr, RATE), np.zeros(RATE, np.float32)]
    path = tmp_path / "three.wav"
    sf.write(str(path), np.concatenate(parts), RATE)
    code, out, err = cli(["--model", "tiny.en", "--language", "en", "--format", "jsonl", str(path)], capsys)
    assert code == 0, err
    text = " ".join(json.loads(ln)["committed"] for ln in out.splitlines()).lower()
    # Every utterance is there. (Not "best of all" twice: with batch transcription's beam 5, tiny.en ends the
    # repeated sentence at "the thing I like", where faster-whisper's beam 5 on the same span does not: open.)
    assert text.count("having been a shop") == 2, text
    assert text.count("your country") >= 2, text
