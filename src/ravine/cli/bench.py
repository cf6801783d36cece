"""Fair, budgeted optimizer comparisons: every optimizer gets the same pre-registered trials.

Each (problem, optimizer) is tuned with its one-shot default and K scrambled-Halton trials from
its versioned search space (seed 0); the configuration with the best validation metric (test is
never read to choose) and the default are then re-run with S fresh seeds. Runs go to a store
(SQLite file, or postgresql://... for workers on several machines); kill the command at any
moment and run it again: finished runs are kept, runs in flight resume from their last epoch.

examples:
  ravine bench --quick                                   (a few minutes on 2 cores)
  ravine bench --problems mnist-mlp --optimizers all --seeds 3 --workers 2
  ravine bench --problems mypkg.problems:my_task --epochs 5 --batch-size 64
  ravine bench --store postgresql://user@db/ravine --workers 4   (same command on each machine)
  ravine bench --list                                    (problems and search spaces)
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from typing import Any

QUICK_PROBLEMS = {"digits-mlp": 10, "mnist1d-mlp": 20}  # name -> epochs under --quick
QUICK_OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam")
QUICK_TRIALS, QUICK_SEEDS = 4, 2
SEED_COMPARISON = "sgd,momentum,nag,adagrad,adadelta,rmsprop,adam"


def _positive_int(hi: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer in [1, {hi}], got {text!r}"
            ) from None
        if not 1 <= value <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in [1, {hi}], got {value}")
        return value

    return parse


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer in [0, 10000], got {text!r}"
        ) from None
    if not 0 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 10000], got {value}")
    return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, *, zero: bool = False) -> float:
    """'90', '90s', '20m', '1.5h', '2d' as seconds (> 0, finite; or >= 0 with ``zero``)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([smhd]?)\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 90, 90s, 20m, 1.5h or 2d, got {text!r}"
        )
    seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if not (math.isfinite(seconds) and (seconds > 0 or (zero and seconds == 0))):
        bound = ">= 0" if zero else "> 0"
        raise argparse.ArgumentTypeError(f"expected a duration {bound}, got {text!r}")
    return seconds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problems", help="comma-separated problem names or module:function")
    p.add_argument(
        "--optimizers",
        help=f"comma-separated optimizers, 'all' (every one with a search space) or 'seed' "
        f"({SEED_COMPARISON})",
    )
    p.add_argument(
        "--trials", type=_count, help="K tuning trials per optimizer besides the default (8)"
    )
    p.add_argument("--seeds", type=_positive_int(1000), help="S seeds for each finalist (3)")
    p.add_argument("--workers", type=_positive_int(1024), default=1, help="worker processes")
    p.add_argument(
        "--threads", type=_positive_int(1024), help="torch threads per worker (cores / workers)"
    )
    p.add_argument("--store", default="results.sqlite", help="SQLite file or postgresql://... URL")
    p.add_argument("--study", help="study name (default: a digest of the configuration)")
    p.add_argument(
        "--schedule",
        choices=("constant", "cosine", "warmup_cosine"),
        default="constant",
        help="learning-rate schedule over the run, stepped per batch",
    )
    p.add_argument("--space-version", default=None, help="search space version (the current one)")
    p.add_argument("--qmc-seed", type=int, default=0, help="seed of the trial list")
    p.add_argument(
        "--epochs", type=_positive_int(1_000_000), help="override every problem's epoch budget"
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int(2**31 - 1),
        default=128,
        help="batch size of user problems",
    )
    p.add_argument(
        "--metric", choices=("val_accuracy", "val_loss"), default="val_accuracy",
        help="what selection optimises on user problems",
    )  # fmt: skip
    p.add_argument("--data-dir", help="folder with datasets that need one (cifar10)")
    p.add_argument("--device", help="where runs train: cpu (when not given), cuda, cuda:1, mps")
    p.add_argument("--checkpoint-dir", help="run checkpoints (default: STORE.checkpoints)")
    p.add_argument(
        "--checkpoint-every",
        type=lambda text: parse_duration(text, zero=True),
        default=None,
        metavar="DURATION",
        help="a run checkpoints at an epoch end once this long has passed since its last "
        "checkpoint (default 10s; 0: every epoch); a kill redoes at most that much work",
    )
    p.add_argument(
        "--time-limit",
        type=parse_duration,
        help="stop cleanly after this long, e.g. 90s, 20m, 1.5h",
    )
    p.add_argument(
        "--stale-after", type=parse_duration, default=120.0,
        help="re-claim a run whose heartbeat is older than this (seconds, or 2m)",
    )  # fmt: skip
    p.add_argument("--quick", action="store_true", help="the small demo sweep (a few minutes)")
    p.add_argument("--list", action="store_true", help="print the problems and search spaces")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)


def _list() -> None:
    from ravine.bench import problems, spaces

    print("problems:")
    for pr in problems.PROBLEMS:
        extra = f"  ({pr.note})" if pr.note else ""
        print(
            f"  {pr.name:18} {pr.dataset:14} {pr.model:9} batch {pr.batch_size:4} "
            f"epochs {pr.epochs:3}  {pr.metric}{extra}"
        )
    print(f"search spaces ({spaces.CURRENT_VERSION}):")
    for name, space in spaces.SPACES[spaces.CURRENT_VERSION].items():
        knobs = ", ".join(
            f"{k.name} in [{k.bounds()[0]:.4g}, {k.bounds()[1]:.4g}]"
            + (" (1-x log)" if k.scale == "one_minus_log" else " (log)")
            for k in space.knobs
        )
        print(f"  {name:10} {knobs}")


