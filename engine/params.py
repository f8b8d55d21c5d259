"""Declared node parameters and their validation.

A node kind lists its parameters as :class:`Param` declarations (type, default, allowed choices or
range, one line of help). Graph files and the Python builder give plain values; :func:`validate_params`
checks them and returns an immutable :class:`ParamValues` with attribute access. Errors name the
parameter, the bad value and what is allowed.

A node with plug-ins (the asr node's backends) takes each plug-in's own parameters too, declared by the
plug-in: :func:`validate_plugin_params`. A plug-in's config dataclass checks its fields against the same
declarations with :func:`check_fields`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kikimimi.engine.errors import ParamError

_REQUIRED = object()
_TYPE_NAMES = {int: "int", float: "float", str: "str", bool: "bool"}


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a node kind. ``default=REQUIRED`` makes it mandatory."""

    name: str
    type: type
    default: Any = _REQUIRED
    help: str = ""
    choices: Sequence[Any] | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = False

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def describe(self) -> str:
        """One line for ``kikimimi nodes``: name, type, default and what is allowed."""
        t = _TYPE_NAMES.get(self.type, self.type.__name__)
        if self.nullable:
            t += " or null"
        allowed = ""
        if self.choices is not None:
            allowed = " one of " + ", ".join(repr(c) for c in self.choices)
        elif self.min is not None or self.max is not None:
            lo = "" if self.min is None else f"{self.min} <= "
            hi = "" if self.max is None else f" <= {self.max}"
            allowed = f" {lo}value{hi}"
        default = "required" if self.required else f"default {self.default!r}"
        return f"{self.name} ({t}, {default}{';' if allowed else ''}{allowed}): {self.help}"

    def check(self, value: Any, where: str) -> Any:
        """Return ``value`` converted to the declared type, or raise ParamError naming what is allowed."""
        if value is None:
            if self.nullable:
                return None
            raise ParamError(f"{where}: {self.name} may not be null; expected {_TYPE_NAMES.get(self.type)}")
        v = value
        if self.type is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if self.type is int and isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, self.type) or (self.type is not bool and isinstance(v, bool)):
            raise ParamError(
                f"{where}: {self.name}={value!r} has type {type(value).__name__}; "
                f"expected {_TYPE_NAMES.get(self.type, self.type.__name__)}"
            )
        if self.choices is not None and v not in self.choices:
            raise ParamError(
                f"{where}: {self.name}={value!r} is not allowed; allowed: {', '.join(repr(c) for c in self.choices)}"
            )
        if self.min is not None and not v >= self.min:  # NaN fails too
            raise ParamError(f"{where}: {self.name}={value!r} is below the minimum {self.min}")
        if self.max is not None and not v <= self.max:
            raise ParamError(f"{where}: {self.name}={value!r} is above the maximum {self.max}")
        return v


REQUIRED = _REQUIRED


class ParamValues:
    """Validated parameter values of one node, read as attributes; immutable."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r}; parameters: {', '.join(self._values)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ParamValues are read-only")

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"ParamValues({self._values!r})"


def validate_params(declared: Sequence[Param], given: Mapping[str, Any] | None, where: str) -> ParamValues:
    """Check ``given`` against ``declared``: unknown names, missing required ones, types, choices, ranges."""
    given = dict(given or {})
    names = {p.name for p in declared}
    unknown = sorted(set(given) - names)
    if unknown:
        raise ParamError(
            f"{where}: unknown parameter {unknown[0]!r}; parameters: {', '.join(sorted(names)) or '(none)'}"
        )
    out: dict[str, Any] = {}
    for p in declared:
        if p.name in given:
            out[p.name] = p.check(given[p.name], where)
        elif p.required:
            raise ParamError(f"{where}: parameter {p.name!r} is required ({p.help})")
        else:
            out[p.name] = p.default
    return ParamValues(out)


def check_fields(obj: Any, declared: Sequence[Param], where: str) -> None:
    """Check the fields of a frozen config dataclass ``obj`` named like ``declared`` (types, choices, ranges),
    converting in place where :meth:`Param.check` converts (an int given for a float); ParamError otherwise."""
    for p in declared:
        value = p.check(getattr(obj, p.name), where)
        if value is not getattr(obj, p.name):
            object.__setattr__(obj, p.name, value)


def validate_plugin_params(declared: Sequence[Param], given: Mapping[str, Any] | None, where: str, selector: str,
                           plugins: Collection[str], plugin_params: Callable[[str], Sequence[Param]]) -> ParamValues:
    """``declared`` (the node's own parameters, defaults filled in) plus the parameters of the plug-in that the
    ``selector`` parameter names (one of ``plugins``; ``plugin_params(name)`` gives its declarations).

    A plug-in parameter is given as ``PLUGIN.NAME`` (flat), nested as ``PLUGIN: {NAME: value}``, or as plain
    ``NAME`` (for the plug-in in use). Only the plug-in in use is checked; a parameter of another plug-in is
    an error, as is an unknown one (the error lists the plug-in's parameters). The result holds the given
    plug-in parameters as ``PLUGIN.NAME`` (their defaults are the plug-in's business).
    """
    flat: dict[str, Any] = {}
    for key, value in (given or {}).items():
        items = [(f"{key}.{k}", v) for k, v in value.items()] if key in plugins and isinstance(value, Mapping) \
            else [(key, value)]
        for k, v in items:
            if k in flat:
                raise ParamError(f"{where}: parameter {k!r} is given twice")
            flat[k] = v
    own = {p.name for p in declared}
    values = validate_params(declared, {k: v for k, v in flat.items() if k in own}, where)
    plugin = getattr(values, selector)
    if plugin not in plugins:
        raise ParamError(f"{where}: {selector}={plugin!r} is not allowed; allowed: {', '.join(sorted(plugins))}")
    specs = {f"{plugin}.{p.name}": p for p in plugin_params(plugin)}
    listing = f"{selector} {plugin}'s parameters: {', '.join(sorted(specs)) or '(none)'}"
    out = values.as_dict()
    for key, value in flat.items():
        if key in own:
            continue
        name = key if "." in key else f"{plugin}.{key}"
        prefix = name.partition(".")[0]
        if prefix != plugin and prefix in plugins:
            raise ParamError(f"{where}: {key}={value!r} is a parameter of {selector} {prefix!r}, but {selector} is "
                             f"{plugin!r}; {listing}")
        p = specs.get(name)
        if p is None:
            others = sorted(o for o in plugins if o != plugin and "." not in key
                            and any(q.name == key for q in plugin_params(o)))
            hint = f" (a parameter of {selector} {', '.join(others)})" if others else ""
            raise ParamError(f"{where}: unknown parameter {key!r}{hint}; parameters: {', '.join(sorted(own))}; "
                             f"{listing}")
        if name in out:
            raise ParamError(f"{where}: parameter {name!r} is given twice (as {name!r} and as {key!r})")
        out[name] = replace(p, name=name).check(value, where)
    return ParamValues(out)
