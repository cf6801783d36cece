"""Meta-training by truncated backpropagation through unrolled optimization.

Andrychowicz et al. 2016 (arXiv:1606.04474), section 2: the meta-loss of the optimizer's weights
phi is the optimizee's loss along its trajectory,

    L(phi) = E_f [ sum_t w_t f(theta_t) ],  theta_{t+1} = theta_t + delta_t,
    (delta_t, h_{t+1}) = m(grad f(theta_t), h_t; phi),   w_t = 1,

minimised with Adam, the trajectory cut into unrolls of ``unroll`` steps (20 in the paper) over a
horizon of ``horizon`` steps (100): each unroll backpropagates into phi and the next starts from
its end, detached. The optimizee's gradients are constants (the paper drops the second
derivatives; ``second_order=True`` keeps them).

The update is :mod:`ravine.learned.nets`' forward, called with ``torch.func.functional_call``
(also what the optimizers call), and the optimizee is evaluated the same way
(:mod:`ravine.learned.tasks`), so no model is rebuilt and no buffer rewritten.

Safeguards: each step's term is clipped at ``loss_clip`` times the problem's initial loss (an
unroll that blows up stops pulling phi further), the meta-gradient's norm is clipped at
``grad_clip``, and a non-finite meta-loss or meta-gradient skips the update (counted): no NaN
reaches phi. Every ``eval_every`` iterations the weights are scored on held-out problems (seeds
no training problem uses) and the best are kept.

Reproducible: the problems are drawn from seeds derived from ``seed`` and the iteration number,
the network's initial weights from ``seed``, and the checkpoint (written atomically every
``checkpoint_every`` iterations of :func:`meta_train`) holds everything else, so a run killed
and started again with the same command ends with the very bits of one that was never
interrupted (on the same machine, torch version and thread count).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from ravine.learned import weights as weights_io
from ravine.learned.nets import LearnedNetwork, build
from ravine.learned.tasks import Problem, make_task

__all__ = [
    "PRESETS",
    "MetaConfig",
    "MetaResult",
    "meta_loss_of_unroll",
    "meta_train",
    "preset",
    "run_network",
]

# Problem seeds: training iteration i of run seed s draws seed s * _STRIDE + i; held-out
# problems are drawn from _HELD_OUT + k and test problems (meta-eval) from _TEST + k.
_STRIDE = 1_000_003
_HELD_OUT = 7_000_000_000
_TEST = 9_000_000_000


@dataclass(frozen=True)
class MetaConfig:
    """Everything that determines a meta-training run (saved with its weights)."""

    kind: str = "l2l"
    task: str = "quadratic"
    task_options: dict[str, Any] = field(default_factory=dict)
    architecture: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    iterations: int = 100
    horizon: int = 100
    unroll: int = 20
    meta_lr: float = 1e-3
    # The meta learning rate follows a cosine from meta_lr to meta_lr * meta_lr_final.
    meta_lr_final: float = 1.0
    # ... after rising linearly over the first meta_lr_warmup iterations (0: no warmup).
    meta_lr_warmup: int = 0
    grad_clip: float = 1.0
    loss_clip: float = 10.0
    second_order: bool = False
    eval_every: int = 10
    eval_problems: int = 2

    def __post_init__(self) -> None:
        positive = {
            "iterations": self.iterations,
            "horizon": self.horizon,
            "unroll": self.unroll,
            "eval_every": self.eval_every,
            "eval_problems": self.eval_problems,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid {name}: {value!r} (expected an integer >= 1)")
        if self.horizon % self.unroll:
            raise ValueError(
                f"Invalid unroll: {self.unroll!r} (expected a divisor of horizon {self.horizon})"
            )
        for name in ("meta_lr", "meta_lr_final", "grad_clip", "loss_clip"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"Invalid {name}: {value!r} (expected a finite number > 0)")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"Invalid seed: {self.seed!r} (expected an integer >= 0)")
        warmup = self.meta_lr_warmup
        if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
            raise ValueError(f"Invalid meta_lr_warmup: {warmup!r} (expected an integer >= 0)")

    def as_dict(self) -> dict[str, Any]:
        out = json.loads(json.dumps(dataclasses.asdict(self)))
        if not self.meta_lr_warmup:
            # Files written before the warmup existed hold no such field: without one, their
            # configurations (and bytes) stay those their presets write.
            del out["meta_lr_warmup"]
        return out


@dataclass
class MetaResult:
    """What a run produced: the best weights' record and the history of the run."""

    record: dict[str, Any]
    history: list[dict[str, float]]
    skipped: int
    seconds: float


def _flat(tensors: dict[str, Tensor]) -> list[Tensor]:
    return [t.reshape(-1) for t in tensors.values()]


