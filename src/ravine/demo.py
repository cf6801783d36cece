"""The demo `make demo` runs (``ravine demo``, src/ravine/cli/demo.py prints it): every optimizer
on Rosenbrock, the bench lab's quick sweep (MNIST-1D and digits, tuned under the lab's protocol)
with its report, and the gallery of trajectories on loss surfaces (PNG and GIF under --out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ravine import surfaces
from ravine.optim import catalog, registry

# Each optimizer's hyperparameters for the Rosenbrock table are in its catalog row.


def rosenbrock_table(steps: int) -> list[tuple[str, str, float, float]]:
    """(name, hyperparameters, final loss, distance to the minimum (1, 1)) per optimizer."""
    rosenbrock = surfaces.get("rosenbrock").fn
    rows = []
    for row in catalog.ROWS:
        name, setting = row.name, row.rosenbrock
        hp = dict(setting.hp)
        x = torch.nn.Parameter(torch.tensor([-1.5, 2.0], dtype=torch.float64))
        opt = registry.create(name, [x], **hp)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, setting.lr_gamma or 1.0)

        def closure(x: torch.Tensor = x, opt: torch.optim.Optimizer = opt) -> torch.Tensor:
            opt.zero_grad()
            loss = rosenbrock(*x.unbind())
            loss.backward()
            return loss

        for _ in range(steps):
            opt.step(closure)
            sched.step()
        with torch.no_grad():
            loss = rosenbrock(*x.unbind()).item()
            dist = (x - 1).norm().item()
        rows.append((name, _fmt_hp(hp), loss, dist))
    return rows


def bench_quick(out: Path, workers: int) -> tuple[int, Path, Any]:
    """The lab's quick sweep (``ravine bench --quick``) into ``out/bench.sqlite`` and its report
    into ``out/bench-report``: the demo's mini-batch numbers are what the lab measured under its
    protocol (equal trials, selection on validation, re-seeded finalists), not hand-picked rates.

    Returns (the bench command's exit code, the store, the report's files or None). Running the
    demo again continues an interrupted sweep and redoes no finished run.
    """
    from ravine.bench.report import write_report
    from ravine.cli import main as cli_main

    store = out / "bench.sqlite"
    out.mkdir(parents=True, exist_ok=True)
    code = cli_main(
        ["bench", "--quick", "--store", str(store), "--workers", str(workers), "--no-progress"]
    )
    files = write_report(store, out / "bench-report") if code == 0 else None
    return code, store, files


def _fmt_hp(hp: dict[str, Any]) -> str:
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in hp.items())
