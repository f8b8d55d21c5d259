"""Wire format v1: one msgpack header frame plus one raw frame per array. No pickle.

See ``docs/wire.md`` for the full specification. In short, a message is a multipart sequence:

    frame 0:  b"KM" | version u8 (=1) | flags u8 (=0) | msgpack [type, header, fields, arrays]
    frame k:  raw little-endian C-order bytes of array k-1, as described in ``arrays``

``decode`` validates everything before building the message and raises :class:`WireError` with a kind
(``truncated``, ``version``, ``oversized``, ``malformed``, ``unknown_type``). Arrays are decoded as
read-only, zero-copy views of the received frames.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import msgpack
import numpy as np

from kikimimi.engine.errors import KikimimiError, WireError
from kikimimi.engine.messages import Header, Message, lookup_type

MAGIC = b"KM"
VERSION = 1
PREFIX_LEN = 4
MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_ARRAY_DIMS = 8

ALLOWED_DTYPES = frozenset(
    np.dtype(t).str for t in (
        np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
        np.float16, np.float32, np.float64, np.bool_,
    )
)
_DTYPES = {s: np.dtype(s) for s in ALLOWED_DTYPES}  # decode looks dtypes up here instead of parsing each time
_PREFIX = MAGIC + bytes((VERSION, 0))
_SCALARS = (int, float, str, bool, type(None))


# ---------------------------------------------------------------------------- codec plans
@dataclass(frozen=True, slots=True)
class _Plan:
    """How one field travels: 'scalar', 'array', 'enum', 'tuple', 'struct' or 'optional'."""

    kind: str
    py: Any = None                       # the scalar type(s), enum class or dataclass
    inner: tuple[_Plan, ...] = ()
    names: tuple[str, ...] = ()


def _plan_for(tp: Any) -> _Plan:
    origin = typing.get_origin(tp)
    if tp is np.ndarray:
        return _Plan("array")
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _Plan("optional", inner=(_plan_for(args[0]),))
        if all(a in _SCALARS for a in args):
            return _Plan("scalar", (*args, type(None)))
        raise KikimimiError(f"wire codec cannot carry the union {tp!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return _Plan("tuple", inner=(_plan_for(args[0]),))
        raise KikimimiError(f"wire codec carries only variable-length tuples (tuple[X, ...]), not {tp!r}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _Plan("enum", tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = tuple(f.name for f in dataclasses.fields(tp))
        return _Plan("struct", tp, tuple(_plan_for(hints[n]) for n in names), names)
    if tp is float:
        return _Plan("scalar", (float, int))
    if tp in _SCALARS:
        return _Plan("scalar", (tp,))
    raise KikimimiError(f"wire codec cannot carry fields of type {tp!r}")


_PLANS: dict[type, tuple[tuple[str, _Plan], ...]] = {}
_DEC_PLANS: dict[type, tuple[tuple[str, _Plan, str], ...]] = {}


def _message_plan(cls: type[Message]) -> tuple[tuple[str, _Plan], ...]:
    plan = _PLANS.get(cls)
    if plan is None:
        hints = typing.get_type_hints(cls)
        plan = tuple((f.name, _plan_for(hints[f.name])) for f in dataclasses.fields(cls) if f.name != "header")
        _PLANS[cls] = plan
    return plan


def _decode_plan(cls: type[Message]) -> tuple[tuple[str, _Plan, str], ...]:
    """The message plan with each field's error location ("Type.field") built once, not per message."""
    plan = _DEC_PLANS.get(cls)
    if plan is None:
        plan = tuple((name, p, f"{cls.type_name}.{name}") for name, p in _message_plan(cls))
        _DEC_PLANS[cls] = plan
    return plan


