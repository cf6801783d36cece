"""ravine.optim's modules import without cycles: each alone in a fresh interpreter, and the
graph of their imports (module level and inside functions) has no cycle."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ravine.optim

OPTIM = Path(ravine.optim.__file__).parent
MODULES = sorted(f"ravine.optim.{p.stem}" for p in OPTIM.glob("*.py") if p.stem != "__init__")

# Imports inside a function that close a cycle, each with its reason. Wrappers build an inner
# optimizer from a registry name at call time, and the registry's catalog lists the wrappers.
KNOWN_LAZY = {("ravine.optim.wrappers", "ravine.optim.registry")}


def _imports(module: str) -> dict[str, bool]:
    """The ravine.optim modules ``module`` imports, each mapped to whether only lazily (inside
    a function); imports under ``if TYPE_CHECKING:`` do not count."""
    tree = ast.parse((OPTIM / f"{module.rsplit('.', 1)[1]}.py").read_text())
    found: dict[str, bool] = {}

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            lazy = True
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name in MODULES and name != module:
                found[name] = found.get(name, True) and lazy
        for child in ast.iter_child_nodes(node):
            visit(child, lazy)

    visit(tree, False)
    return found


def test_the_module_graph_has_no_cycle_and_base_imports_nothing_lazily() -> None:
    graph = {m: _imports(m) for m in MODULES}
    assert not any(graph["ravine.optim.base"].values()), graph["ravine.optim.base"]
    lazy = {(m, d) for m, deps in graph.items() for d, is_lazy in deps.items() if is_lazy}
    assert lazy <= KNOWN_LAZY, f"new imports inside functions: {lazy - KNOWN_LAZY}"
    edges = {m: [d for d in deps if (m, d) not in KNOWN_LAZY] for m, deps in graph.items()}
    done: set[str] = set()

    def walk(m: str, path: list[str]) -> None:
        if m in path:
            pytest.fail("import cycle: " + " -> ".join([*path[path.index(m) :], m]))
        if m in done:
            return
        for d in edges[m]:
            walk(d, [*path, m])
        done.add(m)

    for m in MODULES:
        walk(m, [])
    # the new modules stay below the base class
    for low in ("transforms", "guard", "engines", "hyperparameters"):
        assert "ravine.optim.base" not in graph[f"ravine.optim.{low}"]


def test_each_module_imports_alone_in_a_fresh_interpreter() -> None:
    # In a fresh interpreter, each module is imported first with no ravine module loaded (they
    # are dropped from sys.modules between imports; torch stays, so that one interpreter does,
    # not one a module at ~4 s each): an import order that hides a cycle in one process shows.
    script = (
        "import importlib, sys, torch\n"
        f"for module in {MODULES!r}:\n"
        "    for name in [n for n in sys.modules if n.split('.')[0] == 'ravine']:\n"
        "        del sys.modules[name]\n"
        "    try:\n"
        "        importlib.import_module(module)\n"
        "    except Exception as exc:\n"
        "        sys.exit(f'import {module} failed: {type(exc).__name__}: {exc}')\n"
    )
    src = str(Path(ravine.__file__).parent.parent)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": src},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_public_import_paths_still_work() -> None:
    import ravine
    from ravine.optim.base import GradientTransform, NonFiniteGradientError, overflow_limit
    from ravine.optim.transforms import GradientNoise
    from ravine.optim.wrappers import GradientNoise as FromWrappers

    assert ravine.GradientNoise is ravine.optim.GradientNoise is FromWrappers is GradientNoise
    assert ravine.optim.GradientTransform is GradientTransform
    assert ravine.optim.NonFiniteGradientError is NonFiniteGradientError
    assert callable(overflow_limit)
