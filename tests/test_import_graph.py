"""The import graph of edge_distill's own modules has no cycles, the stage modules do not reach back into the
pipeline, and the device-side package (export/, shipped as edge_distill.export) imports nothing else of ours.

Read from the source with ``ast``, nothing is imported: every import statement counts, at module level or
inside a function (a lazy import only postpones a cycle to the call that runs it), except those under
``if TYPE_CHECKING:``, which never run.

How an import becomes an edge: ``import a.b.c`` and ``from a.b import c`` (c a submodule) lead to ``a.b.c``
alone.  Python also runs the parent packages' ``__init__`` on the way, but those run for every importer alike;
what a package's ``__init__`` itself imports is its own edges, so a cycle through it still shows.
``from a.b import name`` (name not a submodule) leads to the package ``a.b``, i.e. its ``__init__``.
"""

from __future__ import annotations

import ast
import functools
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP = "edge_distill"
EXPORT = "edge_distill.export"
STAGES = "edge_distill.stages"
PIPELINE = "edge_distill.pipeline"


def source_roots() -> dict[str, Path]:
    """Package name → folder, from pyproject's package-dir (export/ ships as edge_distill.export)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dirs = config["tool"]["setuptools"]["package-dir"]
    return {pkg: ROOT / folder for pkg, folder in dirs.items() if pkg.split(".")[0] == TOP}


@functools.cache
def discover_modules() -> dict[str, tuple[Path, bool]]:
    """Module name → (file, is a package's __init__)."""
    roots = source_roots()
    modules: dict[str, tuple[Path, bool]] = {}
    for pkg, folder in roots.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            if "__pycache__" in rel.parts:
                continue
            parts = list(rel.with_suffix("").parts)
            is_init = parts[-1] == "__init__"
            if is_init:
                parts = parts[:-1]
            name = ".".join([pkg, *parts])
            # A nested package-dir entry (export/) owns its modules even though it is not under edge_distill/.
            owner = max((p for p in roots if name == p or name.startswith(p + ".")), key=len)
            if owner == pkg:
                modules[name] = (path, is_init)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_nodes(tree: ast.AST):
    """Every Import/ImportFrom in the tree, skipping the bodies of ``if TYPE_CHECKING:`` (not their ``else``)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def resolve(node: ast.Import | ast.ImportFrom, module: str, is_init: bool, modules: dict) -> set[str]:
    """The edge_distill modules an import statement in ``module`` depends on."""

    def nearest(name: str) -> str | None:  # the longest known module that ``name`` is or lies inside
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            candidate = ".".join(parts[:n])
            if candidate in modules:
                return candidate
        return None

    def sibling(name: str) -> str | None:
        # Device-side files run as scripts from one folder, so ``import imageprep`` there is export/imageprep.py.
        if module != EXPORT and not module.startswith(EXPORT + "."):
            return None
        found = nearest(f"{EXPORT}.{name}")
        return found if found and found.startswith(EXPORT + ".") else None

    targets: set[str | None] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            targets.add(nearest(alias.name) if alias.name.split(".")[0] == TOP else sibling(alias.name))
    else:
        if node.level:
            package = module.split(".") if is_init else module.split(".")[:-1]
            base_parts = package[:len(package) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
            if base.split(".")[0] != TOP:
                base = sibling(base) or ""
                if not base:
                    return set()
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            targets.add(sub if sub in modules else nearest(base))
    return {t for t in targets if t is not None and t != module}


def build_graph() -> dict[str, dict[str, int]]:
    """Module → {module it imports: the line of its first such import}."""
    modules = discover_modules()
    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_init) in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: dict[str, int] = {}
        for node in sorted(import_nodes(tree), key=lambda n: n.lineno):
            for target in resolve(node, name, is_init, modules):
                edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def where(module: str, target: str, graph: dict[str, dict[str, int]]) -> str:
    path = discover_modules()[module][0].relative_to(ROOT)
    return f"{path}:{graph[module][target]} imports {target}"


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); returns the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
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
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def shortest_path(graph: dict[str, dict[str, int]], start: str, goal, within: set[str] | None = None) -> list[str] | None:
    """Breadth-first path from ``start`` to the first module where ``goal(module)`` holds (start excluded)."""
    previous: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node]):
                if within is not None and child not in within:
                    continue
                if goal(child):
                    path = [child, node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return path[::-1]
                if child not in seen:
                    seen.add(child)
                    previous[child] = node
                    nxt.append(child)
        frontier = nxt
    return None


def describe_path(path: list[str], graph: dict[str, dict[str, int]]) -> str:
    steps = "".join(f"\n      {where(a, b, graph)}" for a, b in zip(path, path[1:]))
    return " -> ".join(path) + steps


def describe_cycles(graph: dict[str, dict[str, int]]) -> list[str]:
    """Shortest cycles through the modules of each strongly connected component, until every one is shown."""
    lines = []
    for component in strongly_connected(graph):
        members = set(component)
        shown: set[str] = set()
        for module in component:
            if module in shown:
                continue
            cycle = shortest_path(graph, module, lambda m, start=module: m == start, within=members)
            shown.update(cycle)
            lines.append(describe_path(cycle, graph))
    return lines


def _resolved(source: str, module: str, is_init: bool = False) -> set[str]:
    names = ["edge_distill", "edge_distill.data", "edge_distill.data.spec", "edge_distill.data.user", "edge_distill.bench",
             "edge_distill.bench.runners", "edge_distill.export", "edge_distill.export.infer", "edge_distill.export.imageprep"]
    modules = {n: (Path(), n in ("edge_distill", "edge_distill.data", "edge_distill.bench", "edge_distill.export")) for n in names}
    found: set[str] = set()
    for node in import_nodes(ast.parse(source)):
        found |= resolve(node, module, is_init, modules)
    return found


def test_resolver_follows_pythons_rules():
    user, data, infer = "edge_distill.data.user", "edge_distill.data", "edge_distill.export.infer"
    assert _resolved("from . import spec", user) == {"edge_distill.data.spec"}
    assert _resolved("from . import prepare", user) == {"edge_distill.data"}
    assert _resolved("from .spec import DataSpec", user) == {"edge_distill.data.spec"}
    assert _resolved("from .spec import DataSpec", data, is_init=True) == {"edge_distill.data.spec"}
    assert _resolved("from ..bench import runners, bench_model", user) == {"edge_distill.bench.runners", "edge_distill.bench"}
    assert _resolved("import edge_distill.bench.runners", user) == {"edge_distill.bench.runners"}
    assert _resolved("from edge_distill import __version__", user) == {"edge_distill"}
    assert _resolved("import numpy\nfrom __future__ import annotations", user) == set()
    assert _resolved("import imageprep\nimport numpy\nfrom PIL import Image", infer) == {"edge_distill.export.imageprep"}
    lazy = "if TYPE_CHECKING:\n    from . import spec\nelse:\n    import edge_distill.bench\ndef f():\n    from .. import bench"
    assert _resolved(lazy, user) == {"edge_distill.bench"}


def test_graph_sees_the_packages():
    graph = build_graph()
    # Guards the test itself: a discovery bug would find no modules and so no cycles.
    assert {"edge_distill", "edge_distill.pipeline", "edge_distill.distill.train", "edge_distill.export.infer"} <= set(graph)
    assert "edge_distill.distill.losses" in graph["edge_distill.distill.train"]
    assert "edge_distill.export.imageprep" in graph["edge_distill.export.infer"]


def test_no_import_cycles():
    cycles = describe_cycles(build_graph())
    if cycles:
        pytest.fail(
            "edge_distill's modules import each other in a cycle (every import counts, lazy ones inside functions too).\n"
            "Move the piece both sides need into a module of its own instead of hiding the import:\n  "
            + "\n  ".join(cycles), pytrace=False)


def test_stages_do_not_reach_the_pipeline():
    graph = build_graph()
    problems = []
    for module in sorted(m for m in graph if m == STAGES or m.startswith(STAGES + ".")):
        path = shortest_path(graph, module, lambda m: m == PIPELINE)
        if path:
            problems.append(describe_path(path, graph))
    if problems:
        pytest.fail(
            f"{STAGES} must not import {PIPELINE}, directly or through another module (the pipeline calls the stages, "
            "never the reverse):\n  " + "\n  ".join(problems), pytrace=False)


def test_export_stands_alone():
    graph = build_graph()
    inside = lambda m: m == EXPORT or m.startswith(EXPORT + ".")  # noqa: E731
    problems = [where(module, target, graph) for module in sorted(filter(inside, graph))
                for target in sorted(graph[module]) if not inside(target)]
    if problems:
        pytest.fail(
            f"{EXPORT} (export/) runs on devices that have no edge_distill: it may import only its own modules.\n  "
            + "\n  ".join(problems), pytrace=False)
