"""The asr node's backend parameters: declared by each backend, given as BACKEND.NAME (flat or nested) or,
for the backend in use, plain; checked only for the backend in use; errors name what is allowed."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml

from kikimimi.engine.errors import GraphError, ParamError
from kikimimi.engine.graph import GraphSpec, load_graph
from kikimimi.launch.cli import apply_settings, main, resolve_graph
from kikimimi.models import weights
from kikimimi.models.asr.backends import backend_names, load_backend, make_config
from kikimimi.models.asr.whisper_ct2 import WhisperConfig
from kikimimi.nodes.asr import AsrNode


def graph_with_asr(params: dict[str, Any]) -> GraphSpec:
    """The default graph, its asr node given ``params``, loaded from YAML text (as a graph file is)."""
    d = resolve_graph("default").to_dict()
    d["nodes"]["asr"]["params"] = params
    return load_graph(yaml.safe_dump(d, sort_keys=False))


def test_every_backend_declares_parameters_matching_its_config() -> None:
    assert {"whisper", "sphinx"} <= set(backend_names())
    for name in backend_names():
        cls = load_backend(name)
        fields = {f.name: f.default for f in dataclasses.fields(cls.config_type)}
        assert set(fields) == {"model"} | {p.name for p in cls.params}, name
        for p in cls.params:
            assert fields[p.name] == p.default, (name, p.name)
        assert dataclasses.is_dataclass(cls.config_type) and cls.config_type.__dataclass_params__.frozen  # type: ignore[attr-defined]


@pytest.mark.parametrize("params", [
    {"whisper.beam_size": 5, "whisper.threads": 2},                # flat
    {"whisper": {"beam_size": 5, "threads": 2}},                   # nested
    {"beam_size": 5, "whisper": {"threads": 2}},                   # plain (old graphs) and nested
    {"backend": "whisper", "beam_size": 5, "threads": 2},          # plain, as graphs and tests give them today
])
def test_graph_files_give_backend_parameters_flat_nested_or_plain(params: dict[str, Any]) -> None:
    spec = graph_with_asr({"model": "tiny.en", **params})
    got = spec.node("asr").params
    assert got["whisper.beam_size"] == 5 and got["whisper.threads"] == 2
    assert "beam_size" not in got and "whisper" not in got
    assert got["min_interval_ms"] == 300                           # node parameters keep their defaults
    assert load_graph(spec.to_dict()) == spec                      # the normalized form loads to the same spec


def test_cli_set_takes_dotted_backend_parameters_typed_by_their_declaration() -> None:
    spec = apply_settings(resolve_graph("default"), ["asr.whisper.beam_size=5", "asr.whisper.compute_type=1.0",
                                                     "asr.whisper.trim_after_s=12"])
    got = spec.node("asr").params
    assert got["whisper.beam_size"] == 5
    assert got["whisper.compute_type"] == "1.0"                    # a text parameter keeps the text
    assert got["whisper.trim_after_s"] == 12.0 and isinstance(got["whisper.trim_after_s"], float)
    spec = apply_settings(resolve_graph("default"), ["asr.backend=sphinx", "asr.sphinx.min_coverage=0.5",
                                                     "asr.sphinx.grammar=grid"])
    assert spec.node("asr").params["sphinx.min_coverage"] == 0.5 and spec.node("asr").params["sphinx.grammar"] == "grid"


def test_wrong_backend_parameters_name_the_value_and_what_is_allowed() -> None:
    with pytest.raises(GraphError, match=r"unknown parameter 'whisper\.beam_sise'; parameters: backend, .*; "
                                         r"backend whisper's parameters: whisper\.agreement, whisper\.beam_size, "):
        graph_with_asr({"whisper.beam_sise": 5})
    with pytest.raises(GraphError, match=r"nodes\.asr\.params: node 'asr' \(asr\): whisper\.beam_size=0 is below "
                                         r"the minimum 1"):
        apply_settings(resolve_graph("default"), ["asr.whisper.beam_size=0"])
    with pytest.raises(GraphError, match=r"whisper\.device='gpu' is not allowed; allowed: 'auto', 'cpu', 'cuda'"):
        graph_with_asr({"whisper": {"device": "gpu"}})
    with pytest.raises(GraphError, match=r"whisper\.threads='2' has type str; expected int"):
        graph_with_asr({"threads": "2"})
    with pytest.raises(GraphError, match=r"unknown parameter 'sphinx\.beam_size'; .*backend sphinx's parameters: "
                                         r"sphinx\.grammar, sphinx\.min_coverage, sphinx\.pad_s, sphinx\.preroll_s, "
                                         r"sphinx\.speech_db$"):
        apply_settings(resolve_graph("default"), ["asr.backend=sphinx", "asr.sphinx.beam_size=5"])
    with pytest.raises(GraphError, match=r"backend='nope' is not allowed; allowed: sphinx, whisper"):
        graph_with_asr({"backend": "nope"})
    with pytest.raises(GraphError, match=r"parameter 'whisper\.beam_size' is given twice"):
        graph_with_asr({"beam_size": 2, "whisper.beam_size": 3})
    with pytest.raises(ParamError, match=r"node 'asr' \(asr\): whisper: trim_after_s=12\.0 is above force_after_s="
                                         r"11\.0; allowed: trim_after_s <= force_after_s"):
        AsrNode("asr", {"model": "tiny.en", "whisper.trim_after_s": 12.0, "whisper.force_after_s": 11.0})


def test_a_parameter_of_another_backend_is_rejected() -> None:
    with pytest.raises(GraphError, match=r"sphinx\.grammar='grid' is a parameter of backend 'sphinx', but backend is "
                                         r"'whisper'; backend whisper's parameters: whisper\.agreement, "):
        graph_with_asr({"sphinx.grammar": "grid"})
    with pytest.raises(GraphError, match=r"whisper\.beam_size=5 is a parameter of backend 'whisper', but backend is "
                                         r"'sphinx'; backend sphinx's parameters: sphinx\.grammar, "):
        graph_with_asr({"backend": "sphinx", "whisper": {"beam_size": 5}})
    # given plain, a Whisper knob is not taken for sphinx (it used to be checked and ignored)
    with pytest.raises(ParamError, match=r"unknown parameter 'beam_size' \(a parameter of backend whisper\); "
                                         r"parameters: .*; backend sphinx's parameters: sphinx\.grammar, "):
        AsrNode("asr", {"backend": "sphinx", "beam_size": 5})


def test_the_node_builds_the_backend_config_from_its_parameters() -> None:
    node = AsrNode("asr", {"model": "tiny.en", "whisper": {"beam_size": 3}, "pad_ms": 2000, "warmup": False})
    assert node.recognizer.config == WhisperConfig("tiny.en", beam_size=3, pad_ms=2000)   # type: ignore[attr-defined]
    assert node.recognizer.beam_size == 3 and node.recognizer.pad_frames == 200           # type: ignore[attr-defined]
    assert make_config("whisper", "tiny.en", {}) == WhisperConfig("tiny.en")


def test_whisper_weights_load_once_per_process() -> None:
    a = AsrNode("a", {"model": "tiny.en", "threads": 1, "warmup": False})
    b = AsrNode("b", {"model": "tiny.en", "whisper.threads": 1, "whisper.beam_size": 2, "warmup": False})
    ra, rb = a.recognizer, b.recognizer
    assert ra is not rb and ra.model is rb.model and ra._hf is rb._hf   # type: ignore[attr-defined]
    keys = [k for k in weights.loads() if k[0] == "whisper-ct2" and k[4] == 1]
    assert len(keys) == 1 and weights.loads()[keys[0]] == 1
    c = AsrNode("c", {"model": "tiny.en", "threads": 2, "warmup": False})
    assert c.recognizer.model is not ra.model                          # type: ignore[attr-defined]


def test_kikimimi_nodes_lists_each_backends_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nodes"]) == 0
    out = capsys.readouterr().out
    asr = out[out.index("\nasr: "):]
    asr = asr[:asr.index("\n\n")]
    assert "  backend whisper: parameters given as whisper.NAME" in asr
    assert "    param  whisper.beam_size (int, default 1; 1 <= value <= 16): beam size" in asr
    assert "  backend sphinx: parameters given as sphinx.NAME" in asr
    assert "    param  sphinx.grammar (str, default '')" in asr
    assert "  param  beam_size" not in asr
