"""The ``ravine`` command. Each subcommand lives with the package it drives and registers here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

# (name, module path, help): each module defines ``add_arguments(parser)`` and ``run(args) -> int``.
SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("demo", "ravine.demo", "run the main demo (what `make demo` runs)"),
    ("viz", "ravine.viz.cli", "optimizers on 2-D loss surfaces: contours, 3-D, loss, GIF/MP4"),
    ("train", "ravine.train", "train a model on an offline dataset with fit()"),
]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="ravine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_path, help_text in SUBCOMMANDS:
        module = importlib.import_module(module_path)
        p = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(p)
        run: Callable[[argparse.Namespace], int] = module.run
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
