"""fusion: forwards transcript revisions in order per utterance, drops out-of-date ones, always passes finals."""

from __future__ import annotations

import pytest

from kikimimi.engine.clock import ManualClock
from kikimimi.engine.errors import GraphError, ParamError
from kikimimi.engine.graph import load_graph
from kikimimi.engine.messages import Control, ControlKind, Header, Message
from kikimimi.engine.msgs.fused import LabeledTranscript
from kikimimi.engine.msgs.speaker import SpeakerTurn
from kikimimi.engine.msgs.speech import Transcript, Word
from kikimimi.engine.testing import run_node
from kikimimi.nodes.console_sink import format_final
from kikimimi.nodes.fusion import FusionNode


def tr(utt: int, rev: int, text: str = "x", final: bool = False, stream: str = "a", seq: int = 0) -> Transcript:
    committed, unstable = (text, "") if final else ("", text)
    return Transcript(Header(stream, seq, 0, 0, "asr"), utt, rev, committed, unstable, final,
                      0, 16000, 16000, "en")


def forwarded(node: FusionNode, msgs: list[Message]) -> list[tuple[str, int, int, bool]]:
    out = run_node(node, [("transcripts", m) for m in msgs])
    assert all(port == "transcripts" for port, _ in out)
    return [(m.header.stream_id, m.utterance_id, m.revision, m.final)
            for _, m in out if isinstance(m, LabeledTranscript)]


def test_in_order_revisions_pass_unchanged() -> None:
    msgs: list[Message] = [tr(0, 0), tr(0, 1), tr(0, 2, final=True), tr(1, 0), tr(1, 1, final=True)]
    node = FusionNode("fusion")
    out = run_node(node, [("transcripts", m) for m in msgs])
    # The same revisions, as LabeledTranscript with every recognizer field kept and no label added.
    assert [m for _, m in out] == [LabeledTranscript.of(m) for m in msgs]  # type: ignore[arg-type]
    assert all(type(m) is LabeledTranscript and m.header is t.header for (_, m), t in zip(out, msgs, strict=True))
    assert (node.forwarded, node.finals, node.dropped_out_of_date) == (5, 2, 0)


def test_out_of_date_revisions_are_counted_and_dropped() -> None:
    node = FusionNode("fusion")
    got = forwarded(node, [tr(0, 0), tr(0, 2), tr(0, 1), tr(0, 2), tr(0, 3), tr(0, 4, final=True),
                           tr(0, 5), tr(0, 6, final=True)])
    assert got == [("a", 0, 0, False), ("a", 0, 2, False), ("a", 0, 3, False), ("a", 0, 4, True)]
    assert node.dropped_out_of_date == 4          # 1 < 2, duplicate 2, and two after the final
    assert node.stats.dropped["stale"] == 4


def test_a_final_passes_when_partials_were_lost_upstream() -> None:
    assert forwarded(FusionNode("f"), [tr(3, 0), tr(3, 7, final=True)]) == [("a", 3, 0, False), ("a", 3, 7, True)]


def test_streams_and_utterances_are_independent() -> None:
    node = FusionNode("fusion")
    got = forwarded(node, [tr(0, 5, stream="a"), tr(0, 1, stream="b"), tr(1, 0, stream="a"),
                           tr(0, 4, stream="a"), tr(0, 2, stream="b")])
    assert got == [("a", 0, 5, False), ("b", 0, 1, False), ("a", 1, 0, False), ("b", 0, 2, False)]
    assert node.dropped_out_of_date == 1


def test_memory_is_bounded_and_forgotten_utterances_are_out_of_date() -> None:
    node = FusionNode("fusion", {"keep_utterances": 2})
    got = forwarded(node, [tr(0, 0, final=True), tr(1, 0, final=True), tr(2, 0, final=True),
                           tr(0, 1), tr(1, 1), tr(3, 0)])
    assert got == [("a", 0, 0, True), ("a", 1, 0, True), ("a", 2, 0, True), ("a", 3, 0, False)]
    assert node.dropped_out_of_date == 2
    assert len(node.streams["a"].utterances) == 2


def test_end_of_stream_forgets_the_stream() -> None:
    node = FusionNode("fusion")
    eos = Control(Header("a", 0, -1, 0, "asr"), ControlKind.END_OF_STREAM)
    got = forwarded(node, [tr(0, 3), eos, tr(0, 0)])
    assert got == [("a", 0, 3, False), ("a", 0, 0, False)]
    assert node.streams["a"].utterances[0].revision == 0


def test_graph_wiring_is_validated() -> None:
    g = {"version": 1, "nodes": {
        "src": {"kind": "file_source", "params": {"path": "x.wav"}},
        "fusion": {"kind": "fusion", "inputs": {"transcripts": "src.audio"}},
    }}
    with pytest.raises(GraphError, match=r"src\.audio carries AudioChunk but fusion\.transcripts accepts Transcript"):
        load_graph(g)
    with pytest.raises(ParamError, match=r"keep_utterances=0 is below the minimum 1"):
        FusionNode("f", {"keep_utterances": 0})