# ---------------------------------------------------------------------------- encode
def _enc(value: Any, plan: _Plan, arrays: list[np.ndarray]) -> Any:
    k = plan.kind
    if k == "scalar":
        return value.item() if isinstance(value, np.generic) else value  # msgpack packs no numpy scalars
    if k == "enum":
        return value.value
    if k == "array":
        arr = np.ascontiguousarray(value)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        arrays.append(arr)
        return len(arrays) - 1
    if k == "optional":
        return None if value is None else _enc(value, plan.inner[0], arrays)
    if k == "tuple":
        return [_enc(v, plan.inner[0], arrays) for v in value]
    return [_enc(getattr(value, n), p, arrays) for n, p in zip(plan.names, plan.inner, strict=True)]


def encode(msg: Message) -> list[bytes | memoryview]:
    """Frames for ``msg``: the header frame, then one raw frame per array field."""
    arrays: list[np.ndarray] = []
    fields = [_enc(getattr(msg, name), plan, arrays) for name, plan in _message_plan(type(msg))]
    h = msg.header
    meta = [[a.dtype.str, list(a.shape)] for a in arrays]
    body = msgpack.packb(
        [msg.type_name, [h.stream_id, int(h.seq), int(h.sample_index), int(h.t_ns), h.source], fields, meta],
        use_bin_type=True,
    )
    frames: list[bytes | memoryview] = [_PREFIX + body]
    # memoryview.cast refuses shapes with a zero in them: an empty array travels as an empty frame.
    frames.extend(memoryview(a).cast("B") if a.size else b"" for a in arrays)
    return frames


# ---------------------------------------------------------------------------- decode
def _dec(raw: Any, plan: _Plan, arrays: Sequence[np.ndarray], where: str) -> Any:
    k = plan.kind
    if k == "scalar":
        if not isinstance(raw, plan.py) or (isinstance(raw, bool) and bool not in plan.py):
            raise WireError("malformed", f"{where}: expected {plan.py}, got {type(raw).__name__}")
        if float in plan.py and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        return raw
    if k == "enum":
        try:
            return plan.py(raw)
        except (ValueError, TypeError):
            allowed = ", ".join(repr(e.value) for e in plan.py)
            raise WireError("malformed", f"{where}: {raw!r} is not one of {allowed}") from None
    if k == "array":
        if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw < len(arrays):
            raise WireError("malformed", f"{where}: bad array reference {raw!r}")
        return arrays[raw]
    if k == "optional":
        return None if raw is None else _dec(raw, plan.inner[0], arrays, where)
    if not isinstance(raw, list):
        raise WireError("malformed", f"{where}: expected a list, got {type(raw).__name__}")
    if k == "tuple":
        return tuple(_dec(v, plan.inner[0], arrays, f"{where}[{i}]") for i, v in enumerate(raw))
    if len(raw) != len(plan.names):
        raise WireError("malformed", f"{where}: expected {len(plan.names)} fields, got {len(raw)}")
    return plan.py(**{n: _dec(v, p, arrays, f"{where}.{n}")
                      for n, p, v in zip(plan.names, plan.inner, raw, strict=True)})


def _arrays_from(meta: Any, frames: Sequence[memoryview]) -> list[np.ndarray]:
    if not isinstance(meta, list):
        raise WireError("malformed", "array table is not a list")
    if len(meta) > len(frames):
        raise WireError("truncated", f"header announces {len(meta)} arrays but {len(frames)} frames followed")
    if len(meta) < len(frames):
        raise WireError("malformed", f"header announces {len(meta)} arrays but {len(frames)} frames followed")
    out = []
    for i, (entry, buf) in enumerate(zip(meta, frames, strict=True)):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                and isinstance(entry[1], list)):
            raise WireError("malformed", f"array {i}: entry must be [dtype, shape]")
        dtype_str, shape = entry
        dtype = _DTYPES.get(dtype_str)
        if dtype is None:
            raise WireError("malformed", f"array {i}: dtype {dtype_str!r} is not allowed; allowed: "
                            f"{', '.join(sorted(ALLOWED_DTYPES))}")
        if len(shape) > MAX_ARRAY_DIMS:
            raise WireError("malformed", f"array {i}: bad shape {shape!r}")
        for d in shape:
            if type(d) is not int or d < 0:  # msgpack gives plain ints; bools and floats are refused
                raise WireError("malformed", f"array {i}: bad shape {shape!r}")
        want = dtype.itemsize * math.prod(shape)  # Python ints: no int64 wrap-around on hostile shapes
        if buf.nbytes != want:
            kind = "truncated" if buf.nbytes < want else "malformed"
            raise WireError(kind, f"array {i}: {buf.nbytes} bytes for dtype {dtype_str} shape {shape} "
                                  f"({want} bytes)")
        try:
            out.append(np.frombuffer(buf, dtype=dtype).reshape(shape))
        except (ValueError, OverflowError) as exc:  # e.g. a zero-size array with a dimension numpy refuses
            raise WireError("malformed", f"array {i}: bad shape {shape!r}: {exc}") from None
    return out


