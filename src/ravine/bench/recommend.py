"""``ravine recommend``: which optimizer for *your* problem, within a time budget.

Unlike ``ravine bench`` (non-adaptive: every trial trained to the end), this spends a budget
adaptively, with successive halving (Jamieson & Talwalkar 2016, arXiv:1502.07943; Li et al.
2017, Hyperband, arXiv:1603.06560), and says so in its output:

1. Plan: one default run's first epoch measures the epoch time; the largest K (scrambled-Halton
   trials from ravine.bench.spaces, plus the one-shot default) whose cost fits the budget is
   chosen, the same K for every optimizer (equal budgets).
2. Tune: each optimizer's K + 1 configurations are trained (seed 0) to the first rung's epochs;
   the best third on the validation metric continue to the next rung (resumed from fit's
   checkpoint, so a rung adds epochs rather than restarting), until the full budget of epochs.
3. Finals: each optimizer's best configuration is re-run with S fresh seeds; optimizers are
   ranked by mean validation metric with a bootstrap interval over seeds, test metrics reported.
4. A portfolio of three configurations (Schmidt et al. 2021, arXiv:2007.01547: trying a few
   good configurations is about as good as tuning one optimizer): chosen greedily so that the
   best of the three, seed by seed, is as good as possible on validation.

The whole plan is printed as a command that reruns it without a budget (same trials, rungs and
seeds), and the winner as the line of Python that builds it.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ravine.bench import problems as problems_mod
from ravine.bench import scoring, spaces

__all__ = [
    "DEFAULT_OPTIMIZERS",
    "Plan",
    "Recommendation",
    "plan_for_budget",
    "recommend",
    "rungs_for",
]

DEFAULT_OPTIMIZERS = ("sgd", "momentum", "nag", "adagrad", "rmsprop", "adam", "adamw", "nadam")
ETA = 3  # successive halving keeps the best 1/ETA at each rung
MAX_TRIALS = 64


def rungs_for(epochs: int, eta: int = ETA, levels: int = 3) -> tuple[int, ...]:
    """Epoch counts of the rungs: epochs / eta^(levels-1), ..., epochs / eta, epochs (>= 1)."""
    rungs = sorted({max(1, math.ceil(epochs / eta**i)) for i in range(levels)})
    return tuple(rungs)


def survivors(n: int, rung: int, eta: int = ETA) -> int:
    """How many of n configurations are trained at rung index ``rung``."""
    return max(1, math.ceil(n / eta**rung))


def cost_in_epochs(trials: int, rungs: Sequence[int], seeds: int, eta: int = ETA) -> int:
    """Epochs one optimizer trains: successive halving of trials + 1 configurations, then the
    winner's final runs with ``seeds`` seeds."""
    total, previous = 0, 0
    for i, r in enumerate(rungs):
        total += survivors(trials + 1, i, eta) * (r - previous)
        previous = r
    return total + seeds * rungs[-1]


@dataclass(frozen=True)
class Plan:
    """What ``recommend`` runs; :meth:`command` reruns exactly this plan."""

    problem: str
    optimizers: tuple[str, ...]
    trials: int
    rungs: tuple[int, ...]
    seeds: int
    batch_size: int
    metric: str = "val_accuracy"
    space_version: str = spaces.CURRENT_VERSION
    qmc_seed: int = 0

    def __post_init__(self) -> None:
        if not self.optimizers:
            raise ValueError("optimizers must name at least one optimizer")
        for o in self.optimizers:
            spaces.get(o, self.space_version)  # names what exists
        if not (isinstance(self.trials, int) and 0 <= self.trials <= MAX_TRIALS):
            raise ValueError(f"trials must be an integer in [0, {MAX_TRIALS}], got {self.trials!r}")
        if not self.rungs or any(b <= a for a, b in zip(self.rungs, self.rungs[1:])):
            raise ValueError(f"rungs must be increasing epoch counts >= 1, got {self.rungs!r}")
        if self.rungs[0] < 1:
            raise ValueError(f"rungs must be increasing epoch counts >= 1, got {self.rungs!r}")
        if not (isinstance(self.seeds, int) and 2 <= self.seeds <= 100):
            raise ValueError(f"seeds must be an integer in [2, 100] (an interval needs two), "
                             f"got {self.seeds!r}")  # fmt: skip

    @property
    def epochs(self) -> int:
        return self.rungs[-1]

    def command(self) -> str:
        return shlex.join(
            [
                "ravine", "recommend", self.problem,
                "--optimizers", ",".join(self.optimizers),
                "--trials", str(self.trials),
                "--rungs", ",".join(map(str, self.rungs)),
                "--seeds", str(self.seeds),
                "--batch-size", str(self.batch_size),
                "--metric", self.metric,
            ]
        )  # fmt: skip


