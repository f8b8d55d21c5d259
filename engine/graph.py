"""Graph specs: YAML files and a Python builder that produce the same validated :class:`GraphSpec`.

File format (``version: 1``)::

    name: default
    transport: inproc            # inproc | zmq
    input: source                # the node that `kikimimi run --input` replaces (optional)
    outputs:                     # what the graph produces, by role: role -> node.output_port (optional)
      events: vad.events
    nodes:
      source:
        kind: file_source
        params: {path: clip.flac}
      vad:
        kind: webrtc_vad
        inputs:
          audio: source.audio                        # shorthand: queue config from the port's default
      console:
        kind: console_sink
        inputs:
          in: {from: [vad.events], policy: block, capacity: 256, max_age_ms: 2000}
    zmq: {tcp_host: 127.0.0.1, tcp_base_port: 5550}  # optional; ipc:// endpoints need nothing

``outputs`` names the results of a graph by role (``transcripts``, ``events``, ...), so that tools reach them
without knowing node kinds: ``kikimimi run --output`` writes every role to a JSONL file, ``kikimimi
transcribe`` reads the ``transcripts`` role. ``spec.output(role)`` gives one; a missing role raises a
GraphError that lists the roles there are (or says to add ``outputs:`` when the graph has none).

Validation names the place of each problem (``nodes.vad.params.mode: ...``) and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from kikimimi.engine.errors import GraphError, KikimimiError, UnknownNodeKind
from kikimimi.engine.messages import Message
from kikimimi.engine.node import Node, PortSpec, Source
from kikimimi.engine.queues import Policy, QueueConfig
from kikimimi.engine.registry import load_kind

TRANSPORTS = ("inproc", "zmq")
_TOP_KEYS = ("version", "name", "description", "transport", "input", "outputs", "nodes", "zmq")
_NODE_KEYS = ("kind", "params", "inputs", "host")
_INPUT_KEYS = ("from", "policy", "capacity", "max_age_ms", "age_from")
_ZMQ_KEYS = ("tcp_host", "tcp_base_port", "max_message_mb")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One input port of a node: where its messages come from and how it queues them."""

    port: str
    sources: tuple[tuple[str, str], ...]   # (node, output port)
    queue: QueueConfig


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    kind: str
    params: Mapping[str, Any]
    inputs: tuple[InputSpec, ...] = ()
    host: str | None = None

    @property
    def cls(self) -> type[Node]:
        return load_kind(self.kind)

    @property
    def upstream(self) -> set[str]:
        return {n for i in self.inputs for n, _ in i.sources}


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """One named result of a graph: role ``role`` is output port ``port`` of node ``node``."""

    role: str
    node: str
    port: str

    @property
    def ref(self) -> str:
        """``node.port``, the form graph files use."""
        return f"{self.node}.{self.port}"


@dataclass(frozen=True, slots=True)
class ZmqSettings:
    """ZeroMQ settings of a graph: tcp endpoint base, and the size above which a message is rejected."""

    tcp_host: str = "127.0.0.1"
    tcp_base_port: int = 5550
    max_message_mb: float = 64.0