def _view(frame: Any) -> memoryview:
    """A memoryview of a frame given as bytes, a buffer, or a zmq.Frame."""
    if type(frame) is bytes:
        return memoryview(frame)
    buf = getattr(frame, "buffer", None)  # zmq.Frame
    return memoryview(frame if buf is None else buf)


def decode(frames: Sequence[Any], max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """Rebuild a message from its frames (bytes, memoryviews or zmq.Frame), or raise WireError."""
    if not frames:
        raise WireError("truncated", "no frames")
    views = [_view(f) for f in frames]
    total = sum(v.nbytes for v in views)
    if total > max_message_bytes:
        raise WireError("oversized", f"{total} bytes exceeds the limit of {max_message_bytes} bytes")
    head = bytes(views[0])
    if len(head) < PREFIX_LEN:
        raise WireError("truncated" if head[:2] == MAGIC[: len(head)] else "malformed",
                        f"header frame of {len(head)} bytes")
    if head[:2] != MAGIC:
        raise WireError("malformed", f"bad magic {head[:2]!r}, expected {MAGIC!r}")
    if head[2] != VERSION:
        raise WireError("version", f"wire version {head[2]} is not supported; supported: {VERSION}")
    if len(head) - PREFIX_LEN > MAX_HEADER_BYTES:
        raise WireError("oversized", f"header of {len(head) - PREFIX_LEN} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        body = msgpack.unpackb(head[PREFIX_LEN:], raw=False, strict_map_key=True)
    except msgpack.ExtraData:
        raise WireError("malformed", "trailing bytes after the header") from None
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        # msgpack caps each announced length at the buffer size by default, so "exceeds max_*_len"
        # also means the header ends before what it announces: a cut frame.
        text = str(exc).lower()
        kind = "truncated" if any(w in text for w in ("incomplete", "insufficient", "exceeds max_")) \
            else "malformed"
        raise WireError(kind, f"header does not parse: {exc}") from None
    if not (isinstance(body, list) and len(body) == 4 and isinstance(body[0], str)):
        raise WireError("malformed", "header is not [type, header, fields, arrays]")
    type_name, hdr, fields, meta = body
    cls = lookup_type(type_name)
    if cls is None:
        raise WireError("unknown_type", f"message type {type_name!r} is not registered")
    arrays = _arrays_from(meta, views[1:])
    if not (isinstance(hdr, list) and len(hdr) == 5):
        raise WireError("malformed", "message header must have 5 entries")
    plan = _decode_plan(cls)
    if not isinstance(fields, list) or len(fields) != len(plan):
        raise WireError("malformed", f"{type_name} needs {len(plan)} fields")
    try:
        header = Header(*hdr)
        values = {name: _dec(raw, p, arrays, where) for (name, p, where), raw in zip(plan, fields, strict=True)}
        return cls(header=header, **values)
    except WireError:
        raise
    except (KikimimiError, ValueError, TypeError) as exc:
        raise WireError("malformed", f"{type_name} rejected its fields: {exc}") from None
