"""The ``ravine`` command (also ``python -m ravine``). Each subcommand lives in its own module,
imported only when chosen."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

# (name, module path, help): each module defines ``add_arguments(parser)`` and ``run(args) -> int``.
SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("demo", "ravine.cli.demo", "run the main demo (what `make demo` runs)"),
    ("viz", "ravine.cli.viz", "optimizers on 2-D loss surfaces: contours, 3-D, loss, GIF/MP4"),
    ("train", "ravine.cli.train", "train a model on an offline dataset with fit()"),
    ("parallel", "ravine.cli.parallel", "Hogwild!, Downpour, EASGD, all-reduce with processes"),
    ("serve", "ravine.cli.serve", "the playground: a local page where the optimizers race"),
    ("bench", "ravine.cli.bench", "fair optimizer comparisons: same trials, seeds, one store"),
    ("meta-train", "ravine.cli.meta_train", "meta-train a learned optimizer (L2L LSTM, MLP)"),
    ("meta-eval", "ravine.cli.meta_eval", "learned optimizers vs tuned SGD/NAG/RMSprop/Adam"),
    ("report", "ravine.cli.report", "a bench store's report: Markdown + self-contained HTML"),
    ("recommend", "ravine.cli.recommend", "which optimizer for your problem, within a budget"),
    ("optimizers", "ravine.cli.optimizers", "every optimizer: paper, defaults, when to use it"),
]


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Every subcommand's --help: examples kept as written, each option's default shown.

    A default of None or False (an optional value, an off switch) is not shown: the option's help
    says what leaving it out means.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        default = action.default
        # Identity, not ==: a default of 0 or 0.0 is a value worth showing.
        unset = default is None or default is False or default is argparse.SUPPRESS
        if unset or default == [] or "default" in help_text:
            return help_text
        return super()._get_help_string(action)


def _version() -> str:
    import platform

    import torch

    import ravine

    python = platform.python_version()
    return f"ravine {ravine.__version__} (torch {torch.__version__}, Python {python})"


class _VersionAction(argparse.Action):
    """``--version``: the string is made when asked for, since it imports torch (1-2 s), which
    ``ravine serve`` must not wait for before it prints its address."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "show the version (ravine, torch, Python) and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(_version())  # stdout, as argparse's own version action writes it
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (all of them when None).

    ``ravine train --help`` must not pay for matplotlib, which ``ravine viz`` needs.
    """
    parser = argparse.ArgumentParser(prog="ravine", description=__doc__)
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_path, help_text in SUBCOMMANDS:
        if command is not None and name != command:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_path)
        p = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(p)
        p.formatter_class = HelpFormatter  # after: every subcommand's --help shows its defaults
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