def build_sweep(args: argparse.Namespace) -> Any:
    """The Sweep the arguments describe (ValueError on a bad name, before anything runs)."""
    from ravine.bench import problems, spaces
    from ravine.bench.runner import Sweep

    version = args.space_version or spaces.CURRENT_VERSION
    if args.quick:
        names = args.problems.split(",") if args.problems else list(QUICK_PROBLEMS)
        optimizers = args.optimizers or ",".join(QUICK_OPTIMIZERS)
        k = QUICK_TRIALS if args.trials is None else args.trials
        seeds = QUICK_SEEDS if args.seeds is None else args.seeds
    else:
        if not args.problems:
            raise ValueError("--problems is required (or --quick); see --list")
        names = args.problems.split(",")
        optimizers = args.optimizers or SEED_COMPARISON
        k = 8 if args.trials is None else args.trials
        seeds = 3 if args.seeds is None else args.seeds
    if optimizers == "all":
        chosen = list(spaces.SPACES[version]) if version in spaces.SPACES else []
    elif optimizers == "seed":
        chosen = SEED_COMPARISON.split(",")
    else:
        chosen = [o.strip().lower() for o in optimizers.split(",") if o.strip()]
    chosen_problems = []
    for name in (n.strip() for n in names if n.strip()):
        if problems.is_user_problem(name):
            pr = problems.user_problem(
                name, batch_size=args.batch_size, epochs=args.epochs or 10, metric=args.metric
            )
        else:
            pr = problems.get(name, data_dir=args.data_dir)
            epochs = args.epochs or (QUICK_PROBLEMS.get(name) if args.quick else None)
            pr = pr.with_epochs(epochs)
        chosen_problems.append(pr)
    return Sweep(
        chosen_problems,
        chosen,
        k=k,
        seeds=seeds,
        schedule=args.schedule,
        space_version=version,
        qmc_seed=args.qmc_seed,
        data_dir=args.data_dir,
        name=args.study,
    )


def summary(store: Any, study: str) -> list[str]:
    """One line per (problem, optimizer): mean +- sd over the final seeds of the last epoch's
    test accuracy (test loss where there is no accuracy), default and tuned, and the tuned hp."""
    import statistics

    runs = store.runs(study)
    last: dict[int, dict[str, Any]] = {}
    for e in store.epochs(study):
        last[e["run_id"]] = e
    groups: dict[tuple[str, str], dict[int, list[float]]] = {}
    hps: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in runs:
        key = (r["problem"], r["optimizer"])
        groups.setdefault(key, {})
        if r["phase"] != "final" or r["status"] != "finished" or r["id"] not in last:
            continue
        e = last[r["id"]]
        value = e["test_accuracy"] if e["test_accuracy"] is not None else e["test_loss"]
        groups[key].setdefault(r["trial_index"], []).append(value)
        hps[(*key, r["trial_index"])] = r["hp"]

    def cell(values: list[float] | None) -> str:
        if not values:
            return f"{'-':>15}"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.3f} +- {sd:.3f}".rjust(15)

    lines = [
        f"{'problem':18} {'optimizer':10} {'default (test)':>15} {'tuned (test)':>15}  tuned hp"
    ]
    for (problem, optimizer), by_trial in groups.items():
        tuned = [i for i in by_trial if i != 0]
        t = tuned[0] if tuned else (0 if 0 in by_trial else None)
        hp = (
            ""
            if t is None
            else ", ".join(
                f"{k}={_short(v)}" for k, v in sorted(hps[(problem, optimizer, t)].items())
            )
            or "(the default)"
        )
        if t is None:
            hp = "(no trial finished)"
        lines.append(
            f"{problem:18} {optimizer:10} {cell(by_trial.get(0))} "
            f"{cell(by_trial.get(t) if t is not None else None)}  {hp}"
        )
    return lines


def _short(v: Any) -> str:
    if isinstance(v, list | tuple):
        return "(" + ", ".join(_short(x) for x in v) + ")"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def run(args: argparse.Namespace) -> int:
    if args.list:
        _list()
        return 0
    from ravine.bench.runner import run_sweep

    try:
        sweep = build_sweep(args)
    except ValueError as e:
        print(f"ravine bench: {e}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    print(
        f"study {sweep.name}: {len(sweep.problems)} problem(s) x {len(sweep.optimizers)} "
        f"optimizer(s), default + {sweep.k} trials each, finalists x {sweep.seeds} seeds; "
        f"store {args.store}",
        file=sys.stderr,
    )
    try:
        counts = run_sweep(
            sweep,
            args.store,
            workers=args.workers,
            checkpoint_root=args.checkpoint_dir,
            time_limit=args.time_limit,
            stale_after=args.stale_after,
            progress=args.progress,
            threads=args.threads,
            device=args.device,
            **(
                {}
                if args.checkpoint_every is None
                else {"checkpoint_every_seconds": args.checkpoint_every}
            ),
        )
    except (ValueError, OSError) as e:
        print(f"ravine bench: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ravine bench: interrupted; run the same command to continue", file=sys.stderr)
        return 130
    elapsed = time.monotonic() - t0
    left = counts["pending"] + counts["running"]
    if not left:
        from ravine.bench.store import open_store

        with open_store(args.store) as store:
            print("\n".join(summary(store, sweep.name)))
    print(
        f"{counts['finished']} finished, {counts['failed']} failed, {left} left "
        f"in {elapsed:.0f}s (store {args.store}, study {sweep.name})"
    )
    if left:
        print(
            "stopped at the time limit: runs in flight stopped at an epoch end; "
            "run the same command to continue",
            file=sys.stderr,
        )
    return 0