def plan_for_budget(
    problem: str,
    optimizers: Sequence[str],
    *,
    budget: float,
    epoch_seconds: float,
    epochs: int,
    seeds: int,
    batch_size: int,
    metric: str = "val_accuracy",
) -> Plan:
    """The largest equal K that fits ``budget`` seconds (90% of it: estimates are estimates)."""
    rungs = rungs_for(epochs)
    per_epoch = epoch_seconds * len(optimizers)
    fits = [
        k
        for k in range(MAX_TRIALS + 1)
        if cost_in_epochs(k, rungs, seeds) * per_epoch <= 0.9 * budget
    ]
    if not fits:
        need = cost_in_epochs(0, rungs, seeds) * per_epoch / 0.9
        raise ValueError(
            f"budget {budget:.0f} s is too small: {len(optimizers)} optimizer(s) x "
            f"({epochs} epochs x {seeds + 1} runs) at {epoch_seconds:.2f} s an epoch need about "
            f"{need:.0f} s; give a larger --budget, fewer --optimizers, --epochs or --seeds"
        )
    return Plan(problem, tuple(optimizers), max(fits), rungs, seeds, batch_size, metric)


@dataclass
class Config:
    optimizer: str
    trial: int
    hp: dict[str, Any]
    val: dict[int, float] = field(default_factory=dict)  # rung epochs -> validation metric
    error: str | None = None


@dataclass
class Ranked:
    optimizer: str
    trial: int
    hp: dict[str, Any]
    val: list[float]
    test: list[float]
    mean: float
    lower: float
    upper: float
    vs_best: str  # "best", "tie" or "worse" (paired bootstrap on validation against the best)

    def hp_text(self) -> str:
        return ", ".join(f"{k}={_literal(v)}" for k, v in self.hp.items()) or "defaults"

    def python(self) -> str:
        args = "".join(f", {k}={_literal(v)}" for k, v in self.hp.items())
        return f'ravine.create("{self.optimizer}", model.parameters(){args})'


def _literal(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_literal(v) for v in value) + ")"
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


@dataclass
class Recommendation:
    plan: Plan
    ranking: list[Ranked]
    portfolio: list[tuple[str, int]]
    configs: list[Config]
    seconds: float
    stopped_early: str | None

    def to_json(self) -> str:
        return json.dumps(
            {
                "plan": asdict(self.plan),
                "command": self.plan.command(),
                "method": "successive halving (adaptive: trials stopped early on validation)",
                "ranking": [asdict(r) for r in self.ranking],
                "portfolio": self.portfolio,
                "configs": [asdict(c) for c in self.configs],
                "seconds": self.seconds,
                "stopped_early": self.stopped_early,
            },
            indent=1,
            default=float,
        )


class _Trainer:
    """Trains (optimizer, trial, seed) runs of one problem, each resumable from its folder."""

    def __init__(self, plan: Plan, work: Path) -> None:
        self.plan = plan
        self.work = work
        self.problem = problems_mod.user_problem(
            plan.problem, batch_size=plan.batch_size, epochs=plan.epochs, metric=plan.metric
        ) if problems_mod.is_user_problem(plan.problem) else problems_mod.get(
            plan.problem
        ).with_epochs(plan.epochs)  # fmt: skip

    def train(
        self, optimizer: str, trial: int, hp: dict[str, Any], seed: int, epochs: int
    ) -> tuple[float, float]:
        """Train to ``epochs`` (continuing the run's checkpoint); (val metric, test metric)."""
        from ravine.optim import registry
        from ravine.train import evaluate, fit

        built = problems_mod.build(self.problem, seed)
        opt = registry.create(optimizer, built.model.parameters(), **_tuples(hp))
        history = fit(
            built.model,
            opt,
            built.train,
            built.val,
            batch_size=self.plan.batch_size,
            epochs=epochs,
            loss_fn=built.loss_fn,
            seed=seed,
            checkpoint_dir=self.work / f"{optimizer}-{trial}-seed{seed}",
            resume=True,
            verbose=0,
        )
        maximize = self.plan.metric == "val_accuracy"
        series = history.val_accuracy if maximize else history.val_loss
        val = float(series[-1]) if series else math.nan
        test_loss, test_acc = evaluate(built.model, built.test, built.loss_fn)
        return val, float(test_acc if maximize and test_acc is not None else test_loss)


def _tuples(hp: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in hp.items()}


def _rank_key(value: float, maximize: bool) -> float:
    if not math.isfinite(value):
        return math.inf
    return -value if maximize else value


def _portfolio(ranking: Sequence[Ranked], maximize: bool, size: int = 3) -> list[tuple[str, int]]:
    """Greedy: add the finalist that most improves the per-seed best of the portfolio."""
    pick = max if maximize else min
    chosen: list[Ranked] = []
    candidates = [r for r in ranking if all(math.isfinite(v) for v in r.val)]
    while candidates and len(chosen) < size:

        def value(r: Ranked) -> float:
            per_seed = zip(*(c.val for c in [*chosen, r]), strict=True)
            return statistics.fmean(pick(vs) for vs in per_seed)

        best = (max if maximize else min)(candidates, key=value)
        chosen.append(best)
        candidates.remove(best)
    return [(r.optimizer, r.trial) for r in chosen]


