"""Graph files and the builder: validation errors name the place and what is allowed; both give one spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import toy_nodes

from kikimimi.engine.errors import GraphError, KikimimiError, UnknownNodeKind
from kikimimi.engine.graph import GraphBuilder, OutputSpec, load_graph
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
                                 "speaker labels + voice affect -> fusion -> console")
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
    (g.node("affect", "affect", model="base")
     .connect("features", "features.features", policy="block", capacity=512)
     .connect("vad", "vad.events", policy="block", capacity=256))
    (g.node("fusion", "fusion")
     .connect("transcripts", "asr.transcripts", policy="block", capacity=256)
     .connect("speakers", "speaker.turns", policy="block", capacity=256)
     .connect("affect", "affect.affect", policy="block", capacity=256))
    g.node("console", "console_sink").connect(
        "in", "fusion.transcripts", "vad.events", policy="block", capacity=256)
    g.output("transcripts", "fusion.transcripts").output("events", "vad.events")
    assert g.build() == load_graph(DEFAULT)


def test_spec_round_trips_through_yaml_and_keeps_order() -> None:
    spec = load_graph(toy())
    assert [n.name for n in spec.nodes] == ["src", "gain", "sink"]
    assert load_graph(spec.to_yaml()) == spec
    assert spec.routes("src") == {"audio": [("gain", "audio")]}
    gain = spec.node("gain")
    assert gain.inputs[0].queue.policy is Policy.BLOCK and gain.inputs[0].queue.capacity == 16


# ---------------------------------------------------------------------- named outputs
def test_outputs_name_results_by_role_and_round_trip() -> None:
    spec = load_graph(toy(outputs={"audio": "gain.audio", "raw": "src.audio"}))
    assert spec.roles == ("audio", "raw")
    assert spec.output("audio") == OutputSpec("audio", "gain", "audio") and spec.output("raw").ref == "src.audio"
    assert spec.to_dict()["outputs"] == {"audio": "gain.audio", "raw": "src.audio"}
    assert load_graph(spec.to_yaml()) == spec and load_graph(spec.to_dict()) == spec
    kept = spec.with_transport("zmq").with_node("gain", "toy_gain", {"fail_on": 3}).lossless()
    assert kept.outputs == spec.outputs
    built = GraphBuilder("t")
    built.node("src", "toy_ramp", count=3)
    built.node("gain", "toy_gain").connect("audio", "src.audio")
    built.node("sink", "toy_collect").connect("in", "gain.audio")
    built.output("audio", "gain.audio").output("raw", "src.audio")
    assert built.build() == spec
    assert load_graph(toy()).outputs == () and "outputs" not in load_graph(toy()).to_dict()


def test_unknown_output_node_or_port_is_named_with_what_exists() -> None:
    err = error_of(toy(outputs={"audio": "gian.audio"}))
    assert err.where == "outputs.audio"
    assert "no node 'gian'; nodes: src, gain, sink" in str(err)
    err = error_of(toy(outputs={"audio": "gain.video"}))
    assert err.where == "outputs.audio"
    assert "node 'gain' (toy_gain) has no output port 'video'; its outputs: audio" in str(err)
    err = error_of(toy(outputs={"audio": "sink.in"}))
    assert "node 'sink' (toy_collect) has no output port 'in'; its outputs: (none)" in str(err)
    assert "not a reference of the form node.output_port" in str(error_of(toy(outputs={"audio": "gain"})))
    assert "expected a mapping of role -> node.output_port" in str(error_of(toy(outputs=["gain.audio"])))
    assert "roles are 1-32 chars" in str(error_of(toy(outputs={"Audio": "gain.audio"})))


def test_a_missing_role_lists_the_roles_or_says_how_to_name_outputs() -> None:
    spec = load_graph(toy(outputs={"audio": "gain.audio"}))
    with pytest.raises(GraphError, match=r"has no output 'transcripts'; its outputs: audio \(gain.audio\)"):
        spec.output("transcripts")
    with pytest.raises(GraphError, match=r"names no outputs.*outputs: \{transcripts: node.port\} "
                                         r"\(output ports: src.audio, gain.audio\)"):
        load_graph(toy()).output("transcripts")
    with pytest.raises(GraphError, match=r"^outputs.audio: no node 'gain'; nodes: src$"):
        spec.without_nodes({"gain", "sink"})   # an output names a removed node
    assert load_graph(toy()).without_nodes({"sink"}).sinks() == set()
    assert load_graph(toy()).sinks() == {"sink"}


def test_bundled_graphs_name_their_transcripts_and_events() -> None:
    for name in ("default", "av", "av_live"):
        spec = resolve_graph(name)
        assert {o.role: o.ref for o in spec.outputs} == {"transcripts": "fusion.transcripts", "events": "vad.events"}


def test_output_writes_every_role_and_needs_outputs(tmp_path: Path) -> None:
    spec = apply_overrides(load_graph(toy(outputs={"raw": "src.audio", "audio": "gain.audio"})), None,
                           str(tmp_path / "o.jsonl"), None, None)
    out = spec.node("output")
    assert out.kind == "jsonl_sink" and out.params["path"] == str(tmp_path / "o.jsonl")
    assert out.inputs[0].sources == (("src", "audio"), ("gain", "audio"))
    with pytest.raises(KikimimiError, match=r"--output writes the graph's outputs, and graph 't' names none; "
                                            r"add to the graph file.*output ports: src.audio, gain.audio"):
        apply_overrides(load_graph(toy()), None, str(tmp_path / "o.jsonl"), None, None)


def test_output_through_roles_runs_and_writes_what_the_roles_emit(tmp_path: Path) -> None:
    import json

    from kikimimi.engine.runner import Runner

    spec = apply_overrides(load_graph(toy(outputs={"audio": "gain.audio"})), None, str(tmp_path / "o.jsonl"),
                           None, None)
    Runner(spec).run()
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["header"]["source"] for r in rows] == ["gain"] * 3
    assert [r["header"]["sample_index"] for r in rows] == [0, 160, 320]


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
    # grammar is a parameter of the sphinx backend (sphinx.grammar), not of whisper (the av graph's backend)
    assert apply_settings(spec, ["asr.grammar=grid"]).node("asr").params["sphinx.grammar"] == "grid"
    with pytest.raises(GraphError, match="unknown parameter 'grammar' \\(a parameter of backend sphinx\\)"):
        apply_settings(resolve_graph("av"), ["asr.grammar=grid"])


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


def test_cli_run_output_writes_the_roles_or_says_which_key_to_add(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import yaml

    from kikimimi.launch.cli import main

    graph, out = tmp_path / "g.yaml", tmp_path / "o.jsonl"
    graph.write_text(yaml.safe_dump(toy(outputs={"audio": "gain.audio"})))
    assert main(["run", str(graph), "--output", str(out)]) == 0
    assert [json.loads(line)["header"]["source"] for line in out.read_text().splitlines()] == ["gain"] * 3
    graph.write_text(yaml.safe_dump(toy()))
    assert main(["run", str(graph), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "kikimimi: error: --output writes the graph's outputs, and graph 't' names none" in err
    assert "outputs: {transcripts: node.port, events: node.port}" in err
