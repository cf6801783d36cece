"""Test accuracy through `ravine train` at each optimizer's registered lr against the old CLI
default of 1e-3 (issue 15, point 3), mini-batch and full batch: the table in
docs/cli-reference.md.

    .venv/bin/python benchmarks/cli_defaults.py                          # the four of the issue
    .venv/bin/python benchmarks/cli_defaults.py --optimizers adam sgd --epochs 3

Each run is `ravine train --dataset DATASET --optimizer NAME [--lr 1e-3] [--batch-size 0]
--epochs N --seed 0 --verbose 0`, in this process; a run the CLI stops (exit 2, e.g. a
non-finite loss) is reported as its first error line. Accuracy, not time, is the result.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re

from ravine.cli import main

OLD_DEFAULT_LR = "1e-3"


def run(argv: list[str]) -> str:
    """The test accuracy ``ravine train ARGV`` prints, or why it stopped."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["train", *argv])
    found = re.search(r"test accuracy (\d\.\d+)", out.getvalue())
    if code == 0 and found:
        return found.group(1)
    first = (err.getvalue().strip().splitlines() or [f"exit {code}"])[0]
    return f"stopped: {first[:70]}"


def table(args: argparse.Namespace) -> None:
    # (lr, full batch): None is the optimizer's registered lr.
    columns = [(None, False), (None, True), (OLD_DEFAULT_LR, False), (OLD_DEFAULT_LR, True)]
    print(
        f"ravine train --dataset {args.dataset} --epochs {args.epochs} --seed 0: test accuracy\n"
        f"{'optimizer':<12s} {'registered lr':>14s} {'registered full':>16s} "
        f"{'lr 1e-3':>10s} {'1e-3 full':>10s}"
    )
    for name in args.optimizers:
        cells = []
        for lr, full in columns:
            argv = ["--dataset", args.dataset, "--optimizer", name, "--epochs", str(args.epochs)]
            argv += ["--seed", "0", "--verbose", "0"]
            argv += ["--lr", lr] if lr else []
            argv += ["--batch-size", "0"] if full else []
            cells.append(run(argv))
        print(f"{name:<12s} {cells[0]:>14s} {cells[1]:>16s} {cells[2]:>10s} {cells[3]:>10s}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--optimizers", nargs="+", default=["adadelta", "adagrad", "lbfgs", "rprop"]
    )
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=5)
    table(parser.parse_args())
