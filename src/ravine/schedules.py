"""Learning-rate schedules from the survey and its lecture notes, built on torch.optim.lr_scheduler.

Time-dependent schedules (t counts scheduler steps: epochs or batches, as ``fit`` is told):

    piecewise constant   eta_t = eta_0 * factors[k]        for milestones[k-1] <= t < milestones[k]
    exponential          eta_t = eta_0 * exp(-t / r)                       (torch ExponentialLR)
    inverse time         eta_t = eta_0 * (1 + t / r) ** -c
    linear warmup        eta_t = eta_0 * (s + (1 - s) * min(t, T) / T)     (torch LinearLR)
    cosine               eta_t = eta_min + (eta_0 - eta_min)(1 + cos(pi t / T)) / 2  (torch)

Performance-dependent: eta stays constant until the validation metric stops improving for
``patience`` epochs, then is halved every epoch (``HalveOnPlateau``, a ReduceLROnPlateau).

Every schedule is a ``torch.optim.lr_scheduler.LRScheduler`` (or ReduceLROnPlateau), so it works
with any torch or ravine optimizer and its ``state_dict`` goes into checkpoints. Where torch has the
schedule we return torch's class; we only write what it lacks.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    ReduceLROnPlateau,
)

__all__ = [
    "SCHEDULES",
    "HalveOnPlateau",
    "InverseTime",
    "PiecewiseConstant",
    "cosine",
    "create",
    "exponential",
    "inverse_time",
    "linear_warmup",
    "performance",
    "piecewise_constant",
]

Scheduler = LRScheduler | ReduceLROnPlateau


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


class PiecewiseConstant:
    """Multiplier for LambdaLR: factors[k] on [milestones[k-1], milestones[k]).

    A callable object rather than a lambda so LambdaLR's state_dict records it (torch saves the
    ``__dict__`` of callable objects, but not of plain functions).
    """

    def __init__(self, milestones: Sequence[int], factors: Sequence[float]) -> None:
        for name, value in (("milestones", milestones), ("factors", factors)):
            if not isinstance(value, list | tuple):
                raise ValueError(f"{name} must be a list or tuple, got {value!r}")
        if not all(isinstance(m, int) and not isinstance(m, bool) for m in milestones):
            raise ValueError(f"milestones must be integers, got {milestones!r}")
        milestones = list(milestones)
        if len(factors) != len(milestones) + 1:
            raise ValueError(
                f"factors must have len(milestones) + 1 = {len(milestones) + 1} entries, "
                f"got {len(factors)}"
            )
        if any(m <= 0 for m in milestones) or any(
            b <= a for a, b in itertools.pairwise(milestones)
        ):
            raise ValueError(
                f"milestones must be strictly increasing positive integers, got {milestones!r}"
            )
        for i, f in enumerate(factors):
            _positive(f"factors[{i}]", f)
        self.milestones = milestones
        self.factors = [float(f) for f in factors]

    def __call__(self, t: int) -> float:
        k = sum(1 for m in self.milestones if t >= m)
        return self.factors[k]


class InverseTime:
    """Multiplier (1 + t / r) ** -c for LambdaLR: the reciprocal / inverse-time decay."""

    def __init__(self, r: float, c: float = 1.0) -> None:
        _positive("r", r)
        _positive("c", c)
        self.r = float(r)
        self.c = float(c)

    def __call__(self, t: int) -> float:
        return (1.0 + t / self.r) ** -self.c


def piecewise_constant(
    optimizer: Optimizer, milestones: Sequence[int], factors: Sequence[float]
) -> LambdaLR:
    """Pre-determined learning rate per stage: eta_0 * factors[k] between milestones.

    torch's MultiStepLR only multiplies by one gamma at each milestone; this takes arbitrary levels.
    """
    return LambdaLR(optimizer, PiecewiseConstant(milestones, factors))


def exponential(optimizer: Optimizer, r: float) -> ExponentialLR:
    """eta_0 * exp(-t / r): torch's ExponentialLR with gamma = exp(-1 / r)."""
    _positive("r", r)
    return ExponentialLR(optimizer, gamma=math.exp(-1.0 / r))


def inverse_time(optimizer: Optimizer, r: float, c: float = 1.0) -> LambdaLR:
    """Reciprocal / inverse-time decay eta_0 * (1 + t / r) ** -c (c ~ 1 in the lecture notes)."""
    return LambdaLR(optimizer, InverseTime(r, c))


