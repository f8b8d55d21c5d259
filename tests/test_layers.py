"""The layering, as the import-graph tool grimp sees it: launch and nodes on top, models, engine at the bottom;
the engine core never depends on a message family; registration of message types is explicit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
sys.path.insert(0, str(DOCS))

import layers  # noqa: E402


def test_no_import_runs_upwards() -> None:
    graph = layers.build_graph()
    assert layers.upward_imports(graph) == []
    count = layers.edges(graph)
    assert count[("nodes", "models")] > 0 and count[("models", "engine")] > 0   # the layers are really used


def test_the_engine_core_depends_on_no_message_family() -> None:
    graph = layers.build_graph()
    assert layers.core_on_families(graph) == []
    assert "kikimimi.engine.msgs.audio" in graph.modules      # the check looks at the real tree


def test_the_layer_report_passes() -> None:
    out = subprocess.run([sys.executable, str(DOCS / "layers.py")], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout
    assert out.stdout.strip().endswith("layers: OK")
