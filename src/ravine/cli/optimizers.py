"""List every registered optimizer: its name, paper, defaults and when to use it.

examples:
  ravine optimizers
  ravine optimizers --format json > optimizers.json
  ravine optimizers --format markdown
  ravine optimizers adam adadelta         (just these)

The rows are ravine.optimizers(); any name works with `ravine train --optimizer NAME`,
`ravine viz --optimizers NAME:KEY=VALUE` and ravine.create(NAME, params).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from typing import Any

FORMATS = ("table", "json", "markdown")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="only these optimizers (default: all)"
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format")


def _value(v: Any) -> str:
    if isinstance(v, list):
        return "(" + ", ".join(_value(x) for x in v) + ")"
    return repr(v) if isinstance(v, str) else str(v)


def defaults_text(defaults: dict[str, Any]) -> str:
    """``lr=0.001, betas=(0.9, 0.999)``: as they would be typed after ``--hp``."""
    return ", ".join(f"{k}={_value(v)}" for k, v in defaults.items())


def table(rows: list[dict[str, Any]], width: int) -> str:
    """Name and paper on one line, then defaults and "use when" wrapped under them."""
    name_w = min(max(len(r["name"]) for r in rows), 12)  # a longer name pushes its paper along
    indent = "    "
    out = []
    for r in rows:
        out.append(f"{r['name']:<{name_w}s}  {r['paper']}")
        for label, text in (
            ("defaults", defaults_text(r["defaults"])),
            ("use when", r["use_when"]),
        ):
            if text:
                out.append(
                    textwrap.fill(
                        f"{label}: {text}",
                        width=max(width, 60),
                        initial_indent=indent,
                        subsequent_indent=indent + "  ",
                        break_on_hyphens=False,
                    )
                )
    return "\n".join(out)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| name | paper | defaults | use when |", "|---|---|---|---|"]
    for r in rows:
        cells = (f"`{r['name']}`", r["paper"], defaults_text(r["defaults"]), r["use_when"])
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def select(rows: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """The rows named (in the order given); an unknown name is the registry's ValueError."""
    from ravine.optim import registry

    if not names:
        return rows
    by_name = {r["name"]: r for r in rows}
    return [by_name[registry.get(n).name] for n in names]


def run(args: argparse.Namespace) -> int:
    from ravine.optim.registry import optimizers

    try:
        rows = select(optimizers(), args.names)
    except ValueError as e:
        print(f"ravine optimizers: {e}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(rows, indent=1))
    elif args.format == "markdown":
        print(markdown(rows))
    else:
        print(table(rows, shutil.get_terminal_size((100, 24)).columns - 1))
    return 0
