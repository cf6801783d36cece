"""``ravine serve`` in a fresh process, for the tests that need the command itself."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


@contextmanager
def ravine_serve(*extra: str, cache: Path | None = None) -> Iterator[str]:
    """``ravine serve --port 0 *extra`` (one torch thread; its start cache in ``cache``, else
    the test run's folder) for the block: its URL, once printed (at most 90 s)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if cache is not None:
        env["RAVINE_CACHE_DIR"] = str(cache)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ravine", "serve", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 90)
        line = proc.stdout.readline() if ready else "(nothing printed in 90 s)"
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if url is None:
            pytest.fail(f"ravine serve printed {line!r}")
        yield url.group(0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def kept_answers(path: Path, routes: int = 1) -> dict[str, Any]:
    """A start cache file's answers, once it holds ``routes`` of them (a server keeps an answer
    just after sending it; at most 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.exists():
            answers: dict[str, Any] = json.loads(path.read_text())["answers"]
            if len(answers) >= routes:
                return answers
        time.sleep(0.02)
    pytest.fail(f"{path} did not hold {routes} answers in 30 s")
