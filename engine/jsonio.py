"""Messages to and from plain JSON values (for JSON-lines output, the CLI and test fixtures).

:func:`message_to_json` gives ``{"type": ..., "header": {...}, <field>: <value>, ...}``: enums as their
value, numpy arrays as ``{"dtype", "shape"}`` (plus ``"data"`` as nested lists when asked), numpy
scalars as Python numbers, non-finite floats as None. :func:`message_from_json` rebuilds the message
from that (arrays only when their data was included; a missing ``t_ns`` becomes 0; a list of objects in a
``tuple[SomeDataclass, ...]`` field, like ``Transcript.words``, becomes a tuple of that dataclass).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import typing
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.engine.errors import MessageError, ParamError
from kikimimi.engine.messages import Header, Message, registered_types
from kikimimi.engine.msgs import builtin_types


def to_jsonable(value: Any, include_arrays: bool = False) -> Any:
    """A JSON-serialisable form of one field value."""
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, include_arrays)
    if isinstance(value, np.ndarray):
        out: dict[str, Any] = {"dtype": str(value.dtype), "shape": list(value.shape)}
        if include_arrays:
            out["data"] = value.tolist()
        return out
    if isinstance(value, np.generic):
        return to_jsonable(value.item(), include_arrays)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, include_arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, include_arrays) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name), include_arrays)
                for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return {"bytes": len(value)}
    return repr(value)


def header_to_json(header: Header, include_timing: bool = True) -> dict[str, Any]:
    """The header as a dict; without ``t_ns`` when ``include_timing`` is False (deterministic output)."""
    out: dict[str, Any] = {
        "stream_id": header.stream_id,
        "seq": int(header.seq),
        "sample_index": int(header.sample_index),
    }
    if include_timing:
        out["t_ns"] = int(header.t_ns)
    out["source"] = header.source
    return out


def message_to_json(msg: Message, include_arrays: bool = False,
                    include_timing: bool = True) -> dict[str, Any]:
    """One message as a JSON-ready dict: ``{"type", "header", <fields>...}``."""
    out: dict[str, Any] = {"type": msg.type_name, "header": header_to_json(msg.header, include_timing)}
    for f in dataclasses.fields(msg):
        if f.name != "header":
            out[f.name] = to_jsonable(getattr(msg, f.name), include_arrays)
    return out


def _from_jsonable(value: Any, hint: Any, where: str) -> Any:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in hint)
            raise MessageError(f"{where}: {value!r} is not allowed; allowed: {allowed}") from None
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis \
            and dataclasses.is_dataclass(args[0]) and isinstance(value, list):
        try:  # e.g. Transcript.words: a list of objects back to a tuple of Word
            return tuple(args[0](**v) for v in value)
        except TypeError as e:
            raise MessageError(f"{where}: cannot rebuild {args[0].__name__} items: {e}") from None
    if hint is np.ndarray:
        if not isinstance(value, dict) or "data" not in value:
            raise MessageError(f"{where}: array data was not included (write with include_arrays)")
        return np.asarray(value["data"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
    return value


def message_from_json(obj: dict[str, Any]) -> Message:
    """Rebuild a message from :func:`message_to_json` output; MessageError names what is wrong."""
    name = obj.get("type")
    known = {**{c.type_name: c for c in builtin_types()}, **registered_types()}
    cls = known.get(name) if isinstance(name, str) else None
    if cls is None:
        raise MessageError(f"unknown message type {name!r}; known: {', '.join(sorted(known))}")
    h = obj.get("header")
    if not isinstance(h, dict):
        raise MessageError(f"{name}: 'header' must be an object, got {h!r}")
    try:
        header = Header(h["stream_id"], h["seq"], h["sample_index"], h.get("t_ns", 0), h.get("source", ""))
    except KeyError as e:
        raise MessageError(f"{name}: header is missing {e.args[0]!r}") from None
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name == "header" or f.name not in obj:
            continue
        kwargs[f.name] = _from_jsonable(obj[f.name], hints.get(f.name), f"{name}.{f.name}")
    try:
        return cls(header, **kwargs)
    except TypeError as e:
        raise MessageError(f"{name}: cannot rebuild from {sorted(obj)}: {e}") from None


def read_json_object(path: Path, error: type[Exception] = ParamError) -> dict[str, Any]:
    """The JSON object in the file ``path``; ``error`` (ParamError by default) naming the file when it cannot be
    read, is not JSON, or holds something other than an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise error(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data
