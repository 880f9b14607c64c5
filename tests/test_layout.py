"""The house rules of imports (issue 21): among ``digest/``'s modules no cycle, and the
pipeline never imports the facade (:mod:`digest.core`), which only wires collaborators into it;
in ``tests/``, no test module imports another (shared code lives in ``conftest.py``,
``factories.py`` and the server modules), always as ``from tests.MODULE import ...``."""

from __future__ import annotations

import ast
from pathlib import Path

import digest

ROOT = Path(digest.__file__).parent
TESTS = Path(__file__).parent


def _module(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(root: Path = ROOT) -> dict[str, set[str]]:
    """Every module of the package at ``root`` → the modules of that package it imports
    anywhere (function-level and ``TYPE_CHECKING`` imports included: a cycle through them is
    still a tangle)."""
    paths = {_module(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in paths}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                found = [target, *(f"{target}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            else:
                continue
            graph[name].update(m for m in found if m in paths and m != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_among_digest_modules() -> None:
    graph = _imports()
    assert "digest.pipeline.send" in graph and "digest.core" in graph  # the walk found them
    assert _cycles(graph) == []


def test_the_pipeline_never_imports_the_facade() -> None:
    graph = _imports()
    pipeline = [m for m in graph if m.startswith("digest.pipeline")]
    assert len(pipeline) >= 4
    assert {m: "digest.core" in graph[m] for m in pipeline} == dict.fromkeys(pipeline, False)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_test_module_imports_another_test_module() -> None:
    graph = _imports(TESTS)
    tests = sorted(m for m in graph if m.startswith("tests.test_"))
    assert "tests.test_layout" in tests and "tests.factories" in graph  # the walk found them
    imported = {m: sorted(t for t in graph[m] if t.startswith("tests.test_")) for m in tests}
    assert {m: others for m, others in imported.items() if others} == {}


def _other_import_styles(root: Path) -> list[str]:
    """``FILE:LINE: what`` for each import of a module of the package at ``root`` written
    otherwise than ``from PACKAGE.MODULE import ...`` / ``import PACKAGE.MODULE``: relative,
    or by the bare module name (which works only with ``root`` itself on ``sys.path``)."""
    local = {p.stem for p in root.glob("*.py")} - {"__init__"}
    found = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                found.append(f"{path.name}:{node.lineno}: relative import")
                continue
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found += [
                f"{path.name}:{node.lineno}: {name}"
                for name in names
                if name.partition(".")[0] in local
            ]
    return found


def test_tests_import_shared_code_as_tests_dot_module() -> None:
    assert _other_import_styles(TESTS) == []


def test_the_import_checks_see_a_test_module_importing_another(tmp_path: Path) -> None:
    package = tmp_path / "tests"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "test_a.py").write_text("from tests.test_b import helper\n")
    (package / "test_b.py").write_text("def helper() -> None: ...\n")
    graph = _imports(package)
    assert graph == {"tests": set(), "tests.test_a": {"tests.test_b"}, "tests.test_b": set()}
    (package / "test_c.py").write_text("from .test_b import helper\nimport test_b\n")
    assert _other_import_styles(package) == [
        "test_c.py:1: relative import",
        "test_c.py:2: test_b",
    ]
