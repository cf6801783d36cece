"""The demo `make demo` runs (``ravine demo``, src/ravine/cli/demo.py prints it): every optimizer
on Rosenbrock, a short MNIST-1D training with each, and the gallery of trajectories on loss
surfaces (PNG and GIF under --out)."""

from __future__ import annotations

import time
from typing import Any

import torch

from ravine import surfaces
from ravine.optim import catalog, registry

# Each optimizer's hyperparameters for the Rosenbrock and MNIST-1D tables are in its catalog row.
FULL_BATCH_ONLY = tuple(row.name for row in catalog.ROWS if row.mnist1d is None)


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


def mnist1d_table(epochs: int, quick: bool) -> list[tuple[str, str, float, float, float, float]]:
    """(name, hp, train loss, val accuracy, test accuracy, seconds) for an MLP on MNIST-1D."""
    from ravine import data, models
    from ravine.train import evaluate, fit

    splits = data.mnist1d(num_samples=2000 if quick else 5000)
    rows = []
    for row in catalog.ROWS:
        if row.mnist1d is None:  # full-batch methods
            continue
        name, hp = row.name, dict(row.mnist1d.hp)
        torch.manual_seed(0)
        model = models.create("mlp", splits.input_shape, splits.num_classes)
        opt = registry.create(name, model.parameters(), **hp)
        start = time.perf_counter()
        history = fit(
            model, opt, splits.train, splits.val, batch_size=100, epochs=epochs, progress=False
        )
        seconds = time.perf_counter() - start
        _, test_acc = evaluate(model, splits.test)
        rows.append(
            (
                name,
                _fmt_hp(hp),
                history.train_loss[-1],
                history.val_accuracy[-1],
                test_acc,
                seconds,
            )
        )
    return rows


def _fmt_hp(hp: dict[str, Any]) -> str:
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in hp.items())
