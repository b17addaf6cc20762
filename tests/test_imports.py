"""The floors hold: every import of bench/, models/ and run_all.py (relative ones included) points down the map
in bench/__init__.py, no suite imports another, the torch-free modules stay torch-free, and no file is over 400
lines."""

import ast
from pathlib import Path

import pytest

from bench import COMPAT, IMPORT_ORDER, SUITES, TORCH_FREE

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.glob("bench/**/*.py"), *ROOT.glob("models/**/*.py"), ROOT / "run_all.py"])
SOURCES.remove(ROOT / "bench" / "__init__.py")  # the map itself: data, no imports


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def node(name):
    """The entry of IMPORT_ORDER a dotted module name belongs to (models.gss -> models), or None (stdlib etc.)."""
    if name == "models" or name.startswith("models."):
        return "models"
    return max((m for m in IMPORT_ORDER if name == m or name.startswith(m + ".")), key=len, default=None)


def imports(path):
    """(line, dotted name) of every module `path` imports, module-level or not; relative imports resolved."""
    return imports_of(path.read_text(), module_name(path), is_package=path.name == "__init__.py")


def imports_of(source, module, *, is_package=False):
    package = module.split(".") if is_package else module.split(".")[:-1]
    out = []
    for stmt in ast.walk(ast.parse(source)):
        if isinstance(stmt, ast.Import):
            out += [(stmt.lineno, alias.name) for alias in stmt.names]
        elif isinstance(stmt, ast.ImportFrom):
            base = ".".join(package[: len(package) - stmt.level + 1]) if stmt.level else ""
            name = ".".join(p for p in (base, stmt.module or "") if p)
            out.append((stmt.lineno, name))
            out += [(stmt.lineno, f"{name}.{alias.name}") for alias in stmt.names]  # `from bench import scaling`
    return out


def edges():
    """(importer, imported, where) between map entries, over every source file."""
    out = set()
    for path in SOURCES:
        here = node(module_name(path))
        for line, name in imports(path):
            there = node(name)
            if there is not None and there != here:
                out.add((here, there, f"{path.relative_to(ROOT)}:{line}"))
    return out


def test_every_source_file_is_on_the_map():
    assert [str(p.relative_to(ROOT)) for p in SOURCES if node(module_name(p)) is None] == []


def test_every_import_points_down_the_floors():
    upward = [f"{where}: {a} imports {b}" for a, b, where in edges() if IMPORT_ORDER.index(b) > IMPORT_ORDER.index(a)]
    assert upward == []


def test_only_run_all_imports_a_suite():
    sideways = [f"{where}: {a} imports {b}" for a, b, where in edges() if b in SUITES and a not in ("run_all", *COMPAT)]
    assert sideways == []


def test_models_know_nothing_of_bench():
    assert [where for a, b, where in edges() if a == "models"] == []


def test_torch_free_modules_import_nothing_that_imports_torch():
    heavy = {"torch", "models"}
    graph = {}
    for path in SOURCES:
        graph.setdefault(node(module_name(path)), set()).update(
            name.split(".")[0] if node(name) is None else node(name) for _, name in imports(path)
        )
    for module in IMPORT_ORDER:  # in order, so every import's own imports are already known
        for dep in list(graph.get(module, ())):
            if dep in graph and dep != module:
                graph[module] |= graph[dep]
    assert {m: sorted(graph[m] & heavy) for m in TORCH_FREE if graph[m] & heavy} == {}


@pytest.mark.parametrize(
    "module, source, expected",
    [
        ("bench.probe", "from . import scaling", "bench.scaling"),
        ("bench.probe", "from .results import x", "bench.results"),
        ("bench.probe", "from ..models import gss", "models.gss"),
        ("bench.plots.probe", "from .. import decode", "bench.decode"),
        ("bench.probe", "def f():\n    import bench.decode as d", "bench.decode"),
    ],
)
def test_relative_aliased_and_local_imports_are_resolved(module, source, expected):
    assert node(expected) in [node(name) for _, name in imports_of(source, module)]


MAX_LINES = 400  # as `ruff format` shapes them: .ci/run checks the formatting, so a line count is a formatted one


def test_no_file_of_bench_models_or_run_all_is_over_400_formatted_lines():
    """The house rule: a file past 400 formatted lines holds two ideas (tests are exempt)."""
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in SOURCES}
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}
