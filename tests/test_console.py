"""console_sink with transcripts: final lines, live redraw of partials on a terminal, plain output otherwise."""

from __future__ import annotations

import io

import pytest

from kikimimi.engine.messages import Control, ControlKind, Header, Message
from kikimimi.engine.msgs.speech import SpeechEventKind, Transcript, VadEvent
from kikimimi.nodes.console_sink import (
    DIM,
    ERASE_LINE,
    RESET,
    ConsoleSink,
    display_width,
    fit_tail,
    format_final,
    format_partial,
    live_line,
)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def tr(rev: int, committed: str, unstable: str = "", final: bool = False, stream: str = "file",
       utt: int = 0) -> Transcript:
    return Transcript(Header(stream, rev, 0, 0, "fusion"), utt, rev, committed, unstable, final,
                      19680, 72960, 16000, "en")


PARTIALS = [tr(0, "", "turn"), tr(1, "turn ", "left"), tr(2, "turn left", "", final=True)]


def run(msgs: list[Message], out: io.StringIO, monkeypatch: pytest.MonkeyPatch, **params: object) -> str:
    monkeypatch.setattr("sys.stdout", out)
    node = ConsoleSink("console", params)
    node.on_start()
    for m in msgs:
        if isinstance(m, Control):
            node.on_control("in", m)
        else:
            node.on_message("in", m)
    node.on_stop()
    return out.getvalue()


def test_final_line_format() -> None:
    assert format_final(PARTIALS[-1]) == "[file] 1.23-4.56 s: turn left"
    assert format_partial(PARTIALS[1]) == "[file] 1.23-4.56 s ~ turn [left]"
    assert format_partial(PARTIALS[0]) == "[file] 1.23-4.56 s ~ [turn]"


def test_final_line_shows_the_face_that_spoke() -> None:
    from kikimimi.engine.msgs.fused import LabeledTranscript

    fused = LabeledTranscript.of(PARTIALS[-1], face_id=2, face_score=0.814, speaker="alice")
    assert format_final(fused) == "[file] 1.23-4.56 s face 2 (0.81) alice: turn left"
    assert format_final(LabeledTranscript.of(PARTIALS[-1], face_id=0)) == "[file] 1.23-4.56 s face 0: turn left"
    assert format_partial(LabeledTranscript.of(PARTIALS[1], face_id=1, face_score=0.5)) == \
        "[file] 1.23-4.56 s face 1 (0.50) ~ turn [left]"


def test_not_a_tty_prints_only_finals(monkeypatch: pytest.MonkeyPatch) -> None:
    text = run(PARTIALS, io.StringIO(), monkeypatch)
    assert text == "[file] 1.23-4.56 s: turn left\n"
    assert "\x1b" not in text and "\r" not in text


def test_lines_mode_prints_one_line_per_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    text = run(PARTIALS, io.StringIO(), monkeypatch, partials="lines")
    assert text.splitlines() == ["[file] 1.23-4.56 s ~ [turn]", "[file] 1.23-4.56 s ~ turn [left]",
                                 "[file] 1.23-4.56 s: turn left"]


def test_tty_redraws_the_partial_in_place_then_prints_the_final(monkeypatch: pytest.MonkeyPatch) -> None:
    text = run(PARTIALS, Tty(), monkeypatch)
    assert text == (ERASE_LINE + "[file] 1.23 s: " + DIM + "turn" + RESET
                    + ERASE_LINE + "[file] 1.23 s: turn " + DIM + "left" + RESET
                    + ERASE_LINE + "[file] 1.23-4.56 s: turn left\n")


def test_tty_other_lines_keep_the_partial_below_them(monkeypatch: pytest.MonkeyPatch) -> None:
    start = VadEvent(Header("file", 0, 0, 0, "vad"), SpeechEventKind.SPEECH_START, 8320, -1, 16000, 0.5)
    eos = Control(Header("file", 9, -1, 0, "src"), ControlKind.END_OF_STREAM)
    text = run([PARTIALS[0], start, eos], Tty(), monkeypatch, vad_events="all", end_of_stream=True)
    partial = "[file] 1.23 s: " + DIM + "turn" + RESET
    assert text == (ERASE_LINE + partial
                    + ERASE_LINE + "[file] speech start 0.52 s\n" + ERASE_LINE + partial
                    + ERASE_LINE                                          # the stop clears the status line
                    + "[file] end of stream from src\n")                 # and then prints the end of stream


def test_end_of_stream_prints_after_the_last_final_and_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """At full speed the VAD's end of stream reaches the console before the recognizer's last final."""
    vad_eos = Control(Header("all", 9, -1, 0, "vad"), ControlKind.END_OF_STREAM)
    fusion_eos = Control(Header("all", 3, -1, 0, "fusion"), ControlKind.END_OF_STREAM)
    msgs: list[Message] = [vad_eos, PARTIALS[-1], fusion_eos]
    assert run(msgs, io.StringIO(), monkeypatch, end_of_stream=True).splitlines() == [
        "[file] 1.23-4.56 s: turn left", "[all] end of stream from vad", "[all] end of stream from fusion"]
    assert run(msgs, io.StringIO(), monkeypatch).splitlines() == ["[file] 1.23-4.56 s: turn left"]


def test_empty_final_clears_the_partial_and_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    msgs = [tr(0, "", "look"), tr(1, "", "", final=True)]
    assert run(msgs, Tty(), monkeypatch) == ERASE_LINE + "[file] 1.23 s: " + DIM + "look" + RESET + ERASE_LINE
    assert run(msgs, io.StringIO(), monkeypatch) == ""


def test_forced_live_mode_and_stop_leaves_a_clean_line(monkeypatch: pytest.MonkeyPatch) -> None:
    text = run([PARTIALS[0]], io.StringIO(), monkeypatch, partials="live")
    assert text == ERASE_LINE + "[file] 1.23 s: " + DIM + "turn" + RESET + ERASE_LINE


def test_live_line_fits_the_terminal_keeping_the_end() -> None:
    long = tr(0, "one two three four five six seven ", "eight nine")
    line = live_line(long, 30, color=False)
    assert display_width(line) == 30 and line.startswith("…") and line.endswith("eight nine")
    colored = live_line(long, 30)
    assert colored.endswith(DIM + "eight nine" + RESET)
    wide = fit_tail("日本語のテキストです", 9)
    assert wide == "…ストです" and display_width(wide) == 9


def test_vad_event_lines_can_be_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    start = VadEvent(Header("file", 0, 0, 0, "vad"), SpeechEventKind.SPEECH_START, 8320, -1, 16000, 0.5)
    end = VadEvent(Header("file", 1, 0, 0, "vad"), SpeechEventKind.SPEECH_END, 8320, 49600, 16000, 0.9)
    msgs: list[Message] = [start, end, PARTIALS[-1]]
    assert run(msgs, io.StringIO(), monkeypatch, vad_events="start").splitlines() == [
        "[file] speech start 0.52 s", "[file] 1.23-4.56 s: turn left"]
    assert run(msgs, io.StringIO(), monkeypatch, vad_events="off").splitlines() == ["[file] 1.23-4.56 s: turn left"]
    assert len(run(msgs, io.StringIO(), monkeypatch, vad_events="all").splitlines()) == 3
    assert run(msgs, io.StringIO(), monkeypatch).splitlines() == ["[file] 1.23-4.56 s: turn left"]   # default: off
