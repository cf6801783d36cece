"""The demo `make demo` runs: every optimizer on Rosenbrock, a short MNIST-1D training with each,
and the gallery of trajectories on loss surfaces (PNG and GIF under --out)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ravine.demo import FULL_BATCH_ONLY, mnist1d_table, rosenbrock_table
from ravine.optim import catalog


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default="out/demo", help="folder for the gallery (default: %(default)s)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps and epochs (smoke run)")
    parser.add_argument("--no-gallery", action="store_true", help="skip the trajectory gallery")


def run(args: argparse.Namespace) -> int:
    width = max(len(n) for n in catalog.names())
    steps = 1000 if args.quick else 5000
    print(f"== Rosenbrock from (-1.5, 2), {steps} steps (minimum 0 at (1, 1)) ==")
    print(f"{'optimizer':<{width}s} {'final loss':>10s} {'|x - x*|':>9s}  hyperparameters")
    for name, hp, loss, dist in rosenbrock_table(steps):
        print(f"{name:<{width}s} {loss:10.2e} {dist:9.2e}  {hp}")

    epochs = 3 if args.quick else 10
    print(f"\n== MNIST-1D, MLP 2x500, mini-batch 100, {epochs} epochs ==")
    print(f"(full-batch methods {', '.join(FULL_BATCH_ONLY)} are left out of mini-batch training)")
    print(
        f"{'optimizer':<{width}s} {'train loss':>10s} {'val acc':>7s} {'test acc':>8s} "
        f"{'time':>6s}  hyperparameters"
    )
    for name, hp, loss, val_acc, test_acc, seconds in mnist1d_table(epochs, args.quick):
        print(f"{name:<{width}s} {loss:10.4f} {val_acc:7.3f} {test_acc:8.3f} {seconds:5.1f}s  {hp}")

    if not args.no_gallery:
        from ravine.viz.gallery import make_gallery

        out = Path(args.out)
        print(f"\n== Gallery of trajectories -> {out} ==")
        start = time.perf_counter()
        paths = make_gallery(out, quick=args.quick, verbose=True)
        print(f"{len(paths)} files in {time.perf_counter() - start:.1f} s")
    return 0
