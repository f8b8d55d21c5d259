"""Graph files and the builder: validation errors name the place and what is allowed; both give one spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import toy_nodes

from kikimimi.engine.errors import GraphError, UnknownNodeKind
from kikimimi.engine.graph import GraphBuilder, load_graph
from kikimimi.engine.queues import Policy
from kikimimi.launch.cli import apply_overrides, resolve_graph

DEFAULT = Path(__file__).resolve().parents[1] / "launch" / "default.yaml"


def toy(**over: Any) -> dict[str, Any]:
    g: dict[str, Any] = {
        "version": 1, "name": "t",
        "nodes": {
            "src": {"kind": "toy_ramp", "params": {"count": 3}},
            "gain": {"kind": "toy_gain", "inputs": {"audio": "src.audio"}},
            "sink": {"kind": "toy_collect", "inputs": {"in": ["gain.audio"]}},
        },
    }
    g.update(over)
    return g


def error_of(graph: dict[str, Any]) -> GraphError:
    with pytest.raises(GraphError) as info:
        load_graph(graph)
    return info.value


def test_unknown_node_kind_lists_known_kinds() -> None:
    g = toy()
    g["nodes"]["gain"]["kind"] = "toy_gian"
    err = error_of(g)
    assert isinstance(err, UnknownNodeKind)
    assert err.where == "nodes.gain.kind"
    assert "'toy_gian'" in str(err) and "toy_gain" in str(err) and "webrtc_vad" in str(err)


def test_unknown_input_port_lists_the_node_inputs() -> None:
    g = toy()
    g["nodes"]["gain"]["inputs"] = {"audoi": "src.audio"}
    err = error_of(g)
    assert err.where == "nodes.gain.inputs.audoi"
    assert "has no input port 'audoi'; its inputs: audio" in str(err)


def test_unknown_output_port_lists_the_node_outputs() -> None:
    g = toy()
    g["nodes"]["sink"]["inputs"] = {"in": "gain.video"}
    err = error_of(g)
    assert err.where == "nodes.sink.inputs.in.from"
    assert "has no output port 'video'; its outputs: audio" in str(err)


def test_bad_param_value_names_the_allowed_values() -> None:
    g = toy()
    g["nodes"]["vad"] = {"kind": "webrtc_vad", "params": {"mode": 5}, "inputs": {"audio": "src.audio"}}
    err = error_of(g)
    assert err.where == "nodes.vad.params"
    assert "mode=5 is not allowed; allowed: 0, 1, 2, 3" in str(err)


def test_bad_param_type_and_unknown_param() -> None:
    g = toy()
    g["nodes"]["src"]["params"] = {"count": "three"}
    assert "count='three' has type str; expected int" in str(error_of(g))
    g["nodes"]["src"]["params"] = {"cuont": 3}
    assert "unknown parameter 'cuont'; parameters: count, forever, size, stream_id" in str(error_of(g))


def test_port_type_mismatch_is_rejected() -> None:
    g = toy()
    g["nodes"]["vad"] = {"kind": "webrtc_vad", "inputs": {"audio": "src.audio"}}
    g["nodes"]["gain"]["inputs"] = {"audio": "vad.events"}
    err = error_of(g)
    assert "vad.events carries VadEvent but gain.audio accepts AudioChunk" in str(err)


def test_bad_queue_policy_lists_policies() -> None:
    g = toy()
    g["nodes"]["gain"]["inputs"] = {"audio": {"from": "src.audio", "policy": "newest"}}
    err = error_of(g)
    assert err.where == "nodes.gain.inputs.audio"
    assert "'newest' is not allowed; allowed: latest, drop_oldest, block" in str(err)
    g["nodes"]["gain"]["inputs"] = {"audio": {"from": "src.audio", "policy": "latest", "capacity": 4}}
    assert "capacity must be 1" in str(error_of(g))


def test_structure_errors() -> None:
    assert "unknown key 'nodez'" in str(error_of({"version": 1, "nodez": {}}))
    assert "version 2 is not supported" in str(error_of(toy(version=2)))
    assert "'udp' is not allowed; allowed: inproc, zmq" in str(error_of(toy(transport="udp")))
    g = toy()
    del g["nodes"]["gain"]["kind"]
    assert error_of(g).where == "nodes.gain"
    g = toy()
    g["nodes"]["gain"]["inputs"] = {}
    assert "no input is connected" in str(error_of(g))
    g = toy(input="gain")
    assert "not a source" in str(error_of(g))
    g = toy()
    g["nodes"]["Bad-Name"] = g["nodes"].pop("sink")
    assert "node names are" in str(error_of(g))


def test_cycles_are_rejected() -> None:
    g = toy()
    g["nodes"]["gain2"] = {"kind": "toy_gain", "inputs": {"audio": "gain.audio"}}
    g["nodes"]["gain"]["inputs"] = {"audio": ["src.audio", "gain2.audio"]}
    err = error_of(g)
    assert "cycles" in str(err) and "gain" in str(err)


def test_yaml_syntax_error_is_a_graph_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [unclosed\n")
    with pytest.raises(GraphError, match="not valid YAML"):
        load_graph(bad)


def test_builder_produces_the_same_spec_as_the_default_file() -> None:
    g = GraphBuilder("default", transport="inproc", input_node="source",
                     description="microphone or file -> two-stage VAD + features -> speech recognition + "
                                 "speaker labels -> fusion -> console")
    g.node("source", "mic_source", sample_rate=16000, chunk_ms=20)
    g.node("vad", "vad", webrtc_mode=3, min_silence_ms=300).connect(
        "audio", "source.audio", policy="block", capacity=256, max_age_ms=5000)
    g.node("features", "features").connect("audio", "source.audio", policy="block", capacity=256, max_age_ms=5000)
    (g.node("asr", "asr", model="base", language="auto")
     .connect("features", "features.features", policy="block", capacity=512)
     .connect("vad", "vad.events", policy="block", capacity=256)
     .connect("audio", "source.audio", policy="block", capacity=512))
    (g.node("speaker", "speaker")
     .connect("audio", "source.audio", policy="block", capacity=512)
     .connect("vad", "vad.events", policy="block", capacity=256))
    (g.node("fusion", "fusion")
     .connect("transcripts", "asr.transcripts", policy="block", capacity=256)
     .connect("speakers", "speaker.turns", policy="block", capacity=256))
    g.node("console", "console_sink", vad_events="start").connect(
        "in", "fusion.transcripts", "vad.events", policy="block", capacity=256)
    assert g.build() == load_graph(DEFAULT)


def test_spec_round_trips_through_yaml_and_keeps_order() -> None:
    spec = load_graph(toy())
    assert [n.name for n in spec.nodes] == ["src", "gain", "sink"]
    assert load_graph(spec.to_yaml()) == spec
    assert spec.routes("src") == {"audio": [("gain", "audio")]}
    gain = spec.node("gain")
    assert gain.inputs[0].queue.policy is Policy.BLOCK and gain.inputs[0].queue.capacity == 16


def test_lossless_makes_every_input_block_without_max_age() -> None:
    spec = load_graph(DEFAULT).lossless()
    for n in spec.nodes:
        for i in n.inputs:
            assert i.queue.policy is Policy.BLOCK and i.queue.max_age_ns is None


def test_cli_overrides_swap_input_and_add_output(tmp_path: Path, data_dir: Path) -> None:
    clip = data_dir / "en/librispeech/1688/1688-142285-0004.flac"
    spec = apply_overrides(resolve_graph("default"), str(clip), str(tmp_path / "o.jsonl"), 0.0, "zmq")
    src = spec.node("source")
    assert src.kind == "file_source" and src.params["path"] == str(clip) and src.params["speed"] == 0.0
    assert src.params["stream_id"] == "file"
    out = spec.node("output")
    assert out.kind == "jsonl_sink" and out.inputs[0].sources == (("fusion", "transcripts"), ("vad", "events"))
    assert spec.transport == "zmq"
    assert all(i.queue.policy is Policy.BLOCK for n in spec.nodes for i in n.inputs)


def test_cli_set_overrides_node_params_and_input_keeps_the_video(data_dir: Path) -> None:
    from kikimimi.engine.errors import KikimimiError
    from kikimimi.launch.cli import apply_settings

    video = data_dir / "av" / "grid" / "lbax4n.mpg"
    spec = apply_overrides(resolve_graph("av"), str(video), None, None, None)
    assert spec.node("source").params["video"] is True and spec.node("source").params["path"] == str(video)
    spec = apply_settings(spec, ["asr.backend=sphinx", "asr.model=grid", "vision.detect_every=3",
                                 "fusion.require_face=false"])
    assert spec.node("asr").params["backend"] == "sphinx" and spec.node("asr").params["model"] == "grid"
    assert spec.node("vision").params["detect_every"] == 3 and spec.node("fusion").params["require_face"] is False
    live = apply_settings(resolve_graph("av_live"), ["camera.device=0", "asr.model=1.0"])
    assert live.node("camera").params["device"] == "0" and live.node("asr").params["model"] == "1.0"
    with pytest.raises(KikimimiError, match=r"NODE\.PARAM=VALUE"):
        apply_settings(spec, ["asr.model"])
    with pytest.raises(KikimimiError, match="no node 'nope'"):
        apply_settings(spec, ["nope.x=1"])
    with pytest.raises(GraphError, match="unknown parameter 'grammar'"):
        apply_settings(spec, ["asr.grammar=grid"])


def test_a_lossless_graph_stays_lossless_through_its_dict() -> None:
    """lossless() removes every max age, also one that an input port has by default (vision's video: 500 ms);
    the dict form (what --set and the ZeroMQ workers rebuild the graph from) must keep that."""
    from kikimimi.engine.graph import load_graph
    from kikimimi.engine.msgs.vision import VideoFrame
    from kikimimi.engine.node import PortSpec
    from kikimimi.engine.queues import QueueConfig

    class AgedSink(toy_nodes.Collect):  # type: ignore[misc, name-defined]
        kind = "toy_aged_sink"
        inputs = (PortSpec("in", (VideoFrame, toy_nodes.AudioChunk),
                           queue=QueueConfig.make("drop_oldest", 8, max_age_ms=500)),)

    from kikimimi.engine.registry import register

    register(AgedSink)
    spec = load_graph({"name": "g", "nodes": {"src": {"kind": "toy_ramp"},
                                              "sink": {"kind": "toy_aged_sink", "inputs": {"in": "src.audio"}}}})
    assert spec.node("sink").inputs[0].queue.max_age_ns == 500_000_000
    lossless = spec.lossless()
    again = load_graph(lossless.to_dict())
    assert again.node("sink").inputs[0].queue.max_age_ns is None
    assert again == lossless