def _initial_state(net: LearnedNetwork, params: dict[str, Tensor]) -> list[Tensor]:
    return [p.new_zeros(p.numel(), net.state_size) for p in params.values()]


def meta_loss_of_unroll(
    net: LearnedNetwork,
    weights: dict[str, Tensor],
    problem: Problem,
    theta: dict[str, Tensor],
    state: list[Tensor],
    start: int,
    steps: int,
    *,
    initial: Tensor,
    loss_clip: float,
    second_order: bool = False,
) -> tuple[Tensor, dict[str, Tensor], list[Tensor]]:
    """One unroll of ``steps`` steps from ``theta`` at step ``start``: the mean (over steps and
    functions) of the clipped losses f(theta_{t+1}), differentiable in ``weights``; and where it
    ended (``theta`` and ``state``, still attached to the graph)."""
    loss = problem.losses(theta, start)
    total = loss.new_zeros(())
    for j in range(steps):
        t = start + j
        grads = torch.autograd.grad(
            loss.sum(), list(theta.values()), retain_graph=True, create_graph=second_order
        )
        if not second_order:
            grads = tuple(g.detach() for g in grads)
        deltas, state = functional_call(
            net, weights, (_flat(theta), [g.reshape(-1) for g in grads], state, t + 1)
        )
        theta = {k: v + d.view_as(v) for (k, v), d in zip(theta.items(), deltas)}
        loss = problem.losses(theta, t + 1)
        total = total + torch.minimum(loss, loss_clip * initial).mean()
    return total / steps, theta, state


@torch.no_grad()
def run_network(net: LearnedNetwork, problem: Problem, steps: int) -> Tensor:
    """The losses (steps + 1, functions) of ``net`` optimizing ``problem`` for ``steps`` steps,
    through the network's forward (meta-training's held-out score)."""
    theta = {k: v.clone() for k, v in problem.params.items()}
    state = _initial_state(net, theta)
    weights = dict(net.named_parameters())
    rows = []
    for t in range(steps + 1):
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_(True) for k, v in theta.items()}
            loss = problem.losses(leaves, t)
            rows.append(loss.detach())
            if t == steps:
                break
            grads = torch.autograd.grad(loss.sum(), list(leaves.values()))
        deltas, state = functional_call(
            net, weights, (_flat(theta), [g.reshape(-1) for g in grads], state, t + 1)
        )
        theta = {k: v + d.view_as(v) for (k, v), d in zip(theta.items(), deltas)}
    return torch.stack(rows)


def held_out_score(net: LearnedNetwork, config: MetaConfig) -> float:
    """Summed mean loss over the horizon on the held-out problems (lower is better; inf if a
    run diverged)."""
    task = make_task(config.task, **config.task_options)
    total = 0.0
    for k in range(config.eval_problems):
        problem = task.sample(_HELD_OUT + k, config.horizon)
        losses = run_network(net, problem, config.horizon)
        total += float(losses[1:].mean(dim=1).sum())
    score = total / config.eval_problems
    return score if math.isfinite(score) else math.inf


def _meta_lr(config: MetaConfig, iteration: int) -> float:
    final = config.meta_lr_final
    cosine = 0.5 * (1 + math.cos(math.pi * iteration / config.iterations))
    lr = config.meta_lr * (final + (1 - final) * cosine)
    if iteration < config.meta_lr_warmup:
        lr *= (iteration + 1) / config.meta_lr_warmup
    return lr


