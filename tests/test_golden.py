"""Golden outputs: the real pipelines give, message for message and log line for log line, what they gave
before the architecture step (recorded by tests/golden.py from the code as it was; see its docstring).

Here a selection runs (one default-graph case in-process, the audio-visual case in-process, one case
over ZeroMQ); ``python tests/golden.py check`` runs every case over both transports."""

from __future__ import annotations

from pathlib import Path

import golden
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.data, pytest.mark.golden]

SELECTED = [("librispeech", "inproc"), ("grid", "inproc"), ("jfk", "zmq")]


@pytest.mark.parametrize(("case", "transport"), SELECTED)
def test_identical_to_the_golden_run(case: str, transport: str, data_dir: Path) -> None:
    c = next(x for x in golden.CASES if x.name == case)
    assert golden.golden_path(c, transport).exists(), "record the golden files first: python tests/golden.py record"
    diffs = golden.check(c, transport)
    assert not diffs, "\n".join(diffs)


def test_the_comparison_catches_a_changed_message() -> None:
    c = golden.CASES[0]
    g = golden.load_golden(c, "inproc")
    changed = {**g, "messages": {**g["messages"]}}
    key = next(k for k in changed["messages"] if k.startswith("vad.events"))
    changed["messages"][key] = [*changed["messages"][key][:-1], changed["messages"][key][-1].replace("1", "2", 1)]
    diffs = golden.compare(g, changed)
    assert len(diffs) == 1 and diffs[0].startswith(f"messages {key}:")
    assert golden.compare(g, g) == []
