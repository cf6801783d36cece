"""Overhead of ravine.fit against a hand-written PyTorch training loop on the same model and data.

Both sides do the same work per epoch: a fresh random permutation, index the mini-batch, forward,
cross-entropy, zero_grad, backward, optimizer step, and accumulate the loss with .item(). Runs
alternate (fit, loop, fit, loop, ...) so drift in machine load hits both alike; we report the
median and min of each and their ratio. The goal is a ratio within 1.05.

    .venv/bin/python benchmarks/fit_overhead.py                      # MLP 2x500 on MNIST
    .venv/bin/python benchmarks/fit_overhead.py --model logreg --batch-size 32
    .venv/bin/python benchmarks/fit_overhead.py --data loader  # both sides read a DataLoader

With --data loader both sides iterate the same shuffled DataLoader (fit's path for loaders and
any re-iterable of batches) instead of indexing tensors.
"""

from __future__ import annotations

import argparse
import statistics
import time

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
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    splits = data.load(args.dataset)
    x, y = splits.train[0][: args.n].contiguous(), splits.train[1][: args.n].contiguous()
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = models.create(args.model, splits.input_shape, splits.num_classes)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)

    def run_fit() -> float:
        model, opt = fresh()
        t = time.perf_counter()
        if args.data == "loader":
            fit(model, opt, loader, epochs=args.epochs, verbose=0)
        else:
            fit(model, opt, (x, y), batch_size=args.batch_size, epochs=args.epochs, verbose=0)
        return time.perf_counter() - t

    def run_loop() -> float:
        model, opt = fresh()
        t = time.perf_counter()
        if args.data == "loader":
            loader_loop(model, opt, loader, args.epochs)
        else:
            hand_loop(model, opt, x, y, args.batch_size, args.epochs, seed=0)
        return time.perf_counter() - t

    run_fit(), run_loop()  # warm-up: allocator, kernels, lazy imports
    t_fit: list[float] = []
    t_loop: list[float] = []
    for _ in range(args.repeats):
        t_fit.append(run_fit())
        t_loop.append(run_loop())

    steps = args.epochs * -(-len(x) // args.batch_size)
    print(
        f"{args.model} on {args.dataset} ({args.data}): N={len(x)}, batch {args.batch_size}, "
        f"{args.epochs} epoch(s) = {steps} steps, {torch.get_num_threads()} threads, "
        f"{args.repeats} alternating repeats"
    )
    print(f"{'':14}{'median s':>10}{'min s':>10}{'us/step':>10}")
    for name, ts in (("hand loop", t_loop), ("ravine.fit", t_fit)):
        med = statistics.median(ts)
        print(f"{name:14}{med:10.3f}{min(ts):10.3f}{1e6 * med / steps:10.1f}")
    ratio_med = statistics.median(t_fit) / statistics.median(t_loop)
    ratio_min = min(t_fit) / min(t_loop)
    print(f"fit / loop: median {ratio_med:.3f}, min {ratio_min:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
