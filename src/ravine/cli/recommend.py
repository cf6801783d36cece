"""Which optimizer for your problem: a budgeted comparison with successive halving.

Each optimizer gets the same number of trials from its search space (its default plus K
scrambled-Halton points, K chosen to fit --budget); the best third on validation survives each
rung; every optimizer's winner is re-run with --seeds seeds. Prints the ranking with intervals,
a portfolio of three configurations, the command that reruns this exact plan without a budget,
and the line of Python that builds the winner. Adaptive pruning is used here (unlike `ravine
bench`, whose trials all run to the end).

Your problem is a function returning (model, loss_fn, (train, val, test)), each split an
(inputs, targets) pair of tensors or a TensorDataset, named as module:function (importable from
the current directory or PYTHONPATH); or a problem of `ravine bench --list`.

examples:
  ravine recommend mypkg.problems:my_task --budget 20m
  ravine recommend digits-mlp --budget 5m --optimizers sgd,momentum,adam
  ravine recommend mypkg.problems:my_task --trials 8 --rungs 2,5,10 --seeds 3   (a fixed plan)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

from ravine.cli.bench import parse_duration


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 2,5,10, got {text!r}") from None
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ravine.bench.recommend import DEFAULT_OPTIMIZERS

    p.add_argument("problem", help="module:function, or a problem name of `ravine bench --list`")
    p.add_argument("--budget", type=parse_duration, help="time budget, e.g. 90s, 20m, 1h")
    p.add_argument("--optimizers", default=",".join(DEFAULT_OPTIMIZERS), help="comma-separated")
    p.add_argument("--epochs", type=_positive, default=10, help="epochs of a full run")
    p.add_argument("--batch-size", type=_positive, default=128, help="examples per step")
    p.add_argument(
        "--metric",
        choices=("val_accuracy", "val_loss"),
        default="val_accuracy",
        help="what selection optimises (on validation only)",
    )
    p.add_argument("--seeds", type=_positive, default=3, help="final runs per optimizer (>= 2)")
    p.add_argument("--trials", type=int, help="K, with --rungs: a fixed plan instead of --budget")
    p.add_argument("--rungs", type=_int_list, help="epochs of each rung, e.g. 2,5,10")
    p.add_argument("--out", default="recommend.json", help="where the full results are written")
    p.add_argument("--work-dir", help="checkpoints of the runs (default: a temporary folder)")


def _plan(args: argparse.Namespace, optimizers: tuple[str, ...]) -> Any:
    from ravine.bench.recommend import Plan, measure_epoch_seconds, plan_for_budget

    if args.trials is not None or args.rungs is not None:
        if args.trials is None or args.rungs is None or args.budget is not None:
            raise ValueError("a fixed plan needs both --trials and --rungs, and no --budget")
        return Plan(args.problem, optimizers, args.trials, args.rungs, args.seeds,
                    args.batch_size, args.metric)  # fmt: skip
    if args.budget is None:
        raise ValueError("give --budget (e.g. --budget 20m), or a fixed plan: --trials and --rungs")
    epoch = measure_epoch_seconds(args.problem, args.batch_size, args.metric)
    print(f"one epoch of the default SGD run took {epoch:.2f} s")
    return plan_for_budget(
        args.problem, optimizers, budget=args.budget, epoch_seconds=epoch, epochs=args.epochs,
        seeds=args.seeds, batch_size=args.batch_size, metric=args.metric,
    )  # fmt: skip


def _fmt(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.4f}"


def run(args: argparse.Namespace) -> int:
    from ravine.bench.recommend import recommend

    optimizers = tuple(o.strip() for o in args.optimizers.split(",") if o.strip())
    start = time.time()
    try:
        plan = _plan(args, optimizers)
    except (ValueError, TypeError, ImportError) as e:
        print(f"ravine recommend: error: {e}", file=sys.stderr)
        return 2
    print(f"plan: {len(optimizers)} optimizers x {plan.trials + 1} configurations, rungs "
          f"{plan.rungs} epochs, {plan.seeds} seeds; method: successive halving (adaptive: "
          "trials are stopped early on validation)")  # fmt: skip
    deadline = start + args.budget if args.budget is not None else None
    result = recommend(plan, deadline=deadline, work_dir=args.work_dir)
    metric = plan.metric.replace("val_", "")
    print(f"\nranking by validation {metric} (mean over {plan.seeds} seeds, 95% bootstrap "
          "interval; 'tie' = not distinguishable from the best):")  # fmt: skip
    print(f"  {'optimizer':<10} {'val':>8} {'interval':>19} {'test':>8}  vs best  hyperparameters")
    for r in result.ranking:
        tests = [t for t in r.test if math.isfinite(t)]
        test = sum(tests) / len(tests) if tests else math.nan
        interval = f"[{_fmt(r.lower)}, {_fmt(r.upper)}]"
        hp = r.hp_text()
        print(f"  {r.optimizer:<10} {_fmt(r.mean):>8} {interval:>19} {_fmt(test):>8}  "
              f"{r.vs_best:<7}  {hp}")  # fmt: skip
    if result.portfolio:
        print("\nportfolio of 3 configurations to try first (best of the three, seed by seed):")
        for o, trial in result.portfolio:
            print(f"  {o} trial {trial}")
    if result.stopped_early:
        print(f"\nnote: {result.stopped_early}; the ranking uses what finished")
    if result.ranking:
        print(f"\nthe winner in Python: {result.ranking[0].python()}")
    print(f"rerun this plan: {plan.command()}")
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(result.to_json())
    tmp.replace(out)
    print(f"wrote {out} ({result.seconds:.0f} s)")
    return 0
