"""The import graph of a source tree, read from its code (every import statement, those inside
function bodies too), and the architecture rules checked on it: layers, private modules, cycles.

Used by tests/test_architecture.py on ``src/vitrify`` and, in its unit tests, on small trees made
under ``tmp_path`` that break each rule.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

#: Layer of each top-level package of vitrify (docs/conventions.md): imports point to a lower number.
RANK = {"io": 0, "core": 0, "sim": 1, "ml": 1, "ranker": 1, "preprocess": 1,
        "jobs": 2, "pipeline": 3, "cli": 4, "web": 4}
#: Layers whose packages must not import each other.
INDEPENDENT = (0, 1)


@dataclass(frozen=True)
class Import:
    """One import statement: ``importer`` imports ``imported`` (dotted module names) at ``line``."""

    importer: str
    imported: str
    line: int


def module_name(path: Path, src: Path) -> str:
    """Dotted name of the module at ``path`` under the source root ``src`` (``pkg/__init__.py`` -> ``pkg``)."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(src: Path, package: str) -> dict[str, Path]:
    return {module_name(p, src): p for p in sorted((src / package).rglob("*.py"))}


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The module an ``ImportFrom`` names, relative imports resolved against ``importer``."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``): its imports are for type checkers only."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, importer: str, known: set[str]) -> list[Import]:
    """Every import in the module ``importer`` (file ``path``) of a module in ``known``.

    Imports under ``if TYPE_CHECKING:`` are left out: they never run.

    ``from pkg import name`` counts as an import of ``pkg.name`` when that is a module, else of ``pkg``.
    Names outside ``known`` (the standard library, third-party packages) are left out.
    """
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    never_run = {id(inner) for node in ast.walk(tree) if _is_type_checking(node)
                 for stmt in node.body for inner in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in never_run:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, importer, path.name == "__init__.py")
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != importer:
                found.append(Import(importer, target, node.lineno))
    return found


def import_graph(src: Path, package: str) -> list[Import]:
    """All imports between the modules of ``package`` under the source root ``src``."""
    modules = _modules(src, package)
    known = set(modules)
    return [imp for name, path in modules.items() for imp in imports_of(path, name, known)]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def layer_violations(imports: list[Import]) -> list[str]:
    """Imports that point up the layers or sideways between independent siblings (io <-> core, L1)."""
    bad = []
    for imp in imports:
        here, there = _layer(imp.importer), _layer(imp.imported)
        if here is None or there is None or here == there:
            continue
        if RANK[there] > RANK[here] or (RANK[there] == RANK[here] and RANK[here] in INDEPENDENT):
            bad.append(f"{imp.importer} (line {imp.line}) imports {imp.imported}")
    return bad


def _private_parent(module: str) -> str | None:
    """The package that owns the first private component of ``module`` (``a.b._c.d`` -> ``a.b``)."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
            return ".".join(parts[:i])
    return None


def private_import_violations(imports: list[Import]) -> list[str]:
    """Imports of a private ``_module`` from outside the package that holds it."""
    bad = []
    for imp in imports:
        owner = _private_parent(imp.imported)
        if owner is not None and imp.importer != owner and not imp.importer.startswith(owner + "."):
            bad.append(f"{imp.importer} (line {imp.line}) imports private {imp.imported}")
    return bad


def cycles(imports: list[Import]) -> list[list[str]]:
    """Groups of modules that import each other in a circle (strongly connected, > 1 module), sorted.

    A package's ``__init__`` importing its own submodules is left out: importing a package runs it
    first anyway, so that edge closes no real cycle.
    """
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if not imp.imported.startswith(imp.importer + "."):
            edges.setdefault(imp.importer, set()).add(imp.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)
