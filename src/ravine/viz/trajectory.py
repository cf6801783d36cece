"""Run optimizers from one start point on a surface and record where they go."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ravine.optim.base import NonFiniteGradientError
from ravine.surfaces import Surface, get
from ravine.viz.specs import OptimizerSpec, parse_specs

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


def run_one(
    surface: Surface | str,
    spec: OptimizerSpec | str,
    *,
    steps: int,
    start: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float64,
) -> Trajectory:
    """Run one optimizer for ``steps`` steps, always through ``step(closure)`` (L-BFGS needs it)."""
    surface = get(surface)
    (spec,) = parse_specs([spec]) if isinstance(spec, str) else (spec,)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r}: expected a positive integer")
    start = surface.start if start is None else start
    if len(start) != 2 or not all(math.isfinite(float(v)) for v in start):
        raise ValueError(f"start={tuple(start)!r}: expected a finite point (x, y)")

    p = torch.tensor([float(start[0]), float(start[1])], dtype=dtype, requires_grad=True)
    opt = spec.build([p])
    fn = surface.fn

    def closure() -> torch.Tensor:
        opt.zero_grad()
        x, y = p.unbind()
        loss = fn(x, y)
        loss.backward()
        return loss

    bound = _escape_bound(surface, start)
    out = torch.empty(steps + 1, 2, dtype=dtype)
    pd = p.detach()
    out[0] = pd
    diverged_at: int | None = None
    escaped_at: int | None = None
    last = steps
    for t in range(1, steps + 1):
        try:
            opt.step(closure)
        except NonFiniteGradientError:
            # ravine refuses a step on an Inf/NaN gradient: the run has blown up.
            diverged_at, last = t, t - 1
            break
        out[t] = pd
        # One reduction and one sync per step; `not <=` also catches NaN.
        if not float(pd.abs().max()) <= bound:
            finite = bool(torch.isfinite(pd).all())
            if finite and surface.min_value is None:
                escaped_at = t
            else:
                diverged_at = t
            # Keep the offending point only when it is finite, so it can be drawn toward.
            last = t if finite else t - 1
            break
    points = out[: last + 1]
    with torch.no_grad():
        losses = fn(points[:, 0], points[:, 1])
    return Trajectory(
        spec=spec,
        surface=surface,
        points=points.numpy().astype(np.float64),
        losses=losses.numpy().astype(np.float64),
        steps=steps,
        diverged_at=diverged_at,
        escaped_at=escaped_at,
    )


def run(
    surface: Surface | str,
    optimizers: str | Sequence[str | OptimizerSpec],
    *,
    steps: int = 200,
    start: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float64,
) -> list[Trajectory]:
    """Run every optimizer spec from the same start on ``surface``; one trajectory each."""
    surface = get(surface)
    specs = parse_specs(optimizers)
    return [run_one(surface, s, steps=steps, start=start, dtype=dtype) for s in specs]
