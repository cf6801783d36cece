"""One validated description of a parallel run, shared by the simulator, the processes and the CLI.

Every value is checked when the Config is built (ValueError naming the field, the value and the
expected range), before any process is started.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ravine.parallel.problem import PROBLEMS

# Asynchronous algorithms talk to the sharded parameter server; synchronous ones use collectives.
SERVER_ALGOS = ("downpour", "easgd", "eamsgd")
SYNC_ALGOS = ("allreduce", "easgd-sync")
ALGOS = ("hogwild", *SERVER_ALGOS, *SYNC_ALGOS)

# Learning rates that reach a low loss on the sparse problem in a few hundred steps per worker
# (checked with the simulator: loss 0.31-0.34 after 400 steps of 2 workers, from log 2 = 0.69;
# 5000 serial steps reach 0.30). Downpour's default server optimizer is Adagrad.
DEFAULT_LR = {
    "hogwild": 0.2,
    "downpour": 0.5,
    "easgd": 2.0,
    "eamsgd": 0.1,
    "allreduce": 2.0,
    "easgd-sync": 2.0,
}
DT_ADAGRAD = "delay_tolerant_adagrad"


def _positive_int(name: str, value: Any, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"Invalid {name}: {value!r} (expected an integer >= {low})")


def _number(name: str, value: Any, low: float, high: float = math.inf, *, open_low=False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and (low < value if open_low else low <= value) and value <= high
    if not ok:
        bracket = "(" if open_low else "["
        raise ValueError(
            f"Invalid {name}: {value!r} (expected a number in {bracket}{low}, {high}])"
        )


@dataclass(frozen=True)
class Config:
    """A parallel run.

    Args:
        algo: one of ``ALGOS``.
        workers: worker processes (model replicas), >= 1.
        shards: parameter-server shards (server algorithms only), >= 1.
        problem: ``"sparse"`` or ``"dense"`` (:mod:`ravine.parallel.problem`).
        steps: steps per worker (examples for Hogwild!, mini-batches otherwise).
        time_limit: seconds of training after which workers stop early, counted from each
            worker's first step (process start-up is not counted); None: no limit.
        lr: worker learning rate (the server optimizer's lr for Downpour); None: DEFAULT_LR.
        batch_size: mini-batch size (Hogwild! steps on one example, as in the paper).
        n_fetch: Downpour fetches the parameters every n_fetch steps.
        n_push: Downpour pushes its accumulated gradient every n_push steps.
        local_lr: Downpour's local step between fetches (Dean et al. 2012, Alg. 7.1); 0: none.
        server_optimizer: registered ravine optimizer each Downpour shard applies.
        server_hp: its hyperparameters (lr comes from ``lr``).
        max_delay: DT-AdaGrad's longest delay kept (None: 8 per worker); longer ones clamp.
        beta: EASGD's moving rate (beta = workers x alpha in the paper).
        alpha: EASGD's elasticity; None means beta / workers.
        tau: EASGD communication period, in worker steps.
        delta: EAMSGD's Nesterov momentum.
        lock: Hogwild! with a lock around each update (the comparison), else lock-free.
        count_lost: Hogwild! counts lost updates with a shadow counter updated the same way.
        eval_every: steps between loss points on the evaluation set.
        seed: data order and problem seed.
    """

    algo: str = "downpour"
    workers: int = 2
    shards: int = 2
    problem: str = "sparse"
    steps: int = 400
    time_limit: float | None = None
    lr: float | None = None
    batch_size: int = 32
    n_fetch: int = 1
    n_push: int = 1
    local_lr: float = 0.0
    server_optimizer: str = "adagrad"
    server_hp: dict[str, Any] = field(default_factory=dict)
    max_delay: int | None = None
    beta: float = 0.9
    alpha: float | None = None
    tau: int = 4
    delta: float = 0.99
    lock: bool = False
    count_lost: bool = True
    eval_every: int = 50
    seed: int = 0
    n_samples: int = 10_000
    n_features: int = 1_000

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"Invalid algo: {self.algo!r} (expected one of {', '.join(ALGOS)})")
        if self.problem not in PROBLEMS:
            raise ValueError(
                f"Invalid problem: {self.problem!r} (expected one of {', '.join(PROBLEMS)})"
            )
        for name in ("workers", "shards", "steps", "batch_size", "n_fetch", "n_push", "tau"):
            _positive_int(name, getattr(self, name))
        _positive_int("eval_every", self.eval_every)
        _positive_int("n_samples", self.n_samples, 10)
        _positive_int("n_features", self.n_features)
        if self.shards > self.n_features + 1:
            raise ValueError(
                f"Invalid shards: {self.shards!r} (expected at most n_features + 1 = "
                f"{self.n_features + 1}: every shard holds at least one parameter)"
            )
        if self.workers > self.n_samples // 10:
            raise ValueError(
                f"Invalid workers: {self.workers!r} (expected at most n_samples / 10 = "
                f"{self.n_samples // 10}: every worker needs its own shard of the data)"
            )
        if self.time_limit is not None:
            _number("time_limit", self.time_limit, 0, open_low=True)
        if self.lr is not None:
            _number("lr", self.lr, 0, open_low=True)
        _number("local_lr", self.local_lr, 0)
        _number("beta", self.beta, 0, 1)
        if self.alpha is not None:
            _number("alpha", self.alpha, 0, 1)
            if self.algo in SYNC_ALGOS and self.alpha * self.workers > 1:
                raise ValueError(
                    f"Invalid alpha: {self.alpha!r} (synchronous EASGD needs beta = workers * "
                    f"alpha <= 1; expected alpha <= {1 / self.workers})"
                )
        _number("delta", self.delta, 0, 1)
        if self.max_delay is not None:
            _positive_int("max_delay", self.max_delay, 0)
        if not isinstance(self.server_hp, dict) or "lr" in self.server_hp:
            raise ValueError(
                f"Invalid server_hp: {self.server_hp!r} (expected a dict of hyperparameters "
                "without lr; the learning rate is Config.lr)"
            )
        if self.algo in SERVER_ALGOS:
            from ravine.optim import registry

            registry.get(self.server_optimizer)  # raises with the registered names

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.algo] if self.lr is None else float(self.lr)

    @property
    def elasticity(self) -> float:
        """EASGD's alpha: given, or the paper's beta / p."""
        return self.beta / self.workers if self.alpha is None else float(self.alpha)

    @property
    def delay_bound(self) -> int:
        return 8 * self.workers if self.max_delay is None else self.max_delay

    def server_hyperparameters(self) -> dict[str, Any]:
        hp = {"lr": self.learning_rate, **self.server_hp}
        if self.server_optimizer == DT_ADAGRAD:
            hp.setdefault("max_delay", self.delay_bound)
        return hp

    def with_(self, **changes: Any) -> Config:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
