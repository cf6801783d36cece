"""Run optimizers from one start point on a surface and record where they go."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ravine.optim.base import NonFiniteGradientError
from ravine.surfaces import Surface, get
from ravine.viz.specs import OptimizerSpec, parse_specs
from ravine.viz.tape import Unsupported, ValueAndGrad, compile_surface

#: A run stops as diverged once it is this many window-extents away from the window (or non-finite):
#: far enough that leaving the view is not mistaken for divergence, near enough to stay finite.
ESCAPE_FACTOR = 100.0


@dataclass(frozen=True)
class Trajectory:
    """Positions ``points[t]`` after ``t`` steps (``points[0]`` is the start) and losses there.

    A run that blows up is cut at ``diverged_at``: its last point is the first one that was
    non-finite or beyond the escape box (or the last finite one before it). On a surface that is
    unbounded below (the saddles) running off to infinity is the right answer, not a blow-up: such
    a run is cut at ``escaped_at`` instead and reported as having left the view.
    """

    spec: OptimizerSpec
    surface: Surface
    points: np.ndarray
    losses: np.ndarray
    steps: int
    diverged_at: int | None = None
    escaped_at: int | None = None

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def final(self) -> tuple[float, float]:
        x, y = self.points[-1]
        return float(x), float(y)

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def in_window(self) -> bool:
        """Whether the final point is inside the surface's plotting window."""
        xmin, xmax, ymin, ymax = self.surface.window
        x, y = self.final
        return xmin <= x <= xmax and ymin <= y <= ymax

    @property
    def status(self) -> str:
        """``''``, ``'diverged at step N'`` or ``'left the view'`` (for legends)."""
        if self.diverged_at is not None:
            return f"diverged at step {self.diverged_at}"
        return "" if self.in_window else "left the view"


def _escape_bound(surface: Surface, start: Sequence[float]) -> float:
    xmin, xmax, ymin, ymax = surface.window
    extent = max(xmax - xmin, ymax - ymin, abs(start[0]), abs(start[1]))
    return ESCAPE_FACTOR * extent


#: Positions are preallocated (steps x runs x 2) and every step costs a forward/backward pass:
#: a bound keeps ``steps=10**9`` from hanging or exhausting memory.
MAX_STEPS = 100_000


def check_steps(steps: int) -> int:
    """``steps`` as given, or a ValueError unless it is an integer in 1..MAX_STEPS."""
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps={steps!r}: expected an integer from 1 to {MAX_STEPS}")
    return steps


#: Closure optimizers (L-BFGS) iterate up to ``max_iter`` times within one step: bound the total
#: (MAX_STEPS steps at L-BFGS's default of 20), so ``max_iter=10**8`` cannot hang a picture.
MAX_INNER_ITERATIONS = 2_000_000


def check_work(specs: Sequence[OptimizerSpec], steps: int) -> None:
    """Refuse a spec whose ``max_iter`` (capped by ``max_eval``) times ``steps`` is too large."""
    for spec in specs:
        kwargs = spec.kwargs
        inner = [
            v
            for v in (kwargs.get("max_iter"), kwargs.get("max_eval"))
            if isinstance(v, int) and not isinstance(v, bool)
        ]
        if "max_iter" in kwargs and inner and steps * min(inner) > MAX_INNER_ITERATIONS:
            raise ValueError(
                f"optimizer spec {str(spec)!r} with steps={steps} runs up to "
                f"{steps * min(inner)} inner iterations; expected at most "
                f"{MAX_INNER_ITERATIONS} (lower max_iter or steps)"
            )


def check_start(start: Sequence[float]) -> tuple[float, float]:
    """A start point as two finite floats, or a ValueError."""
    try:
        x, y = (float(v) for v in start)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"start={start!r}: expected a finite point (x, y)") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"start={tuple(start)!r}: expected a finite point (x, y)")
    return x, y


def _check(steps: int, start: Sequence[float]) -> tuple[float, float]:
    check_steps(steps)
    return check_start(start)


