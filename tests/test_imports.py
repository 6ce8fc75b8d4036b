"""The code's own imports make no circles: a module that two others need sits below both.

Imports are read from the source (ast), with those under `if TYPE_CHECKING:` and inside functions:
a circle of type-only imports still means two modules that cannot be read apart. A name imported
from the grid_core.types facade counts as an import of the module that defines it.
"""

from __future__ import annotations

import ast
import itertools

from grid_core import types
from tests.conftest import REPO

HOME = {name: module for module, names in types.MODULES.items() for name in names}  # the facade's names
PACKAGES = [REPO / "grid_core", *sorted(p for p in (REPO / "plugins").glob("*/grid_plugin_*") if p.is_dir())]


def modules() -> dict[str, ast.Module]:
    out = {}
    for package in PACKAGES:
        for path in package.rglob("*.py"):
            parts = path.relative_to(package.parent).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = ast.parse(path.read_text())
    return out


def imports(tree: ast.Module, known: set[str], *, module_level: bool) -> set[str]:
    """The project's modules that `tree` imports: at module level (with TYPE_CHECKING blocks), or anywhere."""
    found = set()

    def resolve(name: str) -> str | None:
        head, _, last = name.rpartition(".")
        if head == "grid_core.types" and last in HOME:
            name = f"grid_core.types.{HOME[last]}"
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    nodes = itertools.chain.from_iterable(ast.walk(n) if isinstance(n, ast.If) else [n] for n in tree.body) \
        if module_level else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {resolve(f"{node.module}.{a.name}") for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {resolve(a.name) for a in node.names}
    return {m for m in found if m is not None}


def graph(*, module_level: bool) -> dict[str, set[str]]:
    trees = modules()
    known = set(trees)
    # A package's own __init__ is not an import of it by its modules.
    return {name: {m for m in imports(tree, known, module_level=module_level) if m != name
                   and not name.startswith(m + ".")} for name, tree in trees.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_module_level_imports_make_no_circle() -> None:
    assert circles(graph(module_level=True)) == []


def test_no_two_modules_import_each_other_anywhere() -> None:
    """Imports inside functions too: deferring an import hides a circle, it does not remove it."""
    edges = graph(module_level=False)
    pairs = sorted({tuple(sorted((a, b))) for a, deps in edges.items() for b in deps if a in edges.get(b, ())})
    assert pairs == []


def test_the_checker_sees_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
