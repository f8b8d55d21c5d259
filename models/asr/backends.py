"""ASR backends by name: the ``kikimimi.asr_backends`` entry-point group.

Each entry point names a :class:`~kikimimi.models.asr.recognizer.Recognizer` subclass, e.g. ``whisper =
"kikimimi.models.asr.whisper_ct2:WhisperCT2"`` in this distribution's ``pyproject.toml``; any installed
distribution adds its own the same way. The class declares its parameters (``params``) and its typed
config (``config_type``, a frozen dataclass of ``model`` plus those parameters), and is built from that
config: :func:`make_recognizer`. Classes are imported only when a backend is used or its parameters
are asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from kikimimi.engine.errors import ParamError
from kikimimi.engine.params import Param
from kikimimi.models.asr.recognizer import Recognizer

ENTRY_POINT_GROUP = "kikimimi.asr_backends"

_loaded: dict[str, type[Recognizer]] = {}


def backend_targets() -> dict[str, str]:
    """Every installed backend: name -> "module:Class"."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    """The names of the installed backends, sorted."""
    return sorted(backend_targets())


def load_backend(name: str) -> type[Recognizer]:
    """The recognizer class of backend ``name``; ParamError lists the installed ones."""
    cls = _loaded.get(name)
    if cls is not None:
        return cls
    targets = backend_targets()
    target = targets.get(name)
    if target is None:
        allowed = ", ".join(sorted(targets)) or (f"none (no {ENTRY_POINT_GROUP} entry points are installed; "
                                                 "reinstall kikimimi: pip install -e .)")
        raise ParamError(f"backend={name!r} is not allowed; allowed: {allowed}")
    module, _, attr = target.partition(":")
    found = getattr(importlib.import_module(module), attr, None)
    if not (isinstance(found, type) and issubclass(found, Recognizer)):
        raise ParamError(f"backend {name!r} points at {target!r}, which is not a Recognizer class")
    _loaded[name] = found
    return found


def backend_params(name: str) -> tuple[Param, ...]:
    """The parameters backend ``name`` declares."""
    return load_backend(name).params


def make_config(name: str, model: str, values: Mapping[str, Any]) -> Any:
    """Backend ``name``'s config: ``model`` and ``values`` (its parameters by name; the rest at their
    defaults). The config checks itself (ParamError names the bad value and what is allowed)."""
    return load_backend(name).config_type(model=model, **values)


def make_recognizer(name: str, model: str, values: Mapping[str, Any]) -> Recognizer:
    """Backend ``name``'s recognizer, built from :func:`make_config`."""
    return load_backend(name)(make_config(name, model, values))
