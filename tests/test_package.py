"""The package's layering: every internal import at module top, no import circle, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import cifarkit

PACKAGE = Path(cifarkit.__file__).parent


def internal_imports(path: Path) -> tuple[set[str], list[int]]:
    """(modules imported at module top outside ``if TYPE_CHECKING``, line numbers of imports inside functions)."""
    tree = ast.parse(path.read_text())
    top = {n.module or "__init__" for n in tree.body if isinstance(n, ast.ImportFrom) and n.level == 1}
    nested = [
        n.lineno
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(f)
        if isinstance(n, ast.ImportFrom) and n.level == 1
    ]
    return top, nested


def test_internal_imports_sit_at_module_top():
    for path in sorted(PACKAGE.glob("*.py")):
        _, nested = internal_imports(path)
        assert not nested, f"{path.name}: package import inside a function at line(s) {nested}"


def test_no_import_circle():
    graph = {p.stem: internal_imports(p)[0] for p in PACKAGE.glob("*.py")}
    assert graph["engine"] >= {"evaluation", "results"} and "engine" in graph["notebook"]  # the graph is real

    def visit(module: str, path: tuple[str, ...]) -> None:
        for dep in graph.get(module, ()):
            assert dep not in path, " -> ".join((*path, dep))
            visit(dep, (*path, dep))

    for module in graph:
        visit(module, (module,))


def test_inference_sits_below_training():
    """evaluation/tta/predict/loader reach neither engine, results, speedrun, series nor cli, directly or not."""
    graph = {p.stem: internal_imports(p)[0] for p in PACKAGE.glob("*.py")}

    def reach(module: str) -> set[str]:
        seen: set[str] = set()
        todo = [module]
        while todo:
            for dep in graph.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    for name in ("evaluation", "tta", "predict", "loader"):
        assert not reach(name) & {"engine", "results", "speedrun", "series", "cli"}, (name, reach(name))


def test_modules_stay_small():
    """A few hundred lines per module at most (cli and speedrun, the largest, included)."""
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    assert max(sizes.values()) <= 700, sizes
    assert sizes["analysis.py"] <= 200, sizes  # one run only; exploration and comparison have their own modules
