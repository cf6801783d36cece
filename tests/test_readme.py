"""The README's examples work as written.

Its ```python blocks run in order in one fresh interpreter (one session, as a reader would run
them), in an empty temporary folder so the files they write land there. A block that cannot run
in CI must say why in a ``<!-- readme-test: skip REASON -->`` line right above it; there are none
today. The shell commands of the README (indented ``ravine ...`` lines) must parse with ravine's
own argument parser, so a renamed option or subcommand fails here too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ravine.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP = re.compile(r"<!-- readme-test: skip (?P<reason>[^>]*\S)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    code: str
    skip: str | None  # the reason, when marked


def python_blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            i += 1
            body = []
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            assert i < len(lines), f"README.md:{start + 1}: a ```python block is never closed"
            marker = SKIP.match(lines[start - 1]) if start > 0 else None
            blocks.append(Block(start + 1, "\n".join(body) + "\n", marker and marker["reason"]))
        i += 1
    return blocks


# Runs in the child: each block compiled under a name that points at its README line.
RUNNER = """
import json, sys
blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for line, code in blocks:
    print(f"--- README.md:{line}", flush=True)
    exec(compile(code, f"README.md:{line}", "exec"), namespace)
"""


def test_blocks_are_found() -> None:
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 4, "the quickstart lost its examples"
    for block in blocks:
        assert block.skip is None or block.skip.strip(), block


@pytest.mark.timeout(300)
def test_python_blocks_run_as_written(tmp_path: Path) -> None:
    blocks = python_blocks(README.read_text())
    skipped = [f"README.md:{b.line}: {b.skip}" for b in blocks if b.skip]
    to_run = [(b.line, b.code) for b in blocks if not b.skip]
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(to_run),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, (
        f"a README block failed:\n{proc.stdout[-4000:]}{proc.stderr[-6000:]}"
    )
    # What the quickstart says it writes.
    for name in ("runs/digits-mlp/checkpoint.pt", "runs/digits-mlp/history.json"):
        assert (tmp_path / name).is_file(), name
    for name in ("beale.png", "beale.gif", "runs/optimizers.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
    if skipped:
        print("not run:", *skipped, sep="\n  ")


def shell_commands(text: str) -> list[tuple[int, list[str]]]:
    """Indented (code-block) lines that call ``ravine``, without their trailing comments."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("    ravine ") and not line.startswith("    ravine --version"):
            found.append((number, shlex.split(line, comments=True)[1:]))
    return found


def test_shell_commands_parse() -> None:
    commands = shell_commands(README.read_text())
    assert commands, "the README shows no ravine command"
    for number, argv in commands:
        try:
            build_parser(argv[0]).parse_args(argv)
        except SystemExit as exit_:
            pytest.fail(f"README.md:{number}: `ravine {shlex.join(argv)}` does not parse ({exit_})")
