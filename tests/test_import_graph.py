"""No import circles in medtl/ (issue 19): each layer imports only the ones below it.

The graph is built with ``ast`` from the source, so it sees every import: module level and inside
functions alike. Lazy (function-level) imports are *included* on purpose: a lazy import that runs
back up a layer is still a circle in the design, only one that Python tolerates at run time, and
the registry's lazy import of its own built-ins was exactly such a circle. Two kinds of edge are
left out, because they are not dependencies of the importing module: ``if TYPE_CHECKING:`` blocks
(never run), and the implicit import of a parent package when a submodule is imported (``import
medtl.models.registry`` runs ``medtl/models/__init__.py`` first, but the registry does not depend
on what that ``__init__`` imports; counting it would make every package that registers its own
contents a circle).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medtl"


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """medtl modules named by every import statement of ``tree`` (``from a import b``: ``a.b`` when
    that is a module, else ``a``)."""
    out: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for a in node.names:
                out.add(f"{target}.{a.name}" if f"{target}.{a.name}" in known else target)
        stack.extend(ast.iter_child_nodes(node))
    return {m for m in out if m in known and m != module}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the medtl modules it imports."""
    files = {_module_name(p, package): p for p in package.rglob("*.py")}
    return {mod: _imports(ast.parse(path.read_text(), str(path)), mod, path.name == "__init__.py", set(files))
            for mod, path in files.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm; hand-written to
    keep the test free of a graph library)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_the_graph_sees_lazy_and_module_level_imports() -> None:
    g = import_graph()
    assert "medtl.models.transfer" in g["medtl.experiment.run"]  # module level
    assert "medtl.data.curate" in g["medtl.api"]  # inside a function
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_medtl_has_no_import_circles() -> None:
    found = circles(import_graph())
    assert not found, "import circles in medtl/ (modules that reach each other):\n" + "\n".join(" <-> ".join(c) for c in found)
