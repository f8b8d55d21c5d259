"""The one registry of node kinds, by name.

The source of every kind is the node entry-point group, :data:`ENTRY_POINT_GROUP` (``name = "package.module:Class"``;
the group's name is a string that distributions declare, not an import of the nodes package):
this distribution's built-in kinds are declared there in ``pyproject.toml``, and any installed
distribution adds its own the same way. :func:`builtin_kinds` is derived from that table (the entry
points that kikimimi itself declares), never repeated in code.

Two additions to the same table, for code that is not an installed distribution: :func:`register` (a
class defined in a script or a test; it overrides an entry point of the same name), and the modules named
in ``KIKIMIMI_NODE_MODULES`` (comma-separated), imported on first look-up in every process of a graph
so that the kinds they ``register`` work over ZeroMQ too. Classes are imported only when a kind is used,
so listing kinds never imports heavy optional dependencies.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import PackageNotFoundError, distribution, entry_points

from kikimimi.engine.errors import GraphError, UnknownNodeKind
from kikimimi.engine.node import Node

DISTRIBUTION = "kikimimi"
ENTRY_POINT_GROUP = f"{DISTRIBUTION}.nodes"

_registered: dict[str, type[Node]] = {}
_loaded: dict[str, type[Node]] = {}
_env_imported: set[str] = set()


def _import_env_modules() -> None:
    for mod in filter(None, (m.strip() for m in os.environ.get("KIKIMIMI_NODE_MODULES", "").split(","))):
        if mod not in _env_imported:
            _env_imported.add(mod)
            importlib.import_module(mod)


def builtin_kinds() -> dict[str, str]:
    """The kinds this distribution declares (its node entry points): name -> "module:Class"."""
    try:
        eps = distribution(DISTRIBUTION).entry_points
    except PackageNotFoundError:
        raise UnknownNodeKind("", "kikimimi is not installed, so its node kinds are unknown; install it with: "
                              "pip install -e .") from None
    return {ep.name: ep.value for ep in eps if ep.group == ENTRY_POINT_GROUP}


def register(cls: type[Node], name: str | None = None) -> type[Node]:
    """Register a node class under ``name`` (default: ``cls.kind``). Usable as a decorator."""
    kind = name or cls.kind
    if not kind:
        raise GraphError("", f"node class {cls.__qualname__} has no kind name")
    _registered[kind] = cls
    _loaded.pop(kind, None)
    return cls


def available_kinds() -> dict[str, str]:
    """Every known kind name and where it comes from ("module:Class")."""
    _import_env_modules()
    kinds = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for name, cls in _registered.items():
        kinds[name] = f"{cls.__module__}:{cls.__qualname__}"
    return kinds


def load_kind(name: str) -> type[Node]:
    """The node class of kind ``name``; UnknownNodeKind lists the known kinds."""
    _import_env_modules()
    if name in _registered:
        return _registered[name]
    if name in _loaded:
        return _loaded[name]
    kinds = available_kinds()
    target = kinds.get(name)
    if target is None:
        raise UnknownNodeKind("", f"unknown node kind {name!r}; known kinds: {', '.join(sorted(kinds))}")
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        raise UnknownNodeKind("", f"node kind {name!r} points at {target!r}, which is not a Node class")
    _loaded[name] = cls
    return cls