# ---------------------------------------------------------------------- speaker labels
def turn(utt: int, part: int, who: str, a: float, b: float, final: bool = True, score: float = 0.8) -> SpeakerTurn:
    return SpeakerTurn(Header("a", 0, int(b * 16000), 0, "spk"), utt, part, who, score, who == "alice", final,
                       int(a * 16000), int(b * 16000), 16000)


def final_with_words(start: float, end: float, words: list[tuple[str, float, float]]) -> Transcript:
    ws = tuple(Word(t, int(a * 16000), int(b * 16000), 0.9) for t, a, b in words)
    return Transcript(Header("a", 0, int(end * 16000), 0, "asr"), 0, 1, " ".join(t for t, _, _ in words), "", True,
                      int(start * 16000), int(end * 16000), 16000, "en", ws)


def test_finals_wait_for_their_speaker_turns_and_words_get_the_turn_that_holds_them() -> None:
    clock = ManualClock()
    node = FusionNode("fusion", {}, clock=clock)
    node.connected_inputs = frozenset({"transcripts", "speakers"})
    out: list[Message] = []
    node.bind(lambda port, m: out.append(m))
    node.on_message("speakers", turn(0, 0, "alice", 1.0, 2.0, final=False))
    partial = Transcript(Header("a", 0, 0, 0, "asr"), 0, 0, "", "hello", False, 16000, 32000, 16000, "en")
    node.on_message("transcripts", partial)
    assert out[-1].speaker == "alice"                        # a partial goes at once, with the provisional label
    fin = final_with_words(1.0, 4.0, [("hello", 1.1, 1.5), ("there", 1.6, 2.0), ("bob", 2.6, 3.0), ("here", 3.1, 3.9)])
    node.on_message("transcripts", fin)
    assert len(out) == 1                                     # the final waits for the speaker node's final turns
    node.on_message("speakers", turn(0, 0, "alice", 1.0, 2.4))
    assert len(out) == 1
    node.on_message("speakers", turn(0, 1, "voice_1", 2.4, 4.0, score=0.7))
    assert len(out) == 2
    got = out[-1]
    assert isinstance(got, LabeledTranscript) and got.final and got.speaker == "voice_1" and got.speaker_score == 0.7
    assert [w.speaker for w in got.words] == ["alice", "alice", "voice_1", "voice_1"]
    assert format_final(got) == "[a] 1.00-4.00 s alice: hello there | voice_1: bob here"


def waiting_final() -> tuple[ManualClock, FusionNode, list[Message]]:
    """A fusion node (500 ms speaker wait, a speakers input) holding a final for its speaker turn."""
    clock = ManualClock()
    node = FusionNode("fusion", {"speaker_wait_ms": 500}, clock=clock)
    node.connected_inputs = frozenset({"transcripts", "speakers"})
    out: list[Message] = []
    node.bind(lambda port, m: out.append(m))
    node.on_message("transcripts", final_with_words(1.0, 2.0, [("hi", 1.1, 1.5)]))
    return clock, node, out


def test_a_final_goes_out_without_its_speaker_after_the_wait() -> None:
    clock, node, out = waiting_final()
    later = Transcript(Header("a", 1, 0, 0, "asr"), 1, 0, "", "next", False, 48000, 64000, 16000, "en")
    node.on_message("transcripts", later)
    assert out == []                                          # order is kept: the partial waits behind the final
    clock.advance(400_000_000)
    node.on_tick(clock.now_ns())
    assert out == []
    clock.advance(200_000_000)
    node.on_tick(clock.now_ns())
    assert [m.utterance_id for m in out] == [0, 1] and node.speaker_timeouts == 1
    assert out[0].speaker == ""


def final_then_recognizer_end() -> tuple[ManualClock, FusionNode, list[Message]]:
    """:func:`waiting_final`, then the recognizer's stream ends."""
    clock, node, out = waiting_final()
    node.on_control("transcripts", Control(Header("a", 1, -1, 0, "asr"), ControlKind.END_OF_STREAM))
    return clock, node, out


def test_the_recognizers_end_of_stream_does_not_cut_short_a_final_waiting_for_its_speaker() -> None:
    """The recognizer often finishes a file before the speaker node: its END_OF_STREAM used to send the waiting
    final out unlabelled (the last utterance's label then depended on which node finished first)."""
    _, node, out = final_then_recognizer_end()
    assert out == [] and "a" in node.streams                  # still waiting for the speaker turn
    node.on_message("speakers", turn(0, 0, "alice", 1.0, 2.0))
    assert [m.speaker for m in out] == ["alice"] and node.speaker_timeouts == 0
    assert "a" not in node.streams                            # forgotten once nothing waits


def test_after_the_recognizers_end_of_stream_the_wait_still_runs_out_and_the_stream_is_forgotten() -> None:
    clock, node, out = final_then_recognizer_end()
    clock.advance(600_000_000)
    node.on_tick(clock.now_ns())
    assert [m.speaker for m in out] == [""] and node.speaker_timeouts == 1 and "a" not in node.streams


def test_without_a_speaker_input_finals_do_not_wait() -> None:
    node = FusionNode("fusion")
    fin = final_with_words(1.0, 2.0, [("hi", 1.1, 1.5)])
    assert [m for _, m in run_node(node, [("transcripts", fin)])] == [LabeledTranscript.of(fin)]