class _Runs:
    """Several optimizers on one surface, each on its own 2-element parameter.

    Every step starts with ONE batched forward/backward that evaluates the surface at all
    current points (the rows are independent, so the gradient of the summed loss is each point's
    own gradient). Each optimizer's ``step(closure)`` then finds its gradient in place: the first
    closure call of a step returns the batched loss, and only optimizers that evaluate again
    within a step (L-BFGS's line search) pay for a fresh single-point evaluation. So the surface's
    autograd cost, which is all per-op Python and dispatch overhead on 2-element tensors, is paid
    once per step rather than once per optimizer.

    In float64 on a surface :mod:`ravine.viz.tape` can replay (the polynomial ones), that
    evaluation is not autograd's but the same arithmetic in Python floats, in autograd's order:
    the same bits at a fraction of the cost. L-BFGS's extra evaluations stay on autograd.
    """

    def __init__(
        self,
        surface: Surface,
        specs: Sequence[OptimizerSpec],
        start: tuple[float, float],
        dtype: torch.dtype,
    ) -> None:
        self.fn = surface.fn
        self.params = [torch.tensor(start, dtype=dtype, requires_grad=True) for _ in specs]
        self.opts = [spec.build([p]) for spec, p in zip(specs, self.params)]
        self.cached: list[torch.Tensor | None] = [None] * len(specs)
        self.closures = [self._closure(k) for k in range(len(specs))]
        # (one run alone, several runs batched): their gradients differ in the sign of a zero.
        # Only ravine's own surfaces (the built-in ones and expr: formulas, pure functions of
        # x and y): a function of yours may read state that changes after it was traced.
        self.exact: tuple[ValueAndGrad, ValueAndGrad] | None = None
        if dtype == torch.float64 and getattr(self.fn, "__module__", None) == "ravine.surfaces":
            with contextlib.suppress(Unsupported):
                self.exact = (compile_surface(self.fn, False), compile_surface(self.fn, True))

    def _closure(self, k: int) -> Callable[[], torch.Tensor]:
        p, opt, fn, cached = self.params[k], self.opts[k], self.fn, self.cached

        def closure() -> torch.Tensor:
            loss = cached[k]
            if loss is not None:
                cached[k] = None
                return loss
            opt.zero_grad()
            x, y = p.unbind()
            loss = fn(x, y)
            loss.backward()
            return loss

        return closure

    def evaluate(self, active: list[int], at: list[list[list[float]]]) -> None:
        """One forward/backward for all active runs; leaves each gradient in its ``.grad``.
        ``at[k][-1]``: where run ``k`` is now, as floats (the exact values of its parameter)."""
        if self.exact is not None:
            value_and_grad = self.exact[len(active) > 1]
            for k in active:
                f, gx, gy = value_and_grad(*at[k][-1])
                self.params[k].grad = torch.tensor([gx, gy], dtype=torch.float64)
                self.cached[k] = torch.tensor(f, dtype=torch.float64)
            return
        params = [self.params[k] for k in active]
        for p in params:
            p.grad = None
        if len(params) == 1:
            # Alone, stacking and summing would only add autograd nodes.
            x, y = params[0].unbind()
            loss = self.fn(x, y)
            loss.backward()
            self.cached[active[0]] = loss.detach()
            return
        points = torch.stack(params)
        losses = self.fn(points[:, 0], points[:, 1])
        losses.sum().backward()
        for k, loss in zip(active, losses.detach().unbind()):
            self.cached[k] = loss


