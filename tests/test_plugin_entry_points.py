"""Node kinds from another distribution: a separate package declaring ``[project.entry-points."kikimimi.nodes"]``
in its pyproject.toml, installed with pip (``--target`` a folder put on PYTHONPATH), is listed by `kikimimi
nodes` and runs in a graph file given to `kikimimi run`, both in a fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kikimimi.engine.registry import ENTRY_POINT_GROUP, available_kinds

KIND = "plugin_sample_counter"

PYPROJECT = f"""\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "kikimimi-test-plugin"
version = "0.1"

[project.entry-points."{ENTRY_POINT_GROUP}"]
{KIND} = "kikimimi_test_plugin.counter:SampleCounter"

[tool.setuptools]
packages = ["kikimimi_test_plugin"]
"""

MODULE = f'''\
"""A sink counting the audio it gets, written against the engine's Node API only."""

import json

from kikimimi.engine.messages import Control, ControlKind, Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.node import Node, PortSpec
from kikimimi.engine.params import REQUIRED, Param
from kikimimi.engine.queues import QueueConfig


class SampleCounter(Node):
    kind = "{KIND}"
    help = "Counts audio chunks and samples; writes them as JSON at the end."
    inputs = (PortSpec("audio", (AudioChunk,), queue=QueueConfig.make("block", 64)),)
    params = (Param("path", str, REQUIRED, "where the counts go"),)

    def on_start(self):
        self.counts = {{"chunks": 0, "samples": 0, "rates": [], "end_of_stream": False}}

    def on_message(self, port: str, msg: Message) -> None:
        if isinstance(msg, AudioChunk):
            self.counts["chunks"] += 1
            self.counts["samples"] += msg.samples.shape[0]
            self.counts["rates"] = sorted(set(self.counts["rates"]) | {{msg.sample_rate}})

    def on_control(self, port: str, ctrl: Control) -> None:
        if ctrl.kind is ControlKind.END_OF_STREAM:
            self.counts["end_of_stream"] = True

    def on_stop(self) -> None:
        with open(self.p.path, "w") as f:
            json.dump(self.counts, f)
'''


def kikimimi(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    with subprocess.Popen([sys.executable, "-m", "kikimimi.launch.cli", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_node_kind_of_an_installed_distribution_is_listed_and_runs_in_a_graph(tmp_path: Path) -> None:
    src = tmp_path / "plugin"
    (src / "kikimimi_test_plugin").mkdir(parents=True)
    (src / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    (src / "kikimimi_test_plugin" / "__init__.py").write_text("", encoding="utf-8")
    (src / "kikimimi_test_plugin" / "counter.py").write_text(MODULE, encoding="utf-8")
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                          "--no-cache-dir", "--disable-pip-version-check", "--target", str(site), str(src)],
                         capture_output=True, text=True, timeout=120)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert KIND not in available_kinds()                 # this process cannot see it: only the installed copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(site), os.environ.get("PYTHONPATH"))))}

    listed = kikimimi(env, "nodes")
    assert listed.returncode == 0, listed.stderr
    block = listed.stdout.split(f"\n{KIND}: ", 1)[1].split("\n\n", 1)[0]
    assert block.splitlines()[0] == "Counts audio chunks and samples; writes them as JSON at the end."
    assert "  input  audio <- AudioChunk (default queue: block, capacity 64)" in block
    assert "  param  path" in block
    assert "file_source: " in listed.stdout              # the built-in kinds are still there

    audio = tmp_path / "tone.wav"
    sf.write(audio, (0.1 * np.sin(np.arange(12345) * 0.05)).astype(np.float32), 16000)
    counts = tmp_path / "counts.json"
    graph = tmp_path / "graph.yaml"
    graph.write_text(textwrap.dedent(f"""\
        version: 1
        name: plugin_graph
        nodes:
          source:
            kind: file_source
            params: {{path: {json.dumps(str(audio))}, speed: 0, sample_rate: 16000, chunk_ms: 20}}
          count:
            kind: {KIND}
            params: {{path: {json.dumps(str(counts))}}}
            inputs:
              audio: {{from: source.audio}}
        """), encoding="utf-8")
    ran = kikimimi(env, "run", str(graph))
    assert ran.returncode == 0, ran.stderr
    assert json.loads(counts.read_text(encoding="utf-8")) == {"chunks": 39, "samples": 12345, "rates": [16000],
                                                              "end_of_stream": True}    # 38 x 320 + 185
