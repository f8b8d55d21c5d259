"""fusion: forwards transcript revisions in order per utterance, drops out-of-date ones, always passes finals."""

from __future__ import annotations

import pytest
from harness import run_node

from kikimimi.engine.errors import GraphError, ParamError
from kikimimi.engine.graph import load_graph
from kikimimi.engine.messages import Control, ControlKind, Header, Message, Transcript
from kikimimi.nodes.fusion import FusionNode


def tr(utt: int, rev: int, text: str = "x", final: bool = False, stream: str = "a", seq: int = 0) -> Transcript:
    committed, unstable = (text, "") if final else ("", text)
    return Transcript(Header(stream, seq, 0, 0, "asr"), utt, rev, committed, unstable, final,
                      0, 16000, 16000, "en")


def forwarded(node: FusionNode, msgs: list[Message]) -> list[tuple[str, int, int, bool]]:
    out = run_node(node, [("transcripts", m) for m in msgs])
    assert all(port == "transcripts" for port, _ in out)
    return [(m.header.stream_id, m.utterance_id, m.revision, m.final)
            for _, m in out if isinstance(m, Transcript)]


def test_in_order_revisions_pass_unchanged() -> None:
    msgs: list[Message] = [tr(0, 0), tr(0, 1), tr(0, 2, final=True), tr(1, 0), tr(1, 1, final=True)]
    node = FusionNode("fusion")
    out = run_node(node, [("transcripts", m) for m in msgs])
    assert [m for _, m in out] == msgs            # the very same objects, unchanged
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
    assert len(node._streams["a"].utterances) == 2


def test_end_of_stream_forgets_the_stream() -> None:
    node = FusionNode("fusion")
    eos = Control(Header("a", 0, -1, 0, "asr"), ControlKind.END_OF_STREAM)
    got = forwarded(node, [tr(0, 3), eos, tr(0, 0)])
    assert got == [("a", 0, 3, False), ("a", 0, 0, False)]
    assert node._streams["a"].utterances[0].revision == 0


def test_graph_wiring_is_validated() -> None:
    g = {"version": 1, "nodes": {
        "src": {"kind": "file_source", "params": {"path": "x.wav"}},
        "fusion": {"kind": "fusion", "inputs": {"transcripts": "src.audio"}},
    }}
    with pytest.raises(GraphError, match=r"src\.audio carries AudioChunk but fusion\.transcripts accepts Transcript"):
        load_graph(g)
    with pytest.raises(ParamError, match=r"keep_utterances=0 is below the minimum 1"):
        FusionNode("f", {"keep_utterances": 0})
