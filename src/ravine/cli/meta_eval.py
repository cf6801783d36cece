"""Evaluate learned optimizers against SGD, NAG, RMSprop and Adam tuned on one lr grid.

examples:
  ravine meta-eval --task quadratic                          (bundled L2L vs the baselines)
  ravine meta-eval --task quadratic --learned l2l=l2l-q1.pt l2l=l2l-q2.pt --out-dir q
  ravine meta-eval --task digits --learned learned_mlp=digits l2l=digits --test-problems 100
  ravine meta-eval --task mnist --steps 200 --hidden 40 --learned l2l=l2l-mnist.pt

--learned takes NAME=WEIGHTS pairs: a registered learned optimizer ("l2l", "learned_mlp") and
a bundled weights name or a file from `ravine meta-train` (default: the bundled weights named
like the task, for each learned optimizer that has them). Baselines are tuned on their own
problems, never on the test problems. Writes OUT_DIR/<task>.png (loss vs step, mean and a band
of one standard error) and OUT_DIR/<task>.md (the table), and prints the table; a variant's
files are named after it (mnist-hidden40.md, mnist-steps200.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ravine.learned import evaluate, weights
from ravine.learned.tasks import TASKS
from ravine.optim import registry
from ravine.paths import check_output_path

LEARNED = {"l2l": "l2l", "learned_mlp": "mlp"}  # registry name -> weights kind


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=TASKS, default="quadratic", help="the optimizee problems")
    parser.add_argument("--learned", nargs="+", metavar="NAME=WEIGHTS")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run")
    parser.add_argument("--test-problems", type=int, default=1, help="(quadratic: 128 runs each)")
    parser.add_argument(
        "--tune-problems", type=int, default=1, help="problems the baselines' lr is tuned on"
    )
    parser.add_argument(
        "--baselines",
        nargs="+",
        default=list(evaluate.BASELINES),
        help="classic optimizers, each tuned on the lr grid",
    )
    parser.add_argument("--hidden", type=int, nargs="+", help="optimizee hidden layers (MLP)")
    parser.add_argument("--activation", choices=("sigmoid", "relu"))
    parser.add_argument("--out-dir", default="meta-eval", help="folder for the table and plot")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")


def _learned(args: argparse.Namespace) -> dict[str, object]:
    pairs = args.learned
    if not pairs:
        pairs = [f"{n}={args.task}" for n, k in LEARNED.items() if args.task in weights.bundled(k)]
        if not pairs:
            raise ValueError(f"no bundled weights for task {args.task!r}: pass --learned")
    out: dict[str, object] = {}
    for pair in pairs:
        name, sep, source = pair.partition("=")
        if not sep or name not in LEARNED:
            raise ValueError(
                f"Invalid --learned: {pair!r} (expected NAME=WEIGHTS with NAME one of "
                f"{', '.join(LEARNED)})"
            )
        weights.load_network(source, LEARNED[name])  # checked now, not after the tuning
        label = name if source == args.task else f"{name}[{Path(source).stem}]"
        out[label] = lambda ps, n=name, s=source: registry.create(n, ps, weights=s)
    return out


def run(args: argparse.Namespace) -> int:
    try:
        for flag in ("steps", "test_problems", "tune_problems", "threads"):
            if getattr(args, flag) < 1:
                raise ValueError(
                    f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}"
                )
        unknown = [b for b in args.baselines if b not in registry.names()]
        if unknown:
            raise ValueError(f"Invalid --baselines: {', '.join(unknown)} (not registered)")
        learned = _learned(args)
        out_dir = check_output_path(args.out_dir, "--out-dir", directory=True)
    except ValueError as e:
        raise SystemExit(f"ravine meta-eval: {e}") from None
    torch.set_num_threads(args.threads)
    options: dict[str, object] = {}
    if args.hidden is not None:
        options["hidden"] = list(args.hidden)
    if args.activation is not None:
        options["activation"] = args.activation
    if args.task != "quadratic":
        options["split"] = "eval"  # meta-training drew from the other half
    result = evaluate.meta_evaluate(
        learned,  # type: ignore[arg-type]
        args.task,
        task_options=options,
        steps=args.steps,
        test_problems=args.test_problems,
        tune_problems=args.tune_problems,
        baselines=args.baselines,
        log=lambda line: print(line, flush=True),
    )
    table = result.table()
    print(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [f"{k}{v}" for k, v in sorted(options.items()) if k != "split"]
    if args.steps != 100:  # the paper's horizon keeps the plain name
        parts.append(f"steps{args.steps}")
    stem = "-".join([args.task, *parts])
    stem = stem.replace(" ", "").replace("[", "").replace("]", "").replace(",", "x")
    (out_dir / f"{stem}.md").write_text("```\n" + table + "\n```\n")
    evaluate.plot(result, str(out_dir / f"{stem}.png"))
    print(f"wrote {out_dir / (stem + '.md')} and {out_dir / (stem + '.png')}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="ravine meta-eval", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
