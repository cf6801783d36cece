"""A deterministic single-process simulator of asynchrony.

A schedule says which worker acts next. At each of its turns an asynchronous worker has its
pending request served (by in-process :class:`~ravine.parallel.algorithms.Shard` objects) and
computes until its next request, so a gradient computed after a pull meets every push that other
workers made before its own. Hogwild! turns alternate between reading w (and computing the
example's step) and writing the step. Synchronous algorithms run in lockstep. The math is the
same functions the processes run; only the transport and the clock are replaced.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ravine.parallel.algorithms import (
    WORKERS,
    Elastic,
    Pull,
    Push,
    Request,
    Shard,
    Step,
    Worker,
    allreduce_step,
    batch_order,
    easgd_sync_step,
    example_order,
    make_shards,
    worker_seed,
)
from ravine.parallel.config import Config
from ravine.parallel.problem import Problem, make_problem


@dataclass
class SimResult:
    """Final parameters, per-worker losses at evaluation points, staleness and update counts."""

    w: torch.Tensor
    losses: list[list[float]] = field(default_factory=list)
    staleness: Counter[int] = field(default_factory=Counter)
    updates: int = 0
    shards: list[Shard] = field(default_factory=list)
    replicas: list[torch.Tensor] = field(default_factory=list)  # synchronous EASGD's x_i

    @property
    def final_loss(self) -> float:
        return self._problem.loss(self.w)

    _problem: Problem = field(default=None, repr=False)  # type: ignore[assignment]


def serve(shards: list[Shard], request: Request) -> object:
    """The reply of the parameter server's shards to one request (all shards, in order)."""
    if isinstance(request, Pull):
        parts = [s.pull() for s in shards]
        return torch.cat([p for p, _ in parts]), [v for _, v in parts]
    if isinstance(request, Push):
        staleness = [
            s.push(request.grad[s.lo : s.hi].clone(), v)
            for s, v in zip(shards, request.versions, strict=True)
        ]
        return (staleness, *serve(shards, Pull())) if request.pull else staleness
    if isinstance(request, Elastic):
        return torch.cat([s.elastic(request.x[s.lo : s.hi]) for s in shards])
    raise TypeError(f"unknown request {request!r}")


def _turns(schedule: str | Sequence[int], workers: int, seed: int) -> Iterator[int]:
    """Worker ids forever: an explicit list first, then round-robin (or random) turns."""
    if not isinstance(schedule, str):
        for w in schedule:
            if not (isinstance(w, int) and 0 <= w < workers):
                raise ValueError(f"Invalid schedule entry: {w!r} (expected 0 <= w < {workers})")
            yield w
        schedule = "round-robin"
    if schedule not in ("round-robin", "random"):
        raise ValueError(
            f"Invalid schedule: {schedule!r} (expected 'round-robin', 'random' or a list of ids)"
        )
    rng = np.random.default_rng(seed)
    i = 0
    while True:
        yield int(rng.integers(workers)) if schedule == "random" else i % workers
        i += 1


def _advance(worker: Worker, reply: object, losses: list[float]) -> Request | None:
    """Send ``reply`` and run the worker to its next server request (None when it is done)."""
    try:
        request = worker.send(reply)
        while isinstance(request, Step):
            if request.loss is not None:
                losses.append(request.loss)
            request = next(worker)
    except StopIteration:
        return None
    return request


def simulate(
    config: Config,
    problem: Problem | None = None,
    schedule: str | Sequence[int] = "round-robin",
) -> SimResult:
    """Run ``config``'s algorithm in one process under ``schedule``; see the module docstring."""
    problem = problem or make_problem(
        config.problem, n_samples=config.n_samples, n_features=config.n_features, seed=config.seed
    )
    if config.algo == "hogwild":
        result = _hogwild(config, problem, schedule)
    elif config.algo in WORKERS:
        result = _server(config, problem, schedule)
    else:
        result = _sync(config, problem)
    result._problem = problem
    return result


