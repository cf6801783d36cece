"""Checks of what imports what: code run in a fresh interpreter (a clean module table), and the
imports a module shows type checkers under ``if TYPE_CHECKING:`` (its lazy names' table)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


def assert_runs_fresh(code: str, timeout: float = 120) -> None:
    """Run ``code`` with ``python -c`` in a new process; fail with the end of its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]


def type_checking_imports(source: str | Path) -> list[tuple[str, str, str]]:
    """``(module, name, bound name)`` for each ``from module import name [as bound]`` under an
    ``if TYPE_CHECKING:`` of the file ``source``; any other statement there fails the check."""
    found = []
    for node in ast.walk(ast.parse(Path(source).read_text())):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module, ast.unparse(imp)
                found += [(imp.module, a.name, a.asname or a.name) for a in imp.names]
    return found
