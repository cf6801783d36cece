"""The demo `make demo` runs: every optimizer on Rosenbrock; the bench lab's quick sweep (SGD,
Momentum, Adagrad, RMSprop and Adam on MNIST-1D and digits, each tuned with the same trials and
chosen on validation) with its report; the gallery of trajectories on loss surfaces (PNG and
GIF). Everything goes under --out; running it again continues an interrupted sweep."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from ravine.demo import bench_quick, rosenbrock_table
from ravine.optim import catalog


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default="out/demo", help="folder for the gallery (default: %(default)s)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps and epochs (smoke run)")
    parser.add_argument("--no-gallery", action="store_true", help="skip the trajectory gallery")
    parser.add_argument("--no-bench", action="store_true", help="skip the bench lab's quick sweep")


def run(args: argparse.Namespace) -> int:
    width = max(len(n) for n in catalog.names())
    steps = 1000 if args.quick else 5000
    print(f"== Rosenbrock from (-1.5, 2), {steps} steps (minimum 0 at (1, 1)) ==")
    print(f"{'optimizer':<{width}s} {'final loss':>10s} {'|x - x*|':>9s}  hyperparameters")
    for name, hp, loss, dist in rosenbrock_table(steps):
        print(f"{name:<{width}s} {loss:10.2e} {dist:9.2e}  {hp}")

    out = Path(args.out)
    if not args.no_bench:
        print(f"\n== The bench lab, quick sweep -> {out / 'bench.sqlite'} ==", flush=True)
        code, store, files = bench_quick(out, workers=max(1, min(2, os.cpu_count() or 1)))
        if code != 0:
            return code
        print(f"report: {files.html} (self-contained) and {files.markdown}")
        print(f"rerun or extend: ravine report {store} --out {out / 'bench-report'}")

    if not args.no_gallery:
        from ravine.viz.gallery import make_gallery

        print(f"\n== Gallery of trajectories -> {out} ==")
        start = time.perf_counter()
        paths = make_gallery(out, quick=args.quick, verbose=True)
        print(f"{len(paths)} files in {time.perf_counter() - start:.1f} s")
    return 0
