"""Overhead of ravine.fit against a hand-written PyTorch training loop on the same model and data.

Both sides do the same work per epoch: a fresh random permutation, index the mini-batch, forward,
cross-entropy, zero_grad, backward, optimizer step, and accumulate the loss with .item(). Runs
alternate (fit, loop, fit, loop, ...) so drift in machine load hits both alike; we report the
median and min of each and their ratio. The goal is a ratio within 1.05.

    .venv/bin/python benchmarks/fit_overhead.py                      # MLP 2x500 on MNIST
    .venv/bin/python benchmarks/fit_overhead.py --model logreg --batch-size 32
    .venv/bin/python benchmarks/fit_overhead.py --data loader  # both sides read a DataLoader
    .venv/bin/python benchmarks/fit_overhead.py --threads 1 --clock cpu  # on a loaded machine

With --data loader both sides iterate the same shuffled DataLoader (fit's path for loaders and
any re-iterable of batches) instead of indexing tensors. --baseline FILE times a third side: the
fit of another version of train.py (e.g. ``git show REV:src/ravine/train.py > /tmp/old.py``),
loaded beside this one, so a change to fit is measured before/after under the same load.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ravine import data, fit, models


def hand_loop(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    epochs: int,
    seed: int,
) -> float:
    g = torch.Generator().manual_seed(seed)
    n = len(x)
    total = 0.0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        model.train()
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
    return total / n


def loader_loop(
    model: nn.Module, opt: torch.optim.Optimizer, loader: DataLoader, epochs: int
) -> float:
    total, n = 0.0, 0
    for _ in range(epochs):
        model.train()
        total, n = 0.0, 0
        for xb, yb in loader:
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
            n += len(yb)
    return total / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="mnist", choices=sorted(data.DATASETS))
    p.add_argument("--model", default="mlp", choices=sorted(models.MODELS))
    p.add_argument("--n", type=int, default=10_000, help="training examples used")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--data", default="tensors", choices=("tensors", "loader"))
    p.add_argument("--baseline", metavar="FILE", help="another train.py whose fit is timed too")
    p.add_argument(
        "--clock",
        default="wall",
        choices=("wall", "cpu"),
        help="wall seconds, or this thread's CPU seconds (steadier when other jobs load the "
        "machine; use with --threads 1)",
    )
    args = p.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    if args.threads:
        torch.set_num_threads(args.threads)

    splits = data.load(args.dataset)
    x, y = splits.train[0][: args.n].contiguous(), splits.train[1][: args.n].contiguous()
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = models.create(args.model, splits.input_shape, splits.num_classes)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)

    def timed_fit(fit_fn: Callable[..., object]) -> Callable[[], float]:
        quiet = {"verbose": 0} if "verbose" in inspect.signature(fit_fn).parameters else {}
        quiet = quiet or {"progress": False}  # a version from before verbose=

        def run() -> float:
            model, opt = fresh()
            t = clock()
            if args.data == "loader":
                fit_fn(model, opt, loader, epochs=args.epochs, **quiet)
            else:
                fit_fn(model, opt, (x, y), batch_size=args.batch_size, epochs=args.epochs, **quiet)
            return clock() - t

        return run

    sides: dict[str, Callable[[], float]] = {"ravine.fit": timed_fit(fit)}
    if args.baseline:
        spec = importlib.util.spec_from_file_location("baseline_train", args.baseline)
        assert spec is not None and spec.loader is not None
        baseline = importlib.util.module_from_spec(spec)
        sys.modules["baseline_train"] = baseline
        spec.loader.exec_module(baseline)
        sides["baseline fit"] = timed_fit(baseline.fit)

    def run_loop() -> float:
        model, opt = fresh()
        t = clock()
        if args.data == "loader":
            loader_loop(model, opt, loader, args.epochs)
        else:
            hand_loop(model, opt, x, y, args.batch_size, args.epochs, seed=0)
        return clock() - t

    sides["hand loop"] = run_loop
    times: dict[str, list[float]] = {name: [] for name in sides}
    for run in sides.values():
        run()  # warm-up: allocator, kernels, lazy imports
    for _ in range(args.repeats):
        for name, run in sides.items():
            times[name].append(run())

    steps = args.epochs * -(-len(x) // args.batch_size)
    print(
        f"{args.model} on {args.dataset} ({args.data}): N={len(x)}, batch {args.batch_size}, "
        f"{args.epochs} epoch(s) = {steps} steps, {torch.get_num_threads()} threads, "
        f"{args.repeats} alternating repeats, {args.clock} clock"
    )
    print(f"{'':14}{'median s':>10}{'min s':>10}{'us/step':>10}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:14}{med:10.3f}{min(ts):10.3f}{1e6 * med / steps:10.1f}")
    for name in [n for n in times if n != "hand loop"]:
        ratio_med = statistics.median(times[name]) / statistics.median(times["hand loop"])
        ratio_min = min(times[name]) / min(times["hand loop"])
        print(f"{name} / loop: median {ratio_med:.3f}, min {ratio_min:.3f} (goal <= 1.05)")
    if args.baseline:
        ratio_med = statistics.median(times["ravine.fit"]) / statistics.median(
            times["baseline fit"]
        )
        ratio_min = min(times["ravine.fit"]) / min(times["baseline fit"])
        print(f"ravine.fit / baseline: median {ratio_med:.3f}, min {ratio_min:.3f}")


if __name__ == "__main__":
    main()
