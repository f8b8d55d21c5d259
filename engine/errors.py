"""Exceptions of the engine. Each names the bad value and what is allowed."""

from __future__ import annotations


class KikimimiError(Exception):
    """Base of every error this project raises on purpose."""


class MessageError(KikimimiError, ValueError):
    """A message was built with a field value its type does not allow."""


class ParamError(KikimimiError, ValueError):
    """A node parameter has a value that is not allowed."""


class GraphError(KikimimiError, ValueError):
    """A graph file or builder describes a graph that cannot run. ``where`` locates the problem."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where = where
        self.problem = problem


class UnknownNodeKind(GraphError):
    """A graph names a node kind that no registered node class provides."""


class WireError(KikimimiError, ValueError):
    """A message from the wire was rejected. ``kind`` is one of WireError.KINDS."""

    KINDS = ("truncated", "version", "oversized", "malformed", "unknown_type")

    def __init__(self, kind: str, detail: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"WireError kind {kind!r} is not one of {self.KINDS}")
        super().__init__(f"rejected wire message ({kind}): {detail}")
        self.kind = kind
        self.detail = detail


class MissingDependency(KikimimiError, ImportError):
    """An optional dependency is not installed; the message holds the exact install command."""

    def __init__(self, what: str, install: str) -> None:
        super().__init__(f"{what} is not available. Install it with: {install}")
        self.install = install


class DeviceUnavailable(KikimimiError, RuntimeError):
    """A capture device (microphone, camera) does not exist or cannot be opened."""