@dataclass(frozen=True, slots=True)
class GraphSpec:
    """A validated graph: nodes in topological order (sources first)."""

    name: str
    nodes: tuple[NodeSpec, ...]
    transport: str = "inproc"
    input_node: str | None = None
    description: str = ""
    zmq: ZmqSettings = field(default_factory=ZmqSettings)
    outputs: tuple[OutputSpec, ...] = ()

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise GraphError("", f"no node {name!r}; nodes: {', '.join(n.name for n in self.nodes)}")

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles of ``outputs``, in the order the graph lists them."""
        return tuple(o.role for o in self.outputs)

    def output(self, role: str) -> OutputSpec:
        """The output of role ``role``; GraphError lists the roles there are, or says how to name some."""
        for o in self.outputs:
            if o.role == role:
                return o
        if not self.outputs:
            raise GraphError("outputs", f"graph {self.name!r} names no outputs, so it has no {role!r} output; add "
                                        f"to the graph file: outputs: {{{role}: node.port}} (output ports: "
                                        f"{', '.join(self.output_ports()) or '(none)'})")
        raise GraphError("outputs", f"graph {self.name!r} has no output {role!r}; its outputs: "
                                    f"{', '.join(f'{o.role} ({o.ref})' for o in self.outputs)}")

    def output_ports(self) -> list[str]:
        """Every ``node.port`` output of the graph's nodes (what ``outputs`` may name)."""
        return [f"{n.name}.{p.name}" for n in self.nodes for p in n.cls.outputs]

    def routes(self, name: str) -> dict[str, list[tuple[str, str]]]:
        """Output port of ``name`` -> the (node, input port) pairs it feeds."""
        out: dict[str, list[tuple[str, str]]] = {}
        for n in self.nodes:
            for inp in n.inputs:
                for src, port in inp.sources:
                    if src == name:
                        out.setdefault(port, []).append((n.name, inp.port))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The YAML-able form; ``load_graph(spec.to_dict())`` gives an equal spec."""
        nodes: dict[str, Any] = {}
        for n in self.nodes:
            entry: dict[str, Any] = {"kind": n.kind}
            if n.params:
                entry["params"] = dict(n.params)
            if n.inputs:
                entry["inputs"] = {
                    i.port: _queue_dict(i) for i in n.inputs
                }
            if n.host:
                entry["host"] = n.host
            nodes[n.name] = entry
        d: dict[str, Any] = {"version": 1, "name": self.name, "transport": self.transport}
        if self.description:
            d["description"] = self.description
        if self.input_node:
            d["input"] = self.input_node
        if self.outputs:
            d["outputs"] = {o.role: o.ref for o in self.outputs}
        d["nodes"] = nodes
        if self.zmq != ZmqSettings():
            d["zmq"] = {"tcp_host": self.zmq.tcp_host, "tcp_base_port": self.zmq.tcp_base_port,
                        "max_message_mb": self.zmq.max_message_mb}
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # ------------------------------------------------------------ transformations used by the CLI
    def with_node(self, name: str, kind: str, params: Mapping[str, Any]) -> GraphSpec:
        """A copy where node ``name`` has a new kind and params (inputs and outputs kept), validated."""
        d = self.to_dict()
        if name not in d["nodes"]:
            raise GraphError("", f"no node {name!r} to replace")
        d["nodes"][name]["kind"] = kind
        d["nodes"][name]["params"] = dict(params)
        return load_graph(d)

    def with_transport(self, transport: str) -> GraphSpec:
        d = self.to_dict()
        d["transport"] = transport
        return load_graph(d)

    def with_extra_node(self, name: str, kind: str, params: Mapping[str, Any],
                        inputs: Mapping[str, Any]) -> GraphSpec:
        d = self.to_dict()
        if name in d["nodes"]:
            raise GraphError(f"nodes.{name}", "a node of that name exists already")
        d["nodes"][name] = {"kind": kind, "params": dict(params), "inputs": dict(inputs)}
        return load_graph(d)

    def without_nodes(self, names: set[str] | frozenset[str]) -> GraphSpec:
        """A copy without the nodes ``names``, validated (an input or output naming one of them is an error)."""
        d = self.to_dict()
        for name in names:
            if name not in d["nodes"]:
                raise GraphError("", f"no node {name!r} to remove; nodes: {', '.join(d['nodes'])}")
            del d["nodes"][name]
        return load_graph(d)

    def sinks(self) -> set[str]:
        """The nodes whose kind has no output ports (console, files): nothing in the graph reads them."""
        return {n.name for n in self.nodes if not n.cls.outputs}

    def message_types(self) -> tuple[type[Message], ...]:
        """The message types on the ports of this graph's node kinds (base classes such as ``Message``
        left out): what a process running part of the graph registers with the wire codec."""
        seen: dict[str, type[Message]] = {}
        for n in self.nodes:
            for port in (*n.cls.inputs, *n.cls.outputs):
                for t in port.types:
                    if t.__dict__.get("wire_type"):
                        seen.setdefault(t.type_name, t)
        return tuple(seen.values())

    def lossless(self) -> GraphSpec:
        """A copy where every input blocks, nothing ages out and every node takes its ``lossless_params``
        (nothing decided by the wall clock): for playback as fast as possible, the same on every run."""
        nodes = tuple(
            replace(n, params=n.cls.with_profile(n.cls.lossless_params, n.params), inputs=tuple(
                replace(i, queue=QueueConfig(Policy.BLOCK, max(i.queue.capacity, 64), None)) for i in n.inputs
            ))
            for n in self.nodes
        )
        return replace(self, nodes=nodes)

    def batch(self) -> GraphSpec:
        """:meth:`lossless`, and every node takes its ``batch_params`` too: batch transcription of files
        (whole utterances, no partials, the most accurate settings)."""
        spec = self.lossless()
        nodes = tuple(replace(n, params=n.cls.with_profile(n.cls.batch_params, n.params)) for n in spec.nodes)
        return replace(spec, nodes=nodes)


def _queue_dict(i: InputSpec) -> dict[str, Any]:
    q = i.queue
    d: dict[str, Any] = {"from": [f"{n}.{p}" for n, p in i.sources], "policy": q.policy.value,
                         "capacity": q.capacity}
    # Written even when None: a port's default queue may have a max age, which None must still override.
    d["max_age_ms"] = None if q.max_age_ns is None else q.max_age_ns / 1_000_000
    if q.age_from != "capture":
        d["age_from"] = q.age_from
    return d


def _check_keys(d: Any, allowed: tuple[str, ...], where: str) -> None:
    if not isinstance(d, Mapping):
        raise GraphError(where, f"expected a mapping, got {type(d).__name__}")
    for k in d:
        if k not in allowed:
            raise GraphError(where, f"unknown key {k!r}; allowed: {', '.join(allowed)}")


def _parse_ref(ref: Any, where: str) -> tuple[str, str]:
    if not isinstance(ref, str) or ref.count(".") != 1:
        raise GraphError(where, f"{ref!r} is not a reference of the form node.output_port")
    node, port = ref.split(".")
    return node, port


def load_graph(source: str | Path | Mapping[str, Any]) -> GraphSpec:
    """Load and validate a graph from a YAML file path, YAML text, or an already parsed mapping."""
    if isinstance(source, Mapping):
        data: Any = source
    else:
        text = Path(source).read_text() if isinstance(source, Path) or "\n" not in str(source) else str(source)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise GraphError(str(source) if isinstance(source, Path) else "", f"not valid YAML: {exc}") from None
    return _validate(data)


def _validate(data: Any) -> GraphSpec:
    _check_keys(data, _TOP_KEYS, "graph")
    if data.get("version", 1) != 1:
        raise GraphError("version", f"graph version {data.get('version')!r} is not supported; supported: 1")
    transport = data.get("transport", "inproc")
    if transport not in TRANSPORTS:
        raise GraphError("transport", f"{transport!r} is not allowed; allowed: {', '.join(TRANSPORTS)}")
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, Mapping) or not raw_nodes:
        raise GraphError("nodes", "a graph needs a non-empty mapping of nodes")
    classes: dict[str, type[Node]] = {}
    for name, nd in raw_nodes.items():
        where = f"nodes.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise GraphError(where, "node names are 1-32 chars of a-z, 0-9, _ starting with a letter")
        _check_keys(nd, _NODE_KEYS, where)
        if "kind" not in nd:
            raise GraphError(where, "missing 'kind'")
        try:
            classes[name] = load_kind(nd["kind"])
        except UnknownNodeKind as exc:
            raise UnknownNodeKind(f"{where}.kind", exc.problem) from None
    nodes: dict[str, NodeSpec] = {}
    for name, nd in raw_nodes.items():
        nodes[name] = _validate_node(name, nd, classes)
    order = _topological(nodes)
    zmq_raw = data.get("zmq") or {}
    _check_keys(zmq_raw, _ZMQ_KEYS, "zmq")
    zmq = ZmqSettings(**zmq_raw)
    if not isinstance(zmq.tcp_base_port, int) or not 1024 <= zmq.tcp_base_port <= 65000:
        raise GraphError("zmq.tcp_base_port", f"{zmq.tcp_base_port!r} must be an int in 1024..65000")
    if isinstance(zmq.max_message_mb, bool) or not isinstance(zmq.max_message_mb, (int, float)) \
            or not zmq.max_message_mb > 0:
        raise GraphError("zmq.max_message_mb", f"{zmq.max_message_mb!r} must be a positive number of MiB")
    input_node = data.get("input")
    if input_node is not None and input_node not in nodes:
        raise GraphError("input", f"{input_node!r} is not a node; nodes: {', '.join(nodes)}")
    if input_node is not None and not issubclass(classes[input_node], Source):
        raise GraphError("input", f"node {input_node!r} is not a source")
    return GraphSpec(str(data.get("name", "graph")), tuple(nodes[n] for n in order), transport, input_node,
                     str(data.get("description", "")), zmq, _validate_outputs(data.get("outputs"), classes))


def _validate_outputs(raw: Any, classes: dict[str, type[Node]]) -> tuple[OutputSpec, ...]:
    """``outputs``: role -> node.output_port, each naming a node and one of its output ports."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise GraphError("outputs", f"expected a mapping of role -> node.output_port, got {type(raw).__name__}")
    outputs = []
    for role, ref in raw.items():
        where = f"outputs.{role}"
        if not isinstance(role, str) or not _NAME.match(role):
            raise GraphError(where, "roles are 1-32 chars of a-z, 0-9, _ starting with a letter")
        node, port = _parse_ref(ref, where)
        _output_port(classes, node, port, where)
        outputs.append(OutputSpec(role, node, port))
    return tuple(outputs)


