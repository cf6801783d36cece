"""The ``ravine`` command. Each subcommand lives in its own module, imported only when chosen."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# (name, module path, help): each module defines ``add_arguments(parser)`` and ``run(args) -> int``.
SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("demo", "ravine.cli.demo", "run the main demo (what `make demo` runs)"),
    ("viz", "ravine.cli.viz", "optimizers on 2-D loss surfaces: contours, 3-D, loss, GIF/MP4"),
    ("train", "ravine.cli.train", "train a model on an offline dataset with fit()"),
    ("serve", "ravine.cli.serve", "the playground: a local page where the optimizers race"),
    ("bench", "ravine.cli.bench", "fair optimizer comparisons: same trials, seeds, one store"),
    ("meta-train", "ravine.cli.meta_train", "meta-train a learned optimizer (L2L LSTM, MLP)"),
    ("meta-eval", "ravine.cli.meta_eval", "learned optimizers vs tuned SGD/NAG/RMSprop/Adam"),
]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (all of them when None).

    ``ravine train --help`` must not pay for matplotlib, which ``ravine viz`` needs.
    """
    parser = argparse.ArgumentParser(prog="ravine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_path, help_text in SUBCOMMANDS:
        if command is not None and name != command:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_path)
        p = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(p)
        run: Callable[[argparse.Namespace], int] = module.run
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = [name for name, _, _ in SUBCOMMANDS]
    # The subcommand is the first argument that is not an option (ravine takes none of its own
    # but -h); without one, no module is imported and argparse prints the usage.
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in names else "")
    args = parser.parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
