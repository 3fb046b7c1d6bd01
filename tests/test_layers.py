"""The import layers of shared/ARCHITECTURE.md, checked on the source (every import, lazy ones included).

    twotower (CLI, pipeline, studies)           may import everything below
    serving · beam_jobs                         compose the stages
    towers · indexing · eval · recdata          the stages
    core                                        artifacts, lifecycle, strict config, run dir, guard, exclusions

An arrow only points down, and no two modules import each other (directly or through others).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("core", "recdata", "towers", "indexing", "eval", "beam_jobs", "serving", "twotower")
ALLOWED = {
    "core": set(),
    "recdata": {"core"},
    "towers": {"core", "recdata"},
    "indexing": {"core"},
    "eval": {"core"},
    "beam_jobs": {"core", "recdata", "towers", "indexing"},
    "serving": {"core", "recdata", "towers", "indexing"},
    "twotower": set(PROJECT),
}
# third-party packages a room must never import (indexing and eval grade any model, ours or not)
FORBIDDEN_THIRD_PARTY = {
    "core": {"tensorflow", "tf_keras", "tensorflow_recommenders", "apache_beam", "faiss"},
    "indexing": {"tensorflow", "tf_keras", "tensorflow_recommenders", "apache_beam"},
    "eval": {"tensorflow", "tf_keras", "tensorflow_recommenders", "apache_beam"},
    "recdata": {"tensorflow", "tf_keras", "tensorflow_recommenders", "apache_beam", "faiss"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str | None = None) -> set[str]:
    """Every absolute module a file imports (``from a.b import c`` yields ``a.b`` and ``a.b.c``)."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    module = module or module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for room in PROJECT for p in sorted((ROOT / room).rglob("*.py"))}


def project_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        room = mod.split(".")[0]
        for dep in sorted(deps):
            dep_room = dep.split(".")[0]
            if dep_room != room and dep_room not in ALLOWED[room]:
                bad.append(f"{mod} imports {dep} ({room} may import only {sorted(ALLOWED[room])})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def drop_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` importing its own submodules is not a cycle between modules."""
    return {m: {d for d in deps if not (m.startswith(d + ".") or d.startswith(m + "."))} for m, deps in graph.items()}


def test_no_room_imports_a_higher_one():
    assert layer_violations(project_graph()) == []


def test_no_import_cycles():
    assert cycles(drop_package_inits(project_graph())) == []


@pytest.mark.parametrize("room", sorted(FORBIDDEN_THIRD_PARTY))
def test_rooms_keep_out_of_heavy_libraries(room):
    bad = []
    for path in sorted((ROOT / room).rglob("*.py")):
        for mod in imports_of(path):
            if mod.split(".")[0] in FORBIDDEN_THIRD_PARTY[room]:
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert sorted(set(bad)) == []


def test_the_checker_catches_an_upward_import_and_a_cycle():
    graph = {"core.a": {"eval.b"}, "eval.b": {"eval.c"}, "eval.c": {"eval.b"}, "towers.x": {"serving.y"},
             "serving.y": set()}
    assert layer_violations(graph) == [
        "core.a imports eval.b (core may import only [])",
        "towers.x imports serving.y (towers may import only ['core', 'recdata'])",
    ]
    assert cycles(graph) == [["eval.b", "eval.c"]]


def test_relative_and_from_imports_are_resolved(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from .artifacts import x\nfrom core import strict\nimport recdata.schema\n"
                 "def f():\n    from ..eval import report\n")
    got = imports_of(f, module="core.sub.m")
    assert {"core.sub.artifacts", "core.sub.artifacts.x", "core", "core.strict", "recdata.schema",
            "core.eval", "core.eval.report"} == got