def _output_port(classes: dict[str, type[Node]], node: str, port: str, where: str) -> PortSpec:
    """The spec of output ``port`` of ``node``; GraphError at ``where`` lists the nodes or that node's outputs."""
    if node not in classes:
        raise GraphError(where, f"no node {node!r}; nodes: {', '.join(classes)}")
    spec = classes[node].output_spec(port)
    if spec is None:
        outs = ", ".join(p.name for p in classes[node].outputs) or "(none)"
        kind = classes[node].kind
        raise GraphError(where, f"node {node!r} ({kind}) has no output port {port!r}; its outputs: {outs}")
    return spec


def _validate_node(name: str, nd: Mapping[str, Any], classes: dict[str, type[Node]]) -> NodeSpec:
    where = f"nodes.{name}"
    cls = classes[name]
    try:
        params = cls.check_params(nd.get("params") or {}, f"node {name!r} ({cls.kind})")
    except KikimimiError as exc:
        raise GraphError(f"{where}.params", str(exc)) from None
    raw_inputs = nd.get("inputs") or {}
    if not isinstance(raw_inputs, Mapping):
        raise GraphError(f"{where}.inputs", "expected a mapping of input port -> source")
    inputs = []
    for port, conf in raw_inputs.items():
        pwhere = f"{where}.inputs.{port}"
        spec = cls.input_spec(port)
        if spec is None:
            ports = ", ".join(p.name for p in cls.inputs) or "(none)"
            raise GraphError(pwhere, f"node {name!r} ({cls.kind}) has no input port {port!r}; its inputs: {ports}")
        if isinstance(conf, (str, list)):
            conf = {"from": conf}
        _check_keys(conf, _INPUT_KEYS, pwhere)
        refs = conf.get("from")
        refs = [refs] if isinstance(refs, str) else refs
        if not refs:
            raise GraphError(pwhere, "needs 'from': node.output_port (or a list of them)")
        sources = []
        for ref in refs:
            src, out = _parse_ref(ref, f"{pwhere}.from")
            ospec = _output_port(classes, src, out, f"{pwhere}.from")
            if not spec.accepts(ospec.types):
                raise GraphError(pwhere, f"{src}.{out} carries {ospec.type_names()} but {name}.{port} "
                                         f"accepts {spec.type_names()}")
            sources.append((src, out))
        if len(set(sources)) != len(sources):
            raise GraphError(f"{pwhere}.from", "the same source is listed twice")
        default = spec.queue
        try:
            queue = QueueConfig.make(
                conf.get("policy", default.policy.value),
                conf.get("capacity", default.capacity if "policy" not in conf else None),
                conf.get("max_age_ms", None if default.max_age_ns is None else default.max_age_ns / 1e6),
                conf.get("age_from", default.age_from),
            )
        except KikimimiError as exc:
            raise GraphError(pwhere, str(exc)) from None
        inputs.append(InputSpec(port, tuple(sources), queue))
    if cls.inputs and not inputs:
        raise GraphError(where, f"no input is connected; {cls.kind} needs one of: "
                                f"{', '.join(p.name for p in cls.inputs)}")
    if not cls.inputs and not issubclass(cls, Source):
        raise GraphError(where, f"{cls.kind} has no inputs and is not a Source")
    host = nd.get("host")
    if host is not None and not isinstance(host, str):
        raise GraphError(f"{where}.host", f"expected a host name or address, got {host!r}")
    return NodeSpec(name, cls.kind, params.as_dict(), tuple(inputs), host)


