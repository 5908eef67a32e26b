"""The layering of agh and aghd, checked on the source with ``ast``: which
module may import which, and no import cycle.

Every import counts, at module level or inside a function (a lazy import
is still a dependency), except those under ``if TYPE_CHECKING:`` (never
executed). The rules:

- the client side (``agh``) never imports the daemon (``aghd``);
- the wire types (``agh.protocol``) and the errors (``agh.errors``) import
  only the standard library and msgspec: both sides build on them;
- the store (``aghd.store``) imports nothing above it: no handler, server,
  committer, stream hub or application module;
- inside the store, each module imports only modules of its own layer or
  of the layers below (STORE_LAYERS, bottom first), and every store module
  has a layer;
- handlers import neither the server nor the application, nor the
  committer, scheduler or stream hub: they reach what they need through
  the typed services (``ctx.store``, ``ctx.sessions``, ...);
- the server imports no handler, no store module, no service and not the
  application: it is given a dispatch callable and connection callbacks;
- no cycle among the modules, but those listed in KNOWN_CYCLES (none
  left: the list may only shrink, and a cycle that is gone fails the test
  until its entry is deleted).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agh", "aghd")

# Strongly connected groups of modules that import each other today.
KNOWN_CYCLES: list[frozenset[str]] = []

# The store's layers, bottom first: a module may import modules of its own
# layer and of the layers before it, never of a later one.
STORE_LAYERS: list[list[str]] = [
    # The schema and its migrations.
    ["aghd.store.schema"],
    # The connection, Tx, Caller, ids and JSON.
    ["aghd.store.db"],
    # Data classes and status sets; sessions and workspaces (their own rows).
    ["aghd.store.models", "aghd.store.sessions", "aghd.store.workspaces"],
    # Reading the event log.
    ["aghd.store.events"],
    # Lookups of tasks, runs and dependencies: no writes.
    ["aghd.store.rows"],
    # The blocking rule: reads only.
    ["aghd.store.graph"],
    # What follows from the rule: queue, block, skip, settle; run writes it needs.
    ["aghd.store.progress"],
    # Task operations.
    ["aghd.store.tasks"],
    # Claiming a run; what happens to it under its lease.
    ["aghd.store.claims", "aghd.store.leases"],
    # On top: workflows, a finish's next claim, a run's logs and messages,
    # observability reads.
    [
        "aghd.store.workflows",
        "aghd.store.cycle",
        "aghd.store.coordination",
        "aghd.store.observe",
        "aghd.store.retention",
    ],
]

STDLIB = set(sys.stdlib_module_names)
ABOVE_THE_STORE = (
    "aghd.app",
    "aghd.server",
    "aghd.committer",
    "aghd.handlers",
    "aghd.rpc",
    "aghd.scheduler",
    "aghd.streams",
    "aghd.main",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    return {
        module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported(module: str, tree: ast.Module, known: set[str]) -> Iterator[str]:
    """Every module ``module`` imports at run time (names resolved to the
    modules they are in, where they are modules of ours)."""
    package = (
        module
        if module in known and (ROOT / module.replace(".", "/")).is_dir()
        else (module.rpartition(".")[0])
    )

    def visit(node: ast.AST) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                yield from (n for other in child.orelse for n in visit_one(other))
                continue
            yield from visit_one(child)

    def visit_one(node: ast.AST) -> Iterator[str]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield full if full in known else base
        else:
            yield from visit(node)

    yield from visit(tree)


def import_graph() -> dict[str, set[str]]:
    files = sources()
    known = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[module] = {name for name in imported(module, tree, known) if name != module}
    return graph


def ours(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph among our modules only; ``agh.x`` importing ``agh`` (the
    package) counts as importing ``agh/__init__.py``."""
    return {m: {d for d in deps if d in graph} for m, deps in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


GRAPH = import_graph()
OURS = ours(GRAPH)


def test_the_walk_sees_the_modules_and_their_imports() -> None:
    assert {"agh.client", "agh.cli", "aghd.app", "aghd.store.claims"} <= set(GRAPH)
    assert "aghd.store.rows" in GRAPH["aghd.store.claims"]
    assert "agh.client" in GRAPH["agh.cli.connect"]  # a lazy import counts
    # A TYPE_CHECKING import does not.
    assert "agh.client" not in OURS["agh.cli.output"]


def test_the_client_side_never_imports_the_daemon() -> None:
    wrong = {
        (m, d)
        for m, deps in GRAPH.items()
        if m.split(".")[0] == "agh"
        for d in deps
        if d.split(".")[0] == "aghd"
    }
    assert not wrong


WIRE = sorted(m for m in GRAPH if m == "agh.protocol" or m.startswith("agh.protocol."))


@pytest.mark.parametrize("module", [*WIRE, "agh.errors"])
def test_the_wire_types_and_errors_import_only_the_stdlib_and_msgspec(module: str) -> None:
    outside = {
        d
        for d in GRAPH[module]
        if d.split(".")[0] not in STDLIB | {"msgspec"} and not d.startswith("agh.protocol.")
    }
    assert not outside, outside


def test_the_enumerations_import_no_msgspec() -> None:
    # The CLI builds its --help from them.
    assert {d.split(".")[0] for d in GRAPH["agh.protocol.enums"]} <= STDLIB
    assert len(WIRE) > 10  # the package, its family modules and methods


def test_the_store_imports_nothing_above_it() -> None:
    wrong = {
        (m, d)
        for m, deps in GRAPH.items()
        if m.startswith("aghd.store")
        for d in deps
        if d.startswith(ABOVE_THE_STORE)
    }
    assert not wrong


def store_layer_violations(
    graph: dict[str, set[str]], layers: list[list[str]]
) -> set[tuple[str, str]]:
    """(module, import) pairs where a store module imports a later layer."""
    rank = {module: i for i, layer in enumerate(layers) for module in layer}
    return {
        (m, d)
        for m, deps in graph.items()
        if m in rank
        for d in deps
        if d in rank and rank[d] > rank[m]
    }


def test_every_store_module_has_a_layer() -> None:
    store = {m for m in GRAPH if m.startswith("aghd.store.")}
    listed = [m for layer in STORE_LAYERS for m in layer]
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert store == set(listed)


def test_the_store_layers_import_only_downwards() -> None:
    assert not store_layer_violations(OURS, STORE_LAYERS)


def test_the_layer_check_finds_an_upward_import() -> None:
    graph = {"low": {"high"}, "high": {"low"}, "mid": {"low"}}
    assert store_layer_violations(graph, [["low"], ["mid"], ["high"]]) == {("low", "high")}


def test_handlers_reach_the_daemon_only_through_their_services() -> None:
    daemon_parts = (
        "aghd.app",
        "aghd.server",
        "aghd.main",
        "aghd.committer",
        "aghd.scheduler",
        "aghd.streams",
    )
    wrong = {
        (m, d)
        for m, deps in GRAPH.items()
        if m.startswith("aghd.handlers")
        for d in deps
        if d.startswith(daemon_parts)
    }
    assert not wrong
    assert "aghd.rpc" in GRAPH["aghd.handlers.agent"]  # the walk sees handler imports


def test_the_server_is_given_its_dispatch_and_sees_no_daemon() -> None:
    wrong = {
        d
        for d in every_import("aghd.server")
        if d.startswith(("aghd.app", "aghd.handlers", "aghd.store", "aghd.services", "aghd.main"))
    }
    assert not wrong


def every_import(module: str) -> set[str]:
    """What ``module`` imports, ``if TYPE_CHECKING:`` blocks included: a type
    named in a signature is a dependency too, even if never loaded."""
    files = sources()
    names: set[str] = set()
    for node in ast.walk(ast.parse(files[module].read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in files else node.module)
    return names


def test_the_store_sees_only_the_workflow_model_and_the_model_no_yaml() -> None:
    # The store turns a parsed workflow into rows: it needs the data classes,
    # never the reader, the checks or the plan.
    store = [m for m in GRAPH if m == "aghd.store" or m.startswith("aghd.store.")]
    wrong = {
        (m, d)
        for m in store
        for d in every_import(m)
        if (d == "aghd.workflows" or d.startswith("aghd.workflows."))
        and d != "aghd.workflows.model"
    }
    assert not wrong
    assert "aghd.workflows.model" in every_import("aghd.store.workflows")  # the walk sees it
    # The model, and whatever it loads, stays free of yaml and of the store.
    reached: set[str] = set()
    todo = ["aghd.workflows.model"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(OURS[module])
    bad = {
        (m, d)
        for m in reached
        for d in (every_import(m) if m == "aghd.workflows.model" else GRAPH[m])
        if d.split(".")[0] == "yaml" or d == "aghd.store" or d.startswith("aghd.store.")
    }
    assert not bad


def test_no_import_cycle_but_the_known_ones() -> None:
    found = cycles(OURS)
    assert sorted(map(sorted, found)) == sorted(map(sorted, KNOWN_CYCLES))


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]


def test_one_version_everywhere() -> None:
    import tomllib

    from agh import __version__

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    for page in (ROOT / "man").glob("*.[1-9]"):
        header = next(line for line in page.read_text().splitlines() if line.startswith(".TH"))
        assert f'"agh {__version__}"' in header, page.name
