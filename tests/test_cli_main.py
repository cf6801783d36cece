"""The ``ravine`` command itself: --version, ``python -m ravine``, and defaults in every --help."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest
import torch

import ravine
from ravine.cli import SUBCOMMANDS, build_parser, main


def test_version_names_ravine_torch_and_python(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ravine {ravine.__version__} (torch {torch.__version__}, Python 3.")


@pytest.mark.timeout(120)
def test_python_dash_m_ravine_is_the_ravine_command(tmp_path) -> None:
    # One subprocess (an import of torch each); from an empty folder, so nothing of the
    # checkout's working directory is needed.
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [sys.executable, "-m", "ravine", "optimizers", "--format", "json", "adam"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert '"name": "adam"' in run.stdout


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("name", [name for name, _, _ in SUBCOMMANDS])
def test_every_option_of_every_subcommand_shows_its_default(name: str) -> None:
    """An option with a default says it in --help (the one formatter of every subcommand adds
    "(default: ...)"), which needs a help text to hang on."""
    sub = _subparsers(build_parser(name))[name]
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction) or action.default is argparse.SUPPRESS:
            continue
        if action.default is None or action.default is False or action.default == []:
            continue
        flag = action.option_strings[-1] if action.option_strings else action.dest
        assert action.help, f"ravine {name} {flag}: no help text, so --help hides its default"
        helped = sub.formatter_class(prog="ravine")._get_help_string(action) or ""
        assert "default" in helped, f"ravine {name} {flag}: --help hides its default"
