"""The math of every parallel algorithm, written once for the simulator and the processes.

A worker of an asynchronous algorithm is a generator: it computes on its own copy of the
parameters and yields a request (:class:`Pull`, :class:`Push`, :class:`Elastic`) whenever it
talks to the parameter server; the reply is sent back into it. The simulator serves requests
from in-process :class:`Shard` objects in the order a schedule says; a worker process serves the
same requests over gloo (:mod:`ravine.parallel.transport`). The server side of every algorithm is
:class:`Shard`. Synchronous algorithms are the two step functions at the end.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ravine.parallel.config import DT_ADAGRAD, Config
from ravine.parallel.problem import Problem, split_bounds


@dataclass
class Pull:
    """Fetch the parameters; reply: (full vector, per-shard versions)."""


@dataclass
class Push:
    """Send an accumulated gradient computed on ``versions``; reply: per-shard staleness, or
    with ``pull`` (staleness, the parameters after this push, their versions): a push and the
    next step's fetch in one round trip."""

    grad: torch.Tensor
    versions: list[int]
    pull: bool = False


@dataclass
class Elastic:
    """EASGD's exchange: send x; the server moves its center by e = alpha (x - center) and
    replies e, which the worker subtracts (Zhang et al. 2015, Algorithm 1 and 2)."""

    x: torch.Tensor


@dataclass
class Step:
    """A worker finished one step; ``loss`` is set at evaluation points."""

    loss: float | None = None