def _data(config: Config, problem: Problem, w: int) -> tuple[Problem, Iterator[torch.Tensor]]:
    part = problem.shard(w, config.workers)
    batches = batch_order(part.n, config.batch_size, config.steps, worker_seed(config, w))
    return part, batches


def _server(config: Config, problem: Problem, schedule: str | Sequence[int]) -> SimResult:
    shards = make_shards(problem, config)
    losses: list[list[float]] = [[] for _ in range(config.workers)]
    workers, pending = [], []
    for w in range(config.workers):
        worker = WORKERS[config.algo](*_data(config, problem, w), config)
        workers.append(worker)
        pending.append(_advance(worker, None, losses[w]))
    turns = _turns(schedule, config.workers, config.seed)
    while any(p is not None for p in pending):
        w = next(turns)
        if pending[w] is None:
            continue
        pending[w] = _advance(workers[w], serve(shards, pending[w]), losses[w])
    staleness = sum((s.staleness for s in shards), Counter())
    w_final = torch.cat([s.param.detach() for s in shards])
    updates = config.workers * config.steps
    return SimResult(w_final, losses, staleness, updates, shards)


def _hogwild(config: Config, problem: Problem, schedule: str | Sequence[int]) -> SimResult:
    w = problem.init().numpy().copy()
    lr = config.learning_rate
    parts = [problem.shard(i, config.workers) for i in range(config.workers)]
    orders = [example_order(p.n, config.steps, worker_seed(config, i)) for i, p in enumerate(parts)]
    # A pending write is (coordinates, delta) computed from what the worker read.
    pending: list[tuple[np.ndarray, np.ndarray] | None] = [None] * config.workers
    done = [False] * config.workers
    turns = _turns(schedule, config.workers, config.seed)
    while not all(done):
        i = next(turns)
        if done[i]:
            continue
        if pending[i] is not None:
            coords, delta = pending[i]
            w[coords] -= delta
            pending[i] = None
            continue
        example = next(orders[i], None)
        if example is None:
            done[i] = True
            continue
        pending[i] = parts[i].example_step(w, int(example), lr)
    return SimResult(torch.from_numpy(w), updates=config.workers * config.steps)


def _sync(config: Config, problem: Problem) -> SimResult:
    """Lockstep rounds: all-reduce of gradients, or synchronous EASGD (mean of the x_i)."""
    p = config.workers
    data = [_data(config, problem, i) for i in range(p)]
    lr = config.learning_rate
    losses: list[list[float]] = [[] for _ in range(p)]
    if config.algo == "allreduce":
        w = torch.nn.Parameter(problem.init())
        optimizer = torch.optim.SGD([w], lr=lr)
        for step, rows in enumerate(zip(*(b for _, b in data), strict=True)):
            grads = [part.grad(w.detach(), r) for (part, _), r in zip(data, rows, strict=True)]
            allreduce_step(optimizer, w, torch.stack(grads).sum(0) / p)
            if step % config.eval_every == 0:
                losses[0].append(problem.loss(w.detach()))
        return SimResult(w.detach(), losses, updates=p * config.steps)
    xs = [problem.init() for _ in range(p)]
    centers = [problem.init() for _ in range(p)]  # every replica holds the center, as in processes
    alpha = config.elasticity
    for step, rows in enumerate(zip(*(b for _, b in data), strict=True)):
        grads = [part.grad(x, r) for (part, _), x, r in zip(data, xs, rows, strict=True)]
        x_mean = torch.stack(xs).sum(0) / p if step % config.tau == 0 else None
        for x, g, center in zip(xs, grads, centers, strict=True):
            easgd_sync_step(x, g, center, x_mean, lr, alpha, p * alpha)
        if step % config.eval_every == 0:
            for i, x in enumerate(xs):
                losses[i].append(problem.loss(x))
    return SimResult(centers[0].clone(), losses, updates=p * config.steps, replicas=xs)


__all__ = ["SimResult", "serve", "simulate"]
