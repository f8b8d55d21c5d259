"""Registry of node kinds by name.

Kinds come from three places, later ones overriding earlier ones: the built-in nodes of this
distribution, the ``kikimimi.nodes`` entry-point group of any installed distribution
(``name = "package.module:Class"``), and :func:`register` at run time, including by the modules
named in the ``KIKIMIMI_NODE_MODULES`` environment variable (comma-separated; imported on first
look-up, in every process of a graph, so unpackaged node kinds work over ZeroMQ too). Classes are imported only when
a kind is used, so listing kinds never imports heavy optional dependencies.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from kikimimi.engine.errors import GraphError, UnknownNodeKind
from kikimimi.engine.node import Node

ENTRY_POINT_GROUP = "kikimimi.nodes"

BUILTIN: dict[str, str] = {
    "file_source": "kikimimi.nodes.file_source:FileSource",
    "mic_source": "kikimimi.nodes.mic_source:MicSource",
    "webrtc_vad": "kikimimi.nodes.webrtc_vad:WebrtcVad",
    "vad": "kikimimi.nodes.vad:TwoStageVad",
    "features": "kikimimi.nodes.features:FeatureNode",
    "console_sink": "kikimimi.nodes.console_sink:ConsoleSink",
    "jsonl_sink": "kikimimi.nodes.jsonl_sink:JsonlSink",
    "asr": "kikimimi.nodes.asr:AsrNode",
    "fusion": "kikimimi.nodes.fusion:FusionNode",
    "speaker": "kikimimi.nodes.speaker:SpeakerNode",
    "vision": "kikimimi.nodes.vision:VisionNode",
    "camera_source": "kikimimi.nodes.camera_source:CameraSource",
    "active_speaker": "kikimimi.nodes.active_speaker:ActiveSpeakerNode",
    "avsr": "kikimimi.nodes.avsr:AvsrNode",
}

_registered: dict[str, type[Node]] = {}
_loaded: dict[str, type[Node]] = {}
_env_imported: set[str] = set()


def _import_env_modules() -> None:
    for mod in filter(None, (m.strip() for m in os.environ.get("KIKIMIMI_NODE_MODULES", "").split(","))):
        if mod not in _env_imported:
            _env_imported.add(mod)
            importlib.import_module(mod)


def register(cls: type[Node], name: str | None = None) -> type[Node]:
    """Register a node class under ``name`` (default: ``cls.kind``). Usable as a decorator."""
    kind = name or cls.kind
    if not kind:
        raise GraphError("", f"node class {cls.__qualname__} has no kind name")
    _registered[kind] = cls
    return cls


def available_kinds() -> dict[str, str]:
    """Every known kind name and where it comes from ("module:Class" or "registered")."""
    _import_env_modules()
    kinds = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        kinds[ep.name] = ep.value
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