class Race:
    """Optimizers run in lock step from one start, resumable: :meth:`advance` continues the
    same runs, :meth:`trajectories` reads where they are. A race advanced to ``t`` and then on
    to ``steps`` computes exactly what one advance to ``steps`` does, so a server can show an
    exact prefix of every path early at no extra cost (:mod:`ravine.serve`). Make one with
    :func:`race`; :func:`run` is ``race(...).advance().trajectories()``.
    """

    def __init__(
        self,
        surface: Surface,
        specs: Sequence[OptimizerSpec],
        *,
        steps: int,
        start: tuple[float, float],
        dtype: torch.dtype,
    ) -> None:
        self.surface, self.specs, self.steps, self.dtype = surface, list(specs), steps, dtype
        self._runs = _Runs(surface, specs, start, dtype)
        self._bound = _escape_bound(surface, start)
        # Positions as Python floats, read with one host copy a step (every value of the dtype
        # is a double exactly): a tensor write and a reduction a step cost more than the step.
        self._paths = [[p.tolist()] for p in self._runs.params]
        self._diverged_at: list[int | None] = [None] * len(specs)
        self._escaped_at: list[int | None] = [None] * len(specs)
        self._active = list(range(len(specs)))
        self.t = 0

    @property
    def finished(self) -> bool:
        """Whether every run has taken all its steps or stopped (diverged or escaped)."""
        return self.t >= self.steps or not self._active

    def advance(self, until: int | None = None) -> Race:
        """Step every running optimizer on until step ``until`` (default: all ``steps``)."""
        until = self.steps if until is None else min(until, self.steps)
        runs, paths, bound = self._runs, self._paths, self._bound
        while self.t < until and self._active:
            t = self.t = self.t + 1
            runs.evaluate(self._active, paths)
            stepped = []
            for k in self._active:
                try:
                    runs.opts[k].step(runs.closures[k])
                except NonFiniteGradientError:
                    # ravine refuses a step on an Inf/NaN gradient: the run has blown up.
                    self._diverged_at[k] = t
                    continue
                stepped.append(k)
            now: list[list[float]] = []
            if len(stepped) == 1:
                now = [runs.params[stepped[0]].tolist()]
            elif stepped:
                with torch.no_grad():
                    now = torch.stack([runs.params[k] for k in stepped]).tolist()
            still = []
            for k, point in zip(stepped, now):
                x, y = point
                paths[k].append(point)
                if abs(x) <= bound and abs(y) <= bound:  # False for NaN too
                    still.append(k)
                    continue
                finite = math.isfinite(x) and math.isfinite(y)
                if finite and self.surface.min_value is None:
                    self._escaped_at[k] = t
                else:
                    self._diverged_at[k] = t
                if not finite:  # keep the offending point only when it can be drawn toward
                    paths[k].pop()
            self._active = still
        return self

    def trajectories(self) -> list[Trajectory]:
        """Every run so far, one trajectory each (``steps``: all the race's once finished,
        else the steps taken)."""
        steps = self.steps if self.finished else self.t
        # One (step, run, xy) block as the runs were always recorded: the losses are evaluated
        # on the same strided columns, so they keep their bits.
        out = torch.empty(max(len(p) for p in self._paths), len(self.specs), 2, dtype=self.dtype)
        trajectories = []
        for k, spec in enumerate(self.specs):
            last = len(self._paths[k]) - 1
            out[: last + 1, k] = torch.tensor(self._paths[k], dtype=self.dtype)
            points = out[: last + 1, k]
            with torch.no_grad():
                losses = self.surface.fn(points[:, 0], points[:, 1])
            trajectories.append(
                Trajectory(
                    spec=spec,
                    surface=self.surface,
                    points=points.numpy().astype(np.float64),
                    losses=losses.numpy().astype(np.float64),
                    steps=steps,
                    diverged_at=self._diverged_at[k],
                    escaped_at=self._escaped_at[k],
                )
            )
        return trajectories


def race(
    surface: Surface | str,
    optimizers: str | Sequence[str | OptimizerSpec],
    *,
    steps: int = 200,
    start: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float64,
) -> Race:
    """A :class:`Race` of every optimizer spec from the same start on ``surface``, checked as
    :func:`run` checks its arguments, at step 0."""
    surface = get(surface)
    specs = parse_specs(optimizers)
    start_xy = _check(steps, surface.start if start is None else start)
    check_work(specs, steps)
    return Race(surface, specs, steps=steps, start=start_xy, dtype=dtype)


def run_one(
    surface: Surface | str,
    spec: OptimizerSpec | str,
    *,
    steps: int,
    start: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float64,
) -> Trajectory:
    """Run one optimizer for ``steps`` steps, always through ``step(closure)`` (L-BFGS needs it)."""
    (trajectory,) = run(surface, [spec], steps=steps, start=start, dtype=dtype)
    return trajectory


def run(
    surface: Surface | str,
    optimizers: str | Sequence[str | OptimizerSpec],
    *,
    steps: int = 200,
    start: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float64,
) -> list[Trajectory]:
    """Run every optimizer spec from the same start on ``surface``; one trajectory each.

    The runs advance together, step by step, sharing one batched evaluation of the surface per
    step (see :class:`_Runs`); each optimizer is driven by ``step(closure)``.
    """
    return race(surface, optimizers, steps=steps, start=start, dtype=dtype).advance().trajectories()
