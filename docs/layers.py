"""The import graph of kikimimi, by layer, as an import-graph tool (grimp) sees it.

    python docs/layers.py          # prints the layers, who imports whom, and any import that runs upwards

Layers, top to bottom: ``launch`` and ``nodes`` (nodes never import launch), ``models``, ``engine``.
Inside the engine, the core (queues, wire codec, runners, transports, node base, graph) depends only on
the message core (``kikimimi.engine.messages``: Header, Message, Control), never on a message family
(``kikimimi.engine.msgs.*``). Exit status 1 if anything breaks either rule.
"""

from __future__ import annotations

import sys
from collections import Counter

LAYERS = ("kikimimi.launch", "kikimimi.nodes", "kikimimi.models", "kikimimi.engine")
ENGINE_CORE = tuple(f"kikimimi.engine.{m}" for m in (
    "messages", "wire", "queues", "runner", "driver", "procs", "worker", "zmq_transport", "node", "graph",
    "registry", "streams", "params", "clock", "ring", "metrics", "errors", "testing"))
FAMILIES = "kikimimi.engine.msgs."


def build_graph():  # type: ignore[no-untyped-def]
    import grimp

    return grimp.build_graph(*LAYERS, cache_dir=None)


def upward_imports(graph) -> list[str]:  # type: ignore[no-untyped-def]
    """Each import from a lower layer into a higher one, as "importer -> imported"."""
    out = []
    for dep in graph.find_illegal_dependencies_for_layers(layers=LAYERS):
        for route in dep.routes:
            for head in sorted(route.heads):
                for tail in sorted(route.tails):
                    out.append(f"{head} -> {' -> '.join(route.middle) + ' -> ' if route.middle else ''}{tail}")
    return sorted(out)


def core_on_families(graph) -> list[str]:  # type: ignore[no-untyped-def]
    """Each engine-core module that imports (directly or not) a message family."""
    out = []
    for mod in ENGINE_CORE:
        if mod not in graph.modules:
            continue
        fams = sorted(m for m in graph.find_upstream_modules(mod) if m.startswith(FAMILIES))
        if fams:
            out.append(f"{mod} -> {', '.join(fams)}")
    return out


def edges(graph) -> Counter[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Direct imports counted between layers (importer layer, imported layer)."""
    def layer(m: str) -> str:
        return next(name.split(".")[1] for name in LAYERS if m == name or m.startswith(name + "."))

    c: Counter[tuple[str, str]] = Counter()
    for m in graph.modules:
        for imp in graph.find_modules_directly_imported_by(m):
            if imp.startswith("kikimimi."):
                c[(layer(m), layer(imp))] += 1
    return c


def main() -> int:
    graph = build_graph()
    count = edges(graph)
    names = [n.split(".")[1] for n in LAYERS]
    print("direct imports between layers (row imports column):")
    print(f"{'':>8} " + " ".join(f"{n:>8}" for n in names))
    for a in names:
        print(f"{a:>8} " + " ".join(f"{count.get((a, b), 0):>8}" for b in names))
    up, fam = upward_imports(graph), core_on_families(graph)
    for line in up:
        print(f"upward import: {line}")
    for line in fam:
        print(f"engine core on a message family: {line}")
    print("layers: OK" if not (up or fam) else "layers: BROKEN")
    return 1 if up or fam else 0


if __name__ == "__main__":
    sys.exit(main())