def _checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def meta_train(
    config: MetaConfig,
    out: str | Path,
    *,
    log: Callable[[str], None] | None = None,
    stop_after: int | None = None,
    checkpoint_every: int = 5,
) -> MetaResult:
    """Meta-train per ``config``; write the best weights to ``out`` (a weights file, see
    :mod:`ravine.learned.weights`) and a resumable checkpoint next to it (``out.ckpt``).

    A checkpoint of the same config is resumed; one of another config is refused (delete it to
    start over). ``stop_after`` ends the process's share of the work after that many iterations
    (a test's stand-in for a kill): run again to continue. ``checkpoint_every`` (iterations) is
    not part of the configuration: it changes no number of the result.
    """
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(
            f"Invalid checkpoint_every: {checkpoint_every!r} (expected an integer >= 1)"
        )
    out = Path(out)
    ckpt_path = _checkpoint_path(out)
    task = make_task(config.task, **config.task_options)
    net = build(config.kind, config.architecture, seed=config.seed)
    meta_opt = torch.optim.Adam(net.parameters(), lr=config.meta_lr)
    state: dict[str, Any] = {
        "iteration": 0,
        "best_score": math.inf,
        "best": weights_io.record(net)["state_dict"],
        "history": [],
        "skipped": 0,
        "seconds": 0.0,
    }
    if ckpt_path.is_file():
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if saved.get("config") != config.as_dict():
            raise ValueError(
                f"checkpoint {str(ckpt_path)!r} was written by another configuration; delete it "
                "to start over, or run with the configuration it holds"
            )
        net.load_state_dict(saved["net"])
        meta_opt.load_state_dict(saved["meta_opt"])
        state = saved["state"]
    weights = dict(net.named_parameters())
    began = time.perf_counter() - state["seconds"]
    done_here = 0
    while state["iteration"] < config.iterations:
        if stop_after is not None and done_here >= stop_after:
            break
        i = state["iteration"]
        for group in meta_opt.param_groups:
            group["lr"] = _meta_lr(config, i)
        problem = task.sample(config.seed * _STRIDE + i, config.horizon)
        theta = {k: v.clone().requires_grad_(True) for k, v in problem.params.items()}
        rnn = _initial_state(net, theta)
        initial = problem.losses(theta, 0).detach()
        unroll_losses = []
        for start in range(0, config.horizon, config.unroll):
            meta_loss, theta, rnn = meta_loss_of_unroll(
                net,
                weights,
                problem,
                theta,
                rnn,
                start,
                config.unroll,
                initial=initial,
                loss_clip=config.loss_clip,
                second_order=config.second_order,
            )
            meta_opt.zero_grad()
            ok = bool(torch.isfinite(meta_loss))
            if ok:
                meta_loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                ok = bool(torch.isfinite(norm))
            if not ok:  # nothing non-finite reaches the weights; this problem is abandoned
                state["skipped"] += 1
                break
            meta_opt.step()
            unroll_losses.append(float(meta_loss.detach()))
            theta = {k: v.detach().requires_grad_(True) for k, v in theta.items()}
            rnn = [s.detach() for s in rnn]
        entry = {"iteration": i + 1, "meta_loss": sum(unroll_losses) / max(len(unroll_losses), 1)}
        if (i + 1) % config.eval_every == 0 or i + 1 == config.iterations:
            score = held_out_score(net, config)
            entry["held_out"] = score
            if score < state["best_score"]:
                state["best_score"] = score
                state["best"] = weights_io.record(net)["state_dict"]
        state["history"].append(entry)
        state["iteration"] = i + 1
        done_here += 1
        state["seconds"] = time.perf_counter() - began
        if log is not None:
            log(
                ", ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.items()
                )
            )
        if state["iteration"] % checkpoint_every == 0 or state["iteration"] == config.iterations:
            weights_io.atomic_save(
                {
                    "config": config.as_dict(),
                    "net": net.state_dict(),
                    "meta_opt": meta_opt.state_dict(),
                    "state": state,
                },
                ckpt_path,
            )
    best = build(config.kind, config.architecture)
    best.load_state_dict(state["best"])
    record = weights_io.record(
        best,
        config=config.as_dict(),
        task=config.task,
        seed=config.seed,
        evaluation={"held_out_summed_loss": state["best_score"], "skipped": state["skipped"]},
    )
    if state["iteration"] == config.iterations:
        weights_io.save(out, record)
    return MetaResult(record, state["history"], state["skipped"], state["seconds"])


# The bundled weights: (kind, task) -> the configuration ``ravine meta-train`` runs for them and
# the name they are bundled under (ravine/learned/weights/<kind>/<name>.pt).
PRESETS: dict[tuple[str, str], MetaConfig] = {
    ("l2l", "quadratic"): MetaConfig(
        kind="l2l", task="quadratic", iterations=100, meta_lr=0.01, eval_every=20
    ),
    # Second order: with the optimizee's gradients as constants, the held-out score of every seed
    # drifted up after 10-40 iterations (35 -> 90 in 150) whatever the meta-lr; with them, it
    # falls steadily. The decayed meta-lr and the held-out score on 8 problems every 10
    # iterations remove the late swings (docs/learned.md, "Digits"). The warmup: at the full
    # meta-lr from the first iteration, the run blew up at iteration 7 on a CPU with AVX2
    # kernels (held-out 2956 against 21.6 with AVX512's; one rounding apart at the start) and
    # never recovered; rising over 20 iterations, it ends at 21.7-22.4 on AVX2.
    ("mlp", "digits"): MetaConfig(
        kind="mlp",
        task="digits",
        iterations=150,
        meta_lr=0.003,
        meta_lr_final=0.1,
        meta_lr_warmup=20,
        second_order=True,
        eval_every=10,
        eval_problems=8,
    ),
}


def preset(kind: str, task: str) -> MetaConfig:
    """The bundled configuration of ``kind`` on ``task``; ValueError lists those that exist."""
    if (kind, task) not in PRESETS:
        known = ", ".join(f"{k} on {t}" for k, t in PRESETS)
        raise ValueError(f"no preset for kind {kind!r} on task {task!r} (presets: {known})")
    return PRESETS[(kind, task)]
