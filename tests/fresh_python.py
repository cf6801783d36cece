"""Code run in a fresh interpreter: a clean module table, for tests of what imports what."""

from __future__ import annotations

import subprocess
import sys


def assert_runs_fresh(code: str, timeout: float = 120) -> None:
    """Run ``code`` with ``python -c`` in a new process; fail with the end of its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
