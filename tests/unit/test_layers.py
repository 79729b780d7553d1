"""The layers, checked on the import statements of the source (every one, function-local included):

* edge/ stands alone: it imports nothing from host/, sim/ or tests/ (it runs on MicroPython, on a board);
* the hub core (host/ outside host/tools/) does not import the command-line tools in host/tools/;
* host/ has no import cycles. Imports under `if TYPE_CHECKING:` do not count (they never run).

A cycle is reported with its modules and the import lines that close it.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(folder: str) -> dict[str, Path]:
    return {module_name(p): p for p in sorted((REPO / folder).rglob("*.py"))}


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every import statement that can run; relative imports made absolute."""
    tree = ast.parse(path.read_text(), str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _type_checking(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([mod] if mod else []))
            out.append((node.lineno, mod, [a.name for a in node.names]))
    return out


def targets(mod: str, names: list[str], known: dict[str, Path]) -> list[str]:
    """The modules an import statement loads: `from P import n` is P.n when that is a module, else P."""
    subs = [f"{mod}.{n}" for n in names if f"{mod}.{n}" in known]
    return subs if names and len(subs) == len(names) else [mod, *subs]


def test_edge_imports_nothing_from_host_sim_or_tests() -> None:
    bad = [f"{p.relative_to(REPO)}:{line}: {mod}"
           for p in modules("edge").values() for line, mod, _ in imports(p)
           if mod.split(".")[0] in ("host", "sim", "tests")]
    assert not bad, "edge/ must run without host/, sim/ and tests/:\n" + "\n".join(bad)


def test_hub_core_does_not_import_the_tools() -> None:
    known = modules("host")
    bad = [f"{p.relative_to(REPO)}:{line}: {mod}"
           for name, p in known.items() if not (name + ".").startswith("host.tools.")
           for line, mod, names in imports(p)
           if any((t + ".").startswith("host.tools.") for t in targets(mod, names, known))]
    assert not bad, "the hub core (host/ outside host/tools/) imports the command-line tools:\n" + "\n".join(bad)


def import_graph(known: dict[str, Path]) -> dict[str, dict[str, str]]:
    """module -> {module it imports: where (path:line of the first such import)}, within `known`."""
    graph: dict[str, dict[str, str]] = {}
    for name, p in known.items():
        edges = graph[name] = {}
        for line, mod, names in imports(p):
            for t in targets(mod, names, known):
                if t in known and t != name:
                    edges.setdefault(t, f"{p.relative_to(REPO)}:{line}")
    return graph


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
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


def describe(comp: list[str], graph: dict[str, dict[str, str]]) -> str:
    edges = [f"    {a} -> {b}  ({graph[a][b]})" for a in comp for b in sorted(graph[a]) if b in comp]
    return "  cycle: " + ", ".join(comp) + "\n" + "\n".join(edges)


def test_cycle_finder_names_the_modules_of_a_cycle() -> None:
    graph = {"a": {"b": "a.py:1"}, "b": {"c": "b.py:2"}, "c": {"a": "c.py:3"}, "d": {"a": "d.py:4"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert "a -> b  (a.py:1)" in describe(["a", "b", "c"], graph)


def test_no_import_cycles_in_host() -> None:
    graph = import_graph(modules("host"))
    found = cycles(graph)
    assert not found, "import cycles in host/:\n" + "\n".join(describe(c, graph) for c in found)
