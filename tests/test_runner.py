"""The in-process runner: delivery, end of stream, errors that do not stop the stream, graceful stop."""

from __future__ import annotations

import numpy as np
import pytest
from toy_nodes import Collect
from waiting import wait_until

from kikimimi.engine.graph import GraphBuilder, GraphSpec
from kikimimi.engine.messages import Control, ControlKind
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.runner import GraphFailed, Runner


def chain(count: int = 50, fail_on: int = -1, delay_s: float = 0.0, forever: bool = False) -> GraphSpec:
    g = GraphBuilder("t")
    g.node("src", "toy_ramp", count=count, forever=forever)
    g.node("gain", "toy_gain", fail_on=fail_on).connect("audio", "src.audio")
    g.node("sink", "toy_collect", delay_s=delay_s).connect("in", "gain.audio", "src.audio",
                                                             policy="block", capacity=4)
    return g.build()


def data(name: str) -> list[AudioChunk]:
    return [m for m in Collect.seen[name] if isinstance(m, AudioChunk)]


def test_every_message_arrives_in_order_with_intact_samples() -> None:
    r = Runner(chain(200))
    r.run()
    got = data("sink")
    from_gain = [m for m in got if m.header.source == "gain"]
    from_src = [m for m in got if m.header.source == "src"]
    assert [m.header.seq for m in from_gain] == list(range(200))
    assert [m.header.seq for m in from_src] == list(range(200))
    for a, b in zip(from_src, from_gain, strict=True):
        assert a.header.sample_index == b.header.sample_index
        np.testing.assert_array_equal(a.samples.astype(np.int32), -b.samples.astype(np.int32))
    # END_OF_STREAM comes from each upstream node, after its data.
    eos = [m for m in Collect.seen["sink"] if isinstance(m, Control)]
    assert sorted(m.header.source for m in eos) == ["gain", "src"]
    assert all(m.kind is ControlKind.END_OF_STREAM for m in eos)
    assert isinstance(Collect.seen["sink"][-1], Control)
    stats = {s["node"]: s for s in r.stats()}
    assert stats["sink"]["received"] == stats["sink"]["processed"] == 400
    assert stats["gain"]["emitted"] == 201  # 200 chunks + END_OF_STREAM


def test_end_of_stream_delivers_everything_accepted_to_a_slow_sink() -> None:
    # The source finishes long before the sink; nothing queued may be lost at the end.
    r = Runner(chain(40, delay_s=0.002))
    r.run()
    assert len(data("sink")) == 80
    assert r.drivers["sink"].node.stats.dropped_total == 0


def test_a_failing_message_is_counted_and_the_stream_goes_on() -> None:
    r = Runner(chain(30, fail_on=7))
    r.run()
    seqs = [m.header.seq for m in data("sink") if m.header.source == "gain"]
    assert len(seqs) == 29 and 7 not in {m.header.sample_index // 160 for m in data("sink")
                                          if m.header.source == "gain"}
    gain = r.drivers["gain"].node.stats
    assert gain.dropped["error"] == 1 and gain.processed == 29


def test_a_node_that_cannot_start_fails_the_graph_with_its_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g = GraphBuilder("t")
    g.node("src", "toy_ramp", count=3)
    g.node("sink", "toy_collect", path=str(tmp_path / "missing-dir" / "x.jsonl")).connect("in", "src.audio")
    with pytest.raises(GraphFailed, match="node 'sink' \\(toy_collect\\) could not start"):
        Runner(g.build()).run()


def test_stop_is_graceful_and_delivers_what_was_accepted() -> None:
    r = Runner(chain(forever=True, delay_s=0.001))
    r.start()
    # Wait (on the pipeline, not on wall time) until data is flowing.
    wait_until(lambda: len(Collect.seen.get("sink", [])) > 20, 60, "20 messages at the sink")
    r.stop()
    assert r.wait(timeout_s=10)
    sink = r.drivers["sink"].node.stats
    src_emitted = r.drivers["src"].node.stats.emitted - 1       # minus its END_OF_STREAM
    gain_emitted = r.drivers["gain"].node.stats.emitted - 1
    assert sink.dropped_total == 0
    assert sink.processed == src_emitted + gain_emitted
    assert isinstance(Collect.seen["sink"][-1], Control)


def test_abort_ends_a_stuck_graph() -> None:
    r = Runner(chain(forever=True, delay_s=0.05), shutdown_timeout_s=0.2)
    r.start()
    sink = r.drivers["sink"].node.stats
    # the sink's queue is full: draining it takes longer than the timeout
    wait_until(lambda: sink.received >= 6, 60, "6 messages received by the sink")
    r.stop()
    assert r.wait(timeout_s=5)
    # Aborted before it could drain: what it never processed is counted, not silently lost.
    assert sink.dropped["aborted"] > 0
    assert sink.received == sink.processed + sink.dropped["aborted"]


def test_a_tap_sees_what_an_output_emits_without_a_node() -> None:
    from kikimimi.engine.errors import GraphError
    from kikimimi.engine.messages import Message

    runner = Runner(chain(count=5))
    seen: list[Message] = []
    runner.tap("gain.audio", seen.append)
    with pytest.raises(GraphError, match="no output port 'video'; its outputs: audio"):
        runner.tap("gain.video", seen.append)
    with pytest.raises(GraphError, match="no node 'gian'"):
        runner.tap("gian.audio", seen.append)
    runner.run()
    chunks = [m for m in seen if isinstance(m, AudioChunk)]
    assert [m.header.sample_index for m in chunks] == [i * 160 for i in range(5)]
    assert all(m.header.source == "gain" for m in chunks)
    assert any(isinstance(m, Control) and m.kind is ControlKind.END_OF_STREAM for m in seen)
    assert [m.header.seq for m in data("sink") if m.header.source == "gain"] == [m.header.seq for m in chunks]
