"""The modules of ``src/bidfilter`` import each other without a cycle.

The graph is read from the source (``ast``), not from ``sys.modules``: nothing is imported, so
the test is fast and sees imports that a run would not reach (inside functions, under
``TYPE_CHECKING``).

Each import is one of three kinds, and the two tests draw the line between them:

- ``module``: runs when the importing module is imported (top level, class bodies, ``try`` and
  ``if`` blocks). A cycle of these makes import order matter: whichever module Python meets first
  sees the other half-initialised.
- ``function``: inside a function, run on its first call. Deferring an import is how a module
  avoids paying for boto3, pyarrow or matplotlib until it needs them; it is not a way out of a
  cycle.
- ``type-checking``: under ``if TYPE_CHECKING:``, never run; mypy follows it.

A cycle through a deferred (function or type-checking) import never fails at import time, but
it is the same knot in the design: neither module can be read, tested or moved without the
other, and it is exactly how the cycles this test was written against hid (a store base opening
its subclasses inside ``open_store``, a simulator importing its plot inside a method, a
connection naming its worker for mypy). So both tests assert acyclicity: the first over
``module`` imports only (the cycles that can break an import), the second over every kind.

An edge goes to the module an import names: ``from bidfilter.x import y`` reaches
``bidfilter.x.y`` when that is a module and ``bidfilter.x`` otherwise. The parent packages an
import runs on the way (``bidfilter``, ``bidfilter.x``) are not edges: a package ``__init__`` that
re-exports its submodules would otherwise form a cycle with every submodule importing a sibling.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

SOURCE_ROOT = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "bidfilter"

Kind = Literal["module", "function", "type-checking"]


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``source`` imports ``target`` at ``line``."""

    source: str
    target: str
    line: int
    kind: Kind

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line}, {self.kind})"


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``root/package`` by dotted name; C extensions by their ``.pyi`` stub."""
    modules: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules.setdefault(".".join(parts), path)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(body: list[ast.stmt], kind: Kind) -> Iterator[tuple[ast.stmt, Kind]]:
    """Every statement under ``body`` with the kind an import there would be."""
    for statement in body:
        yield statement, kind
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            inner: Kind = "type-checking" if kind == "type-checking" else "function"
            yield from _statements(statement.body, inner)
        elif isinstance(statement, ast.If) and _is_type_checking(statement.test):
            yield from _statements(statement.body, "type-checking")
            yield from _statements(statement.orelse, kind)
        else:
            # Class bodies, if/try/with/for/while/match blocks run when their scope does.
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for child in getattr(statement, field, ()):
                    if isinstance(child, ast.stmt):
                        yield from _statements([child], kind)
                    else:  # an except handler or a match case: its own body of statements
                        yield from _statements(child.body, kind)


def _targets(statement: ast.stmt, module: str, is_package: bool, modules: set[str]) -> list[str]:
    if isinstance(statement, ast.Import):
        return [alias.name for alias in statement.names]
    if not isinstance(statement, ast.ImportFrom):
        return []
    if statement.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(statement.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{statement.module}" if statement.module else package
    else:
        base = statement.module or ""
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
        for alias in statement.names
    ]


def import_edges(root: Path = SOURCE_ROOT, package: str = PACKAGE) -> list[Import]:
    """Every import between two modules of ``root/package``, with its kind."""
    files = module_files(root, package)
    modules = set(files)
    edges: list[Import] = []
    for module, path in files.items():
        if path.suffix == ".pyi":
            continue  # a stub describes a C extension, which imports nothing of ours
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for statement, kind in _statements(tree.body, "module"):
            for target in _targets(statement, module, is_package, modules):
                if target in modules and target != module:
                    edges.append(Import(module, target, statement.lineno, kind))
    return edges


@dataclass(frozen=True)
class Knot:
    """Modules that all reach each other by imports, and the shortest cycle through the first."""

    modules: tuple[str, ...]
    cycle: tuple[Import, ...]

    def __str__(self) -> str:
        return "\n".join([", ".join(self.modules), *(f"  {edge}" for edge in self.cycle)])


def knots(edges: list[Import]) -> list[Knot]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    graph: dict[str, list[Import]] = {}
    for edge in edges:
        graph.setdefault(edge.source, []).append(edge)
        graph.setdefault(edge.target, [])
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph[node]:
            if edge.target not in index:
                connect(edge.target)
                lowlink[node] = min(lowlink[node], lowlink[edge.target])
            elif edge.target in on_stack:
                lowlink[node] = min(lowlink[node], index[edge.target])
        if lowlink[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [
        Knot(tuple(sorted(component)), _cycle_in(min(component), component, graph))
        for component in components
    ]


def _cycle_in(
    start: str, component: set[str], graph: dict[str, list[Import]]
) -> tuple[Import, ...]:
    """The shortest cycle through ``start`` inside its component (breadth first)."""
    came_by: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for edge in graph[node]:
                if edge.target not in component:
                    continue
                if edge.target == start:
                    path = [edge]
                    while path[0].source != start:
                        path.insert(0, came_by[path[0].source])
                    return tuple(path)
                if edge.target not in came_by:
                    came_by[edge.target] = edge
                    following.append(edge.target)
        frontier = following
    raise AssertionError(f"{start} is in a component but on no cycle")


def test_every_kind_of_import_is_read(tmp_path: Path) -> None:
    # The acyclicity tests pass on an empty graph; this pins what the reader finds.
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from pkg.a import A\n")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import pkg.b as b\n"
        "from . import c, helper_name\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.sub import d\n"
        "else:\n"
        "    from pkg.sub.d import D\n"
        "class A:\n"
        "    from pkg.sub import e\n"
        "    def method(self) -> None:\n"
        "        try:\n"
        "            from .sub.e import E\n"
        "        except ImportError:\n"
        "            import pkg.c\n"
        "import os, json\n"
    )
    for name in ("b.py", "c.py", "sub/__init__.py", "sub/d.py", "sub/e.pyi"):
        (package / name).write_text("")
    (package / "sub" / "d.py").write_text("from ..b import B\n")

    assert sorted(str(edge) for edge in import_edges(tmp_path, "pkg")) == [
        "pkg -> pkg.a (line 1, module)",
        "pkg.a -> pkg (line 3, module)",  # ``helper_name`` is not a module: the package's name
        "pkg.a -> pkg.b (line 2, module)",
        "pkg.a -> pkg.c (line 14, function)",
        "pkg.a -> pkg.c (line 3, module)",
        "pkg.a -> pkg.sub.d (line 5, type-checking)",
        "pkg.a -> pkg.sub.d (line 7, module)",
        "pkg.a -> pkg.sub.e (line 12, function)",
        "pkg.a -> pkg.sub.e (line 9, module)",
        "pkg.sub.d -> pkg.b (line 1, module)",
    ]
    assert [str(knot) for knot in knots(import_edges(tmp_path, "pkg"))] == [
        "pkg, pkg.a\n  pkg -> pkg.a (line 1, module)\n  pkg.a -> pkg (line 3, module)"
    ]


def test_the_package_graph_is_read() -> None:
    assert len(import_edges()) > 100


@pytest.mark.parametrize(
    ("kinds", "why"),
    [
        pytest.param({"module"}, "imports run at import time", id="module-level"),
        pytest.param(
            {"module", "function", "type-checking"},
            "imports of every kind (a deferred import hides a cycle, it does not undo it)",
            id="all-kinds",
        ),
    ],
)
def test_imports_form_no_cycle(kinds: set[Kind], why: str) -> None:
    found = knots([edge for edge in import_edges() if edge.kind in kinds])
    assert not found, f"{len(found)} import cycle(s) among {why}:\n\n" + "\n\n".join(
        map(str, found)
    )
