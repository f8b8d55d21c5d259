"""One node registry: the kikimimi.nodes entry points are the source; the built-in table is derived from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from kikimimi.engine.errors import UnknownNodeKind
from kikimimi.engine.node import Node
from kikimimi.engine.registry import ENTRY_POINT_GROUP, available_kinds, builtin_kinds, load_kind, register

ROOT = Path(__file__).resolve().parents[1]


def test_builtin_kinds_are_the_entry_points_declared_in_pyproject() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert builtin_kinds() == declared          # installed metadata matches the file (reinstall if not)
    assert set(declared) <= set(available_kinds())


def test_every_node_module_has_one_kind_and_its_class_names_it() -> None:
    modules = sorted(p.stem for p in (ROOT / "nodes").glob("*.py") if not p.stem.startswith("_"))
    kinds = builtin_kinds()
    assert sorted(t.split(":")[0].rsplit(".", 1)[1] for t in kinds.values()) == modules
    for name in kinds:
        cls = load_kind(name)
        assert issubclass(cls, Node) and cls.kind == name


def test_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNodeKind, match=r"unknown node kind 'nope'; known kinds: .*file_source"):
        load_kind("nope")


def test_register_adds_to_the_same_table() -> None:
    class Custom(Node):
        kind = "custom_test_kind"

    register(Custom)
    assert load_kind("custom_test_kind") is Custom
    assert available_kinds()["custom_test_kind"].endswith(":test_register_adds_to_the_same_table.<locals>.Custom")
