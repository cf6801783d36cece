"""How fast ravine.viz is: the whole gallery, and the per-step cost of recording a trajectory.

    .venv/bin/python benchmarks/viz_speed.py      # gallery in a fresh process, then per-step table
    .venv/bin/python benchmarks/viz_speed.py --steps 5000 --no-gallery

Per step, three loops over the same optimizer on Beale, in float64:
  closure   forward + backward only (what any optimizer step must pay for the surface)
  bare      ``opt.step(closure)`` in a plain Python loop, nothing recorded
  ravine    ``ravine.viz.trajectory.run_one``: the bare loop plus recording each position and the
            divergence check
The overhead column is (ravine - bare) / bare: what the viz runner adds on top of the optimizer.
On Beale (a polynomial) the runner's gradient is ravine.viz.tape's replay of autograd in Python
floats, same bits, so ravine costs less than bare: the column is negative, the closure saved.
The last line runs all of them together with ``run``, as the gallery does: the surface is
evaluated once per step for all optimizers, so it costs less than the bare loops added up.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch

from ravine import surfaces
from ravine.viz.gallery import CLASSIC
from ravine.viz.specs import parse_spec
from ravine.viz.trajectory import run, run_one

SPECS = CLASSIC  # the gallery's Beale scene


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _measure(s: surfaces.Surface, text: str, steps: int, repeats: int) -> float:
    spec = parse_spec(text)

    def fresh() -> tuple[torch.optim.Optimizer, Callable[[], torch.Tensor]]:
        p = torch.tensor(s.start, dtype=torch.float64, requires_grad=True)
        opt = spec.build([p])

        def closure() -> torch.Tensor:
            opt.zero_grad()
            x, y = p.unbind()
            loss = s.fn(x, y)
            loss.backward()
            return loss

        return opt, closure

    def closure_only() -> None:
        _, closure = fresh()
        for _ in range(steps):
            closure()

    def bare() -> None:
        opt, closure = fresh()
        for _ in range(steps):
            opt.step(closure)

    def ravine_run() -> None:
        run_one(s, spec, steps=steps)

    c, b, r = (_best(f, repeats) * 1e6 / steps for f in (closure_only, bare, ravine_run))
    print(f"{spec.name:<18s} {c:8.1f} {b:8.1f} {r:8.1f} {100 * (r - b) / b:8.1f}%")
    return b


def per_step(steps: int, repeats: int) -> None:
    s = surfaces.get("beale")
    run_one(s, "adam", steps=5)  # first optimizer in a process imports torch._dynamo (~2 s)
    print(f"per-step cost on Beale, float64, {steps} steps, best of {repeats} (microseconds)")
    print(f"{'optimizer':<18s} {'closure':>8s} {'bare':>8s} {'ravine':>8s} {'overhead':>9s}")
    bare_total = 0.0
    for text in SPECS:
        bare_total += _measure(s, text, steps, repeats)
    together = _best(lambda: run(s, SPECS, steps=steps), repeats) * 1e6 / steps
    print(
        f"all {len(SPECS)} together: ravine.viz.trajectory.run {together:.0f} us per step vs "
        f"{bare_total:.0f} us for the {len(SPECS)} bare loops "
        f"({100 * (together - bare_total) / bare_total:+.0f}%): one batched surface evaluation "
        "per step serves every optimizer"
    )


def gallery(quick: bool) -> None:
    with tempfile.TemporaryDirectory() as out:
        code = (
            "import time; t0 = time.perf_counter()\n"
            "from ravine.viz.gallery import make_gallery\n"
            f"paths = make_gallery({out!r}, quick={quick}, verbose=True)\n"
            "print(f'{len(paths)} files in {time.perf_counter() - t0:.1f} s (in-process, "
            "imports included)')\n"
        )
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        wall = time.perf_counter() - t0
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"gallery{' (quick)' if quick else ''}: {wall:.1f} s wall in a fresh process "
        f"(interpreter start included), {size / 1e6:.1f} MB written, {cores} cores, "
        f"torch threads {torch.get_num_threads()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-gallery", action="store_true")
    parser.add_argument("--quick", action="store_true", help="time the quick gallery")
    args = parser.parse_args()
    if not args.no_gallery:
        gallery(args.quick)
        print()
    per_step(args.steps, args.repeats)


if __name__ == "__main__":
    main()
