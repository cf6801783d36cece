"""Meta-train a learned optimizer (truncated backprop through unrolled optimization).

examples:
  ravine meta-train --task quadratic                   (the bundled L2L weights, bit for bit)
  ravine meta-train --task quadratic --seed 1 --out l2l-q1.pt
  ravine meta-train --task quadratic --iterations 150 --eval-every 25 --meta-lr-final 0.1 \
      --out l2l-q150.pt                 (the quadratic figures of docs/learned.md)
  ravine meta-train --kind mlp --task digits --iterations 200 --out mlp-digits.pt
  ravine meta-train --task mnist --iterations 100 --out l2l-mnist.pt   (slow: minutes per 10)

Without --iterations/--meta-lr/... a (kind, task) that has bundled weights runs their preset
configuration; the others start from the defaults of ravine.learned.meta.MetaConfig. The run
checkpoints to OUT.ckpt (atomically): killed, it resumes where it stopped when the same command
runs again, ending with the same bits. --check-bundled compares the result with the bundled
weights of that kind and task: exit 0 if identical byte for byte, 1 if not, 3 if the bundled
file was computed on another kind of CPU or torch build (bit-identity is promised only on the same).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from ravine.learned import meta, weights
from ravine.learned.tasks import TASKS
from ravine.paths import check_output_path

_OVERRIDES = (
    "iterations",
    "horizon",
    "unroll",
    "meta_lr",
    "meta_lr_final",
    "meta_lr_warmup",
    "eval_every",
    "eval_problems",
    "second_order",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kind",
        choices=("l2l", "mlp"),
        default="l2l",
        help="the paper's coordinatewise LSTM, or the per-parameter MLP",
    )
    parser.add_argument("--task", choices=TASKS, default="quadratic", help="what it learns on")
    parser.add_argument("--seed", type=int, default=0, help="meta-training seed")
    parser.add_argument("--iterations", type=int, help="meta-iterations (one problem each)")
    parser.add_argument("--horizon", type=int, help="optimizee steps per problem (100)")
    parser.add_argument("--unroll", type=int, help="steps per truncated backprop (20)")
    parser.add_argument("--meta-lr", type=float, help="Adam's lr on the meta-weights")
    parser.add_argument(
        "--meta-lr-final",
        type=float,
        help="the meta-lr decays (cosine) to meta-lr times this at the end (1: constant)",
    )
    parser.add_argument(
        "--meta-lr-warmup",
        type=int,
        help="iterations over which the meta-lr rises linearly from meta-lr / N (0: none)",
    )
    parser.add_argument(
        "--second-order",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="differentiate through the optimizee's gradients (the digits preset does); "
        "--no-second-order treats them as constants, as the paper does",
    )
    parser.add_argument("--eval-every", type=int, help="held-out scoring interval")
    parser.add_argument("--eval-problems", type=int, help="held-out problems per scoring")
    parser.add_argument("--hidden", type=int, nargs="+", help="optimizee hidden layers (MLP)")
    parser.add_argument("--activation", choices=("sigmoid", "relu"), help="optimizee activation")
    parser.add_argument("--out", help="weights file to write (default: <kind>-<task>-<seed>.pt)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--check-bundled", action="store_true")
    parser.add_argument("--quiet", action="store_true")


def config_from(args: argparse.Namespace) -> meta.MetaConfig:
    """The run's configuration: the preset (if any) or the defaults, then the flags given."""
    base = meta.PRESETS.get((args.kind, args.task))
    config = base or meta.MetaConfig(kind=args.kind, task=args.task)
    changes = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
    options = dict(config.task_options)
    if args.hidden is not None:
        options["hidden"] = list(args.hidden)
    if args.activation is not None:
        options["activation"] = args.activation
    return dataclasses.replace(config, seed=args.seed, task_options=options, **changes)


def run(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise SystemExit(f"ravine meta-train: --threads must be >= 1, got {args.threads}")
    try:
        config = config_from(args)
        out = Path(args.out or f"{args.kind}-{args.task}-{args.seed}.pt")
        check_output_path(out, "--out")
    except ValueError as e:
        raise SystemExit(f"ravine meta-train: {e}") from None
    torch.set_num_threads(args.threads)
    log = None if args.quiet else (lambda line: print(line, flush=True))
    result = meta.meta_train(config, out, log=log)
    score = result.record["evaluation"]["held_out_summed_loss"]
    print(
        f"wrote {out} (held-out summed loss {score:.4g}, {result.seconds:.0f} s of "
        f"meta-training, {result.skipped} skipped updates)"
    )
    if args.check_bundled:
        return check_bundled(out, weights.BUNDLED_DIR / args.kind / f"{args.task}.pt")
    return 0


# --check-bundled's exit status when the files differ but the bundled one was computed on another
# kind of CPU or torch build (or before that was recorded): bit-identity is not promised there.
OTHER_ENVIRONMENT = 3


def check_bundled(out: Path, bundled: Path) -> int:
    """0 if ``out`` equals the bundled file byte for byte; 1 if it differs although both were
    computed in the same environment; OTHER_ENVIRONMENT if the bundled file comes from another
    one (the held-out scores are printed side by side)."""
    if not bundled.is_file():
        print(f"no bundled file {bundled} to compare with")
        return 1
    if bundled.read_bytes() == out.read_bytes():
        print(f"identical to the bundled {bundled}")
        return 0
    ours = torch.load(out, map_location="cpu", weights_only=True)
    theirs = torch.load(bundled, map_location="cpu", weights_only=True)
    here, there = ours.get("made_on"), theirs.get("made_on")
    if here is not None and here == there:
        print(f"DIFFERS from the bundled {bundled} (same environment: {_describe(here)})")
        return 1
    score = ours["evaluation"].get("held_out_summed_loss")
    bundled_score = theirs["evaluation"].get("held_out_summed_loss")
    print(
        f"DIFFERS from the bundled {bundled}, which was computed on "
        f"{_describe(there) if there else 'an unrecorded machine'}; this one on "
        f"{_describe(here)}. Bit-identity holds only on the same kind of CPU and torch build. "
        f"Held-out summed loss: {score:.4g} here, {bundled_score:.4g} bundled."
    )
    return OTHER_ENVIRONMENT


def _describe(env: dict) -> str:
    cpu = f"{env.get('cpu')} ({env.get('cpu_capability')}, {env.get('machine')})"
    return f"{cpu}, torch {env.get('torch')}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="ravine meta-train", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