def _best(configs: Sequence[Config], maximize: bool) -> Config | None:
    """The best configuration at the furthest rung any reached with a finite metric."""
    reached = [
        (max(e for e, v in c.val.items() if math.isfinite(v)), c)
        for c in configs
        if any(math.isfinite(v) for v in c.val.values())
    ]
    if not reached:
        return None
    furthest = max(e for e, _ in reached)
    pool = [c for e, c in reached if e == furthest]
    return min(pool, key=lambda c: (_rank_key(c.val[furthest], maximize), c.trial))


def recommend(
    plan: Plan,
    *,
    deadline: float | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
) -> Recommendation:
    """Run ``plan``; stop starting new runs after ``deadline`` (a time.time() value)."""
    start = time.time()
    maximize = plan.metric == "val_accuracy"
    with tempfile.TemporaryDirectory(prefix="ravine-recommend-") as tmp:
        trainer = _Trainer(plan, Path(work_dir or tmp))
        configs = {
            o: [
                Config(o, t.index, dict(t.hp)) for t in spaces.trials(o, plan.trials, plan.qmc_seed)
            ]
            for o in plan.optimizers
        }
        sizes = {o: len(c) for o, c in configs.items()}
        assert len(set(sizes.values())) == 1, f"unequal budgets {sizes}"  # the protocol
        alive = {o: list(c) for o, c in configs.items()}
        stopped: str | None = None
        for level, epochs in enumerate(plan.rungs):
            keep = survivors(plan.trials + 1, level)
            if level:
                before = plan.rungs[level - 1]
                for o in plan.optimizers:
                    alive[o] = sorted(
                        alive[o],
                        key=lambda c, e=before: (_rank_key(c.val.get(e, math.nan), maximize),
                                                 c.trial),
                    )[:keep]  # fmt: skip
            log(f"rung {level + 1}/{len(plan.rungs)}: {keep} configuration(s) per optimizer "
                f"to {epochs} epoch(s)")  # fmt: skip
            for o in plan.optimizers:
                for c in alive[o]:
                    if c.error is not None:
                        continue
                    if deadline is not None and time.time() > deadline:
                        stopped = f"the budget ran out during rung {level + 1}"
                        break
                    try:
                        c.val[epochs], _ = trainer.train(o, c.trial, c.hp, 0, epochs)
                    except Exception as e:  # a diverging configuration ranks last
                        c.error = f"{type(e).__name__}: {e}"
                        c.val[epochs] = math.nan
            if stopped:
                break
        ranking = []
        last = plan.rungs[-1]
        for o in plan.optimizers:
            best = _best(configs[o], maximize)
            if best is None:
                continue
            vals, tests = [], []
            for seed in range(1, plan.seeds + 1):
                if stopped or (deadline is not None and time.time() > deadline):
                    stopped = stopped or "the budget ran out during the final runs"
                    break
                try:
                    v, t = trainer.train(o, best.trial, best.hp, seed, last)
                except Exception:
                    v, t = math.nan, math.nan
                vals.append(v)
                tests.append(t)
            finite = [v for v in vals if math.isfinite(v)]
            if len(finite) >= 2:
                mean, lower, upper = scoring.bootstrap_interval(finite)
            else:
                mean = statistics.fmean(finite) if finite else math.nan
                lower = upper = math.nan
            ranking.append(Ranked(o, best.trial, best.hp, vals, tests, mean, lower, upper, ""))
        ranking.sort(key=lambda r: (_rank_key(r.mean, maximize), r.optimizer))
        if ranking:
            top = ranking[0]
            top.vs_best = "best"
            for r in ranking[1:]:
                n = min(len(r.val), len(top.val))
                pair = [(a, b) for a, b in zip(r.val[:n], top.val[:n]) if math.isfinite(a + b)]
                if len(pair) < 2:
                    r.vs_best = "n/a"
                    continue
                c = scoring.compare(
                    [a for a, _ in pair], [b for _, b in pair], higher_is_better=maximize
                )
                r.vs_best = "tie" if c.winner == "tie" else ("worse" if c.winner == "b" else "best")
        portfolio = _portfolio(ranking, maximize) if not stopped else []
    return Recommendation(
        plan,
        ranking,
        portfolio,
        [c for o in plan.optimizers for c in configs[o]],
        time.time() - start,
        stopped,
    )


def measure_epoch_seconds(problem: str, batch_size: int, metric: str) -> float:
    """Seconds of one epoch of the default SGD run (the plan's unit of cost)."""
    with tempfile.TemporaryDirectory(prefix="ravine-recommend-probe-") as tmp:
        plan = Plan(problem, ("sgd",), 0, (1,), 2, batch_size, metric)
        t0 = time.perf_counter()
        _Trainer(plan, Path(tmp)).train("sgd", 0, {}, 0, 1)
        return time.perf_counter() - t0