def linear_warmup(optimizer: Optimizer, warmup_steps: int, start_factor: float = 0.01) -> LinearLR:
    """Linear warmup from start_factor * eta_0 to eta_0 over warmup_steps, then constant.

    The heuristic that RAdam replaces (Liu et al., 2019, arXiv:1908.03265); popularised for large
    mini-batches by Goyal et al. (2017, arXiv:1706.02677). torch's LinearLR does exactly this.
    """
    if not (isinstance(warmup_steps, int) and warmup_steps >= 1):
        raise ValueError(f"warmup_steps must be an integer >= 1, got {warmup_steps!r}")
    if not (0.0 < start_factor <= 1.0):
        raise ValueError(f"start_factor must be in (0, 1], got {start_factor!r}")
    return LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_steps)


def cosine(optimizer: Optimizer, t_max: int, eta_min: float = 0.0) -> CosineAnnealingLR:
    """Cosine annealing to eta_min over t_max steps.

    Loshchilov & Hutter (2016), SGDR, arXiv:1608.03983; torch's CosineAnnealingLR.
    """
    if not (isinstance(t_max, int) and t_max >= 1):
        raise ValueError(f"t_max must be an integer >= 1, got {t_max!r}")
    if not eta_min >= 0:
        raise ValueError(f"eta_min must be >= 0, got {eta_min!r}")
    return CosineAnnealingLR(optimizer, T_max=t_max, eta_min=eta_min)


class HalveOnPlateau(ReduceLROnPlateau):
    """Performance-dependent schedule: constant until the metric stops improving, then decay.

    Keeps eta fixed while the monitored metric improves by more than ``min_delta``; once it has
    failed to improve for more than ``patience`` consecutive epochs, eta is multiplied by
    ``factor`` (1/2 in the lecture notes) at that epoch and at every epoch after it, i.e.
    "constant, then exponential". torch's ReduceLROnPlateau alone would wait out the patience
    again after each reduction, so the decay phase is added here.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        patience: int = 0,
        factor: float = 0.5,
        min_delta: float = 0.0,
        mode: Literal["min", "max"] = "min",
        min_lr: float = 0.0,
    ) -> None:
        if not (isinstance(patience, int) and patience >= 0):
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        if not (0.0 < factor < 1.0):
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        super().__init__(
            optimizer,
            mode=mode,
            factor=factor,
            patience=patience,
            threshold=min_delta,
            threshold_mode="abs",
            min_lr=min_lr,
        )
        self.decaying = False

    def step(self, metrics: Any, epoch: None = None) -> None:  # type: ignore[override]
        if not self.decaying:
            best_before = self.best
            super().step(metrics)
            # ReduceLROnPlateau zeroes num_bad_epochs when the metric improves (which moves
            # best) or when it reduces the rate (which leaves best alone); no cooldown here.
            self.decaying = self.num_bad_epochs == 0 and self.best == best_before
            return
        self.last_epoch += 1
        for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
            group["lr"] = max(float(group["lr"]) * self.factor, min_lr)
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]


def performance(
    optimizer: Optimizer, patience: int = 0, factor: float = 0.5, min_delta: float = 0.0
) -> HalveOnPlateau:
    """Constant until validation stops improving, then halve each epoch (see HalveOnPlateau)."""
    return HalveOnPlateau(optimizer, patience=patience, factor=factor, min_delta=min_delta)


SCHEDULES: dict[str, Callable[..., Scheduler]] = {
    "piecewise": piecewise_constant,
    "exponential": exponential,
    "inverse_time": inverse_time,
    "performance": performance,
    "warmup": linear_warmup,
    "cosine": cosine,
}


def create(name: str, optimizer: Optimizer, **kwargs: Any) -> Scheduler:
    """Build a schedule by name (``SCHEDULES`` keys), e.g. ``create("exponential", opt, r=10)``."""
    try:
        factory = SCHEDULES[name]
    except KeyError:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {name!r}") from None
    # Name a missing or unknown argument here, not in a TypeError from the call.
    params = list(inspect.signature(factory).parameters.values())[1:]  # after the optimizer
    accepted = [p.name for p in params]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"schedule {name!r} does not take {', '.join(unknown)}; it takes {', '.join(accepted)}"
        )
    missing = [p.name for p in params if p.default is p.empty and p.name not in kwargs]
    if missing:
        raise ValueError(
            f"schedule {name!r} needs {', '.join(missing)} (it takes {', '.join(accepted)})"
        )
    return factory(optimizer, **kwargs)
