"""The layout shows the architecture: no import cycles (imports inside functions count too), and
docs/architecture.md names every folder and module of the runtime.  The layer order itself is the
import-linter ``layers`` contract in pyproject.toml (``lint-imports``)."""

from __future__ import annotations

import re
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("peer", "dht", "storage", "webui")


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(root: str) -> None:  # iterative: the graph is deep enough to matter
        nonlocal counter
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    group.append(m)
                    if m == node:
                        break
                if len(group) > 1 or graph.direct_import_exists(importer=node, imported=node):
                    cycles.append(sorted(group))

    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return cycles


def test_no_import_cycles() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    assert import_cycles(graph) == []


def test_the_cycle_check_sees_imports_inside_functions() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    # peer.app.cli imports its commands inside functions (a fast `peersm --help`)
    assert graph.direct_import_exists(importer="peer.app.cli", imported="peer.app.up")
    graph.add_import(importer="peer.app.up", imported="peer.app.cli")  # one function-level import back
    (cycle,) = import_cycles(graph)
    assert {"peer.app.cli", "peer.app.up"} <= set(cycle)


def test_the_cycle_check_finds_a_long_cycle() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    graph.add_import(importer="peer.wire.buffer", imported="peer.node")
    (cycle,) = import_cycles(graph)
    assert {"peer.wire.buffer", "peer.node"} <= set(cycle)


def test_architecture_doc_names_every_runtime_module() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"[\w/]+\.py|[\w/]+/", doc))
    missing = []
    for folder in ("peer/net", "peer/roles", "peer/app", "peer/testing", "webui"):
        for f in sorted((ROOT / folder).glob("*.py")):
            if f.name == "__init__.py":
                continue
            rel = f.relative_to(ROOT).as_posix()
            if rel not in named and f.name not in doc:
                missing.append(rel)
    for folder in (
        "peer/net/",
        "peer/roles/",
        "peer/app/",
        "peer/testing/",
        "peer/tor/",
        "peer/transport/",
        "peer/proto/",
        "peer/crypto/",
        "peer/wire/",
        "storage/",
        "dht/",
        "webui/",
    ):
        if folder not in doc:
            missing.append(folder)
    assert missing == []
