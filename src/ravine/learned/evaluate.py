"""Meta-evaluation: a learned optimizer against SGD, NAG, RMSprop and Adam, each with its learning
rate tuned on the same grid, over test problems no training or tuning run saw.

Protocol (per task):

1. Tune: every baseline runs every lr of ``LR_GRID`` on ``tune_problems`` problems (their own
   seeds, disjoint from the test seeds); the lr with the lowest summed mean loss wins (a run that
   diverges scores inf).
2. Test: the learned optimizer (at lr = 1, untuned) and each tuned baseline run the same
   ``test_problems`` problems (with the quadratics, each problem holds 128 functions, and every
   function is one run); curves are the mean loss per step over runs with a band of one
   standard error; the table gives the summed loss over the horizon (the paper's meta-loss), the
   final loss and the ratio of the summed loss to the best baseline's.

Every optimizer, the learned ones included, runs through its ravine optimizer class (``step()``
on leaf tensors), the path users take.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ravine.learned.meta import _STRIDE, _TEST
from ravine.learned.tasks import Problem, make_task
from ravine.optim import registry

__all__ = ["BASELINES", "LR_GRID", "EvalResult", "meta_evaluate", "run_optimizer"]

BASELINES = ("sgd", "nag", "rmsprop", "adam")
# Half-decades from 1e-4 to 3: the same grid for every baseline and task.
LR_GRID = tuple(float(f"{m}e{e}") for e in range(-4, 1) for m in (1, 3))
_TUNE = 8_000_000_000


def run_optimizer(
    factory: Callable[[list[Tensor]], torch.optim.Optimizer], problem: Problem, steps: int
) -> Tensor:
    """The losses (steps + 1, functions) of the optimizer ``factory(params)`` builds, run on
    ``problem`` for ``steps`` steps; rows after a non-finite loss are inf."""
    params = [v.clone().requires_grad_(True) for v in problem.params.values()]
    names = list(problem.params)
    opt = factory(params)
    rows = []
    for t in range(steps + 1):
        opt.zero_grad()
        loss = problem.losses(dict(zip(names, params)), t)
        rows.append(loss.detach())
        if t == steps:
            break
        if not bool(torch.isfinite(loss).all()):
            rows += [torch.full_like(loss, math.inf)] * (steps - t)
            break
        loss.sum().backward()
        opt.step()
    return torch.stack(rows)


@dataclass
class EvalResult:
    """Curves (steps + 1, runs) per optimizer, the tuned lrs and the table rows."""

    task: str
    steps: int
    curves: dict[str, Tensor]
    tuned_lr: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> str:
        w = max(len("optimizer"), *(len(r["optimizer"]) for r in self.rows))
        lines = [
            f"task {self.task}, {self.steps} steps, "
            f"{next(iter(self.curves.values())).shape[1]} runs",
            f"{'optimizer':<{w}} {'lr':>8} {'summed loss':>12} {'final loss':>11} {'ratio':>7}",
        ]
        for r in self.rows:
            lines.append(
                f"{r['optimizer']:<{w}} {r['lr']:>8.3g} {r['summed']:>12.4g} "
                f"{r['final']:>11.4g} {r['ratio']:>7.3f}"
            )
        return "\n".join(lines)


def _score(losses: Tensor) -> float:
    s = float(losses[1:].mean(dim=1).sum())
    return s if math.isfinite(s) else math.inf


def _problems(task: Any, base: int, count: int, steps: int) -> list[Problem]:
    return [task.sample(base + k * _STRIDE, steps) for k in range(count)]


def tune(name: str, problems: Sequence[Problem], steps: int) -> float:
    """The lr of ``LR_GRID`` with the lowest summed loss for baseline ``name``."""
    scores = {}
    for lr in LR_GRID:
        total = 0.0
        for problem in problems:
            total += _score(
                run_optimizer(lambda ps, lr=lr: registry.create(name, ps, lr=lr), problem, steps)
            )
        scores[lr] = total
    return min(scores, key=lambda lr: (scores[lr], lr))


def meta_evaluate(
    learned: dict[str, Callable[[list[Tensor]], torch.optim.Optimizer]],
    task_name: str,
    *,
    task_options: dict[str, Any] | None = None,
    steps: int = 100,
    test_problems: int = 1,
    tune_problems: int = 1,
    baselines: Sequence[str] = BASELINES,
    log: Callable[[str], None] | None = None,
) -> EvalResult:
    """Run the protocol above; ``learned`` maps a label to a factory of a learned optimizer."""
    task = make_task(task_name, **(task_options or {}))
    tuning = _problems(task, _TUNE, tune_problems, steps)
    tuned = {}
    for name in baselines:
        tuned[name] = tune(name, tuning, steps)
        if log is not None:
            log(f"tuned {name}: lr {tuned[name]:g}")
    tests = _problems(task, _TEST, test_problems, steps)
    factories: dict[str, tuple[float, Callable[[list[Tensor]], torch.optim.Optimizer]]] = {
        label: (1.0, f) for label, f in learned.items()
    }
    for name in baselines:
        factories[name] = (tuned[name], lambda ps, n=name: registry.create(n, ps, lr=tuned[n]))
    curves = {
        label: torch.cat([run_optimizer(f, p, steps) for p in tests], dim=1).double()
        for label, (_, f) in factories.items()
    }
    result = EvalResult(task_name, steps, curves, tuned)
    best = min(_score(curves[n]) for n in baselines)
    for label, (lr, _) in factories.items():
        c = curves[label]
        summed = _score(c)
        result.rows.append(
            {
                "optimizer": label,
                "lr": lr,
                "summed": summed,
                "final": float(c[-1].mean()),
                "ratio": summed / best if best > 0 else math.inf,
            }
        )
    return result


def plot(result: EvalResult, path: str, title: str | None = None) -> None:
    """Loss vs step, mean with a band of one standard error, log scale (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = torch.arange(result.steps + 1)
    for label, c in result.curves.items():
        mean = c.mean(dim=1)
        err = c.std(dim=1) / math.sqrt(c.shape[1]) if c.shape[1] > 1 else torch.zeros_like(mean)
        ax.plot(steps, mean, label=label, lw=2 if label not in BASELINES else 1)
        ax.fill_between(steps, (mean - err).clamp(min=1e-12), mean + err, alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or f"{result.task}: learned vs tuned baselines")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