Request = Pull | Push | Elastic | Step
Worker = Generator[Request, Any, None]


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """``steps`` mini-batches of row indices: reshuffled epochs, the last partial batch dropped."""
    rng = np.random.default_rng(seed)
    per_epoch = max(1, n // batch_size)
    done = 0
    while done < steps:
        perm = torch.from_numpy(rng.permutation(n))
        for b in range(min(per_epoch, steps - done)):
            yield perm[b * batch_size : (b + 1) * batch_size] if batch_size <= n else perm
        done += per_epoch


def example_order(n: int, steps: int, seed: int) -> Iterator[int]:
    """Hogwild!'s ``steps`` example indices: reshuffled epochs, drawn one epoch at a time (a
    time-limited run asks for far more steps than it makes)."""
    rng = np.random.default_rng(seed)
    left = steps
    while left > 0:
        epoch = rng.permutation(n)[:left].tolist()
        yield from epoch
        left -= len(epoch)


def worker_seed(config: Config, worker: int, incarnation: int = 0) -> int:
    """A replacement worker draws a fresh data order, not a replay of its predecessor's."""
    return config.seed * 1_000_003 + worker * 1009 + incarnation


class Shard:
    """One parameter-server shard: the slice lo:hi of w, a version counter, the server's rule.

    Downpour (Dean et al. 2012): ``push`` applies an accumulated gradient with the shard's own
    ravine optimizer and records its staleness (this version minus the version it was computed
    on; a push computed on versions that a restarted shard lost counts as 0 and in ``ahead``).
    With ``delay_tolerant_adagrad`` the staleness is the delay of McMahan & Streeter 2014's
    AdaptiveRevision, counted in this shard's updates; delays beyond max_delay are clamped to it
    (and counted in ``clamped``). EASGD (Zhang et al. 2015): ``elastic`` moves the center.
    """

    def __init__(self, index: int, lo: int, hi: int, init: torch.Tensor, config: Config) -> None:
        self.index, self.lo, self.hi = index, lo, hi
        self.param = torch.nn.Parameter(init[lo:hi].clone())
        self.version = 0
        self.staleness: Counter[int] = Counter()
        self.clamped = 0
        self.ahead = 0
        self.alpha = config.elasticity
        self.optimizer: torch.optim.Optimizer | None = None
        if config.algo == "downpour":
            from ravine.optim import registry

            self.optimizer = registry.create(
                config.server_optimizer, [self.param], **config.server_hyperparameters()
            )
        self.delay_tolerant = config.server_optimizer == DT_ADAGRAD

    def pull(self, out: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """(a copy of the slice, its version); into ``out`` when given (a reply buffer)."""
        if out is None:
            return self.param.detach().clone(), self.version
        return out.copy_(self.param.detach()), self.version

    def staleness_of(self, base_version: int) -> int:
        """The staleness ``push`` will record for a gradient computed on ``base_version``, if it
        is the next push (a shard process replies with it before it applies the push)."""
        return max(0, self.version - base_version)

    def push(self, grad: torch.Tensor, base_version: int) -> int:
        assert self.optimizer is not None, "push needs Downpour's server optimizer"
        staleness = self.staleness_of(base_version)
        if self.version < base_version:  # computed on versions a restarted shard lost
            self.ahead += 1
        self.staleness[staleness] += 1
        self.param.grad = grad
        if self.delay_tolerant:
            bound = self.optimizer.param_groups[0]["max_delay"]
            self.clamped += staleness > bound
            self.optimizer.step(delay=min(staleness, bound))
        else:
            self.optimizer.step()
        self.param.grad = None
        self.version += 1
        return staleness

    def elastic(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            e = (x - self.param).mul_(self.alpha)
            self.param.add_(e)
        self.version += 1
        return e

    def state_dict(self) -> dict[str, Any]:
        """A snapshot (copies, not the live tensors: the shard keeps updating while it is saved)."""
        optimizer = None if self.optimizer is None else copy.deepcopy(self.optimizer.state_dict())
        return {
            "index": self.index,
            "bounds": (self.lo, self.hi),
            "param": self.param.detach().clone(),
            "version": self.version,
            "staleness": dict(self.staleness),
            "clamped": self.clamped,
            "ahead": self.ahead,
            "optimizer": optimizer,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["bounds"]) != (self.lo, self.hi):
            raise ValueError(
                f"Invalid checkpoint for shard {self.index}: bounds {tuple(state['bounds'])} "
                f"(expected {(self.lo, self.hi)}; was it written by a run with other --shards?)"
            )
        with torch.no_grad():
            self.param.copy_(state["param"])
        self.version = int(state["version"])
        self.staleness = Counter({int(k): int(v) for k, v in state["staleness"].items()})
        self.clamped = int(state["clamped"])
        self.ahead = int(state["ahead"])
        if self.optimizer is not None and state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])


def make_shards(problem: Problem, config: Config) -> list[Shard]:
    """The S contiguous, size-balanced shards of the initial parameters."""
    init = problem.init()
    return [
        Shard(s, lo, hi, init, config)
        for s, (lo, hi) in enumerate(split_bounds(problem.dim, config.shards))
    ]


def _evaluate(problem: Problem, x: torch.Tensor, step: int, config: Config) -> Step:
    return Step(problem.loss(x) if step % config.eval_every == 0 else None)


def downpour_worker(problem: Problem, batches: Iterator[torch.Tensor], config: Config) -> Worker:
    """Downpour SGD's model replica (Dean et al. 2012, Algorithm 7.1).

    Fetch every n_fetch steps, accumulate gradients, push the sum every n_push steps (and what
    is left at the end). The push carries the versions of the oldest fetch its gradients were
    computed on. ``local_lr`` > 0 also steps the local copy between fetches.
    """
    acc: torch.Tensor | None = None
    base: list[int] = []
    x, fetched = torch.empty(0), []
    batches = iter(batches)
    rows, step, fresh = next(batches, None), 0, False
    while rows is not None:
        if step % config.n_fetch == 0 and not fresh:
            x, fetched = yield Pull()
        g = problem.grad(x, rows)
        if acc is None:
            acc, base = g.clone(), list(fetched)
        else:
            acc.add_(g)
        if config.local_lr:
            x.add_(g, alpha=-config.local_lr)
        following = next(batches, None)
        fresh = False
        if (step + 1) % config.n_push == 0:
            # the next step's fetch rides on this push when both are due
            fresh = following is not None and (step + 1) % config.n_fetch == 0
            reply = yield Push(acc, base, pull=fresh)
            if fresh:
                _, x, fetched = reply
            acc = None
        yield _evaluate(problem, x, step, config)
        rows, step = following, step + 1
    if acc is not None:
        yield Push(acc, base)


def easgd_worker(problem: Problem, batches: Iterator[torch.Tensor], config: Config) -> Worker:
    """Asynchronous EASGD / EAMSGD worker (Zhang, Choromanska & LeCun 2015, arXiv:1412.6651,
    Algorithms 1 and 2). Every tau steps: e = alpha (x - center) at the server; x -= e. Between:
    EASGD x -= lr g(x); EAMSGD v = delta v - lr g(x + delta v), x += v."""
    x, _ = yield Pull()  # start from the center
    momentum = config.algo == "eamsgd"
    v = torch.zeros_like(x)
    lr = config.learning_rate
    for step, rows in enumerate(batches):
        if step % config.tau == 0:
            e = yield Elastic(x)
            x.sub_(e)
        if momentum:
            g = problem.grad(x + config.delta * v, rows)
            v.mul_(config.delta).add_(g, alpha=-lr)
            x.add_(v)
        else:
            x.add_(problem.grad(x, rows), alpha=-lr)
        yield _evaluate(problem, x, step, config)


WORKERS = {"downpour": downpour_worker, "easgd": easgd_worker, "eamsgd": easgd_worker}


def allreduce_step(optimizer: torch.optim.Optimizer, w: torch.nn.Parameter, g_mean: torch.Tensor):
    """Synchronous data parallelism: every replica applies the same mean gradient."""
    w.grad = g_mean
    optimizer.step()
    w.grad = None


def easgd_sync_step(
    x: torch.Tensor,
    g: torch.Tensor,
    center: torch.Tensor,
    x_mean: torch.Tensor | None,
    lr: float,
    alpha: float,
    beta: float,
) -> None:
    """Synchronous EASGD (Zhang et al. 2015, eq. 5-6), every replica holding the center:
    x_i -= lr g_i + alpha (x_i - center); center = (1 - beta) center + beta mean_i x_i (the
    old x's), beta = p alpha. ``x_mean`` None: a step between communications, x_i -= lr g_i."""
    if x_mean is None:
        x.add_(g, alpha=-lr)
        return
    x.sub_(g.mul(lr).add_(x - center, alpha=alpha))
    center.mul_(1 - beta).add_(x_mean, alpha=beta)