def _topological(nodes: dict[str, NodeSpec]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cycle = " -> ".join([*path[path.index(n):], n])
            raise GraphError("nodes", f"graphs must not have cycles (end of stream could never arrive): {cycle}")
        state[n] = 1
        for up in sorted(nodes[n].upstream):
            visit(up, [*path, n])
        state[n] = 2
        order.append(n)

    for n in nodes:
        visit(n, [])
    return order


class GraphBuilder:
    """Builds the same mapping a YAML file holds and validates it with :func:`load_graph`.

    >>> g = GraphBuilder("demo")
    >>> g.node("source", "file_source", path="clip.flac")
    >>> g.node("vad", "webrtc_vad", mode=3).connect("audio", "source.audio")
    """

    def __init__(self, name: str, transport: str = "inproc", input_node: str | None = None,
                 description: str = "") -> None:
        self._d: dict[str, Any] = {"version": 1, "name": name, "transport": transport}
        if description:
            self._d["description"] = description
        if input_node:
            self._d["input"] = input_node
        self._d["nodes"] = {}

    def node(self, name: str, kind: str, **params: Any) -> _NodeBuilder:
        if name in self._d["nodes"]:
            raise GraphError(f"nodes.{name}", "a node of that name exists already")
        entry: dict[str, Any] = {"kind": kind}
        if params:
            entry["params"] = params
        self._d["nodes"][name] = entry
        return _NodeBuilder(entry)

    def input(self, name: str) -> GraphBuilder:
        self._d["input"] = name
        return self

    def output(self, role: str, ref: str) -> GraphBuilder:
        """Name output ``ref`` ("node.port") as the graph's ``role`` output (the ``outputs:`` of a file)."""
        self._d.setdefault("outputs", {})[role] = ref
        return self

    def build(self) -> GraphSpec:
        return load_graph(self._d)


class _NodeBuilder:
    def __init__(self, entry: dict[str, Any]) -> None:
        self._entry = entry

    def connect(self, port: str, *sources: str, **queue: Any) -> _NodeBuilder:
        """Feed input ``port`` from ``sources`` ("node.port"); ``queue`` takes policy, capacity, max_age_ms."""
        conf: Any = list(sources) if not queue else {"from": list(sources), **queue}
        self._entry.setdefault("inputs", {})[port] = conf if queue or len(sources) > 1 else sources[0]
        return self
