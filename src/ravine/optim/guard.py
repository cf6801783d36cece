"""The non-finite guard's errors and its cheap test: which steps may overflow.

Shared by the engines (:mod:`ravine.optim.engines`, :mod:`ravine.optim.compiled`) and re-exported
by :mod:`ravine.optim.base`; imports no other module of ``ravine.optim``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


class NonFiniteGradientError(FloatingPointError):
    """A gradient held NaN or Inf; raised before any parameter or state was written."""


class NonFiniteUpdateError(NonFiniteGradientError):
    """Finite gradients whose update would write NaN or Inf (e.g. a float16 overflow).

    Raised under ``nonfinite="raise"`` before any parameter or state was written; under
    ``"skip"`` such a step is skipped and counted in ``skipped_steps``, as a non-finite gradient.
    """


# -- the update guard's cheap test (see EagerEngine.guarded_step) ---------------------------------
@functools.cache
def overflow_limit(dtype: torch.dtype) -> float:
    """The largest max|g| (times :func:`hyperparameter_scale`) whose step in ``dtype`` runs
    unchecked under the non-finite guard: sqrt(finfo.max) / 1e3, so that g*g stays below
    finfo.max / 1e6 and a million such squares still sum to a finite number. -inf (every step
    checked) for float16 and narrower formats, whose range one ordinary update can leave.

    The honest limit of the unchecked path: it looks at the gradients and hyperparameters, not
    at the values already held, so a parameter or accumulator within a factor ~1e3 of
    finfo.max (or an Adagrad sum of more than ~1e6 squares at the limit) can still overflow
    there. bfloat16 has float32's range and follows the same rule.
    """
    info = torch.finfo(dtype)
    if info.max < 2.0**32:
        return -math.inf
    return math.sqrt(info.max) / 1e3


def hyperparameter_scale(group: dict[str, Any], keys: Iterable[str]) -> float:
    """max(1, |x|) over the numbers among ``group[k]`` for ``k`` in ``keys`` (sequences such as
    betas included): how much a hyperparameter (a large lr or weight decay) may scale g."""
    scale = 1.0
    todo = [group.get(k) for k in keys]
    while todo:
        x = todo.pop()
        if isinstance(x, (tuple, list)):
            todo.extend(x)
        elif isinstance(x, Tensor) and x.numel() == 1:
            scale = max(scale, abs(float(x)))
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            scale = max(scale, abs(x))
    return scale


def max_abs(tensors: Iterable[Tensor]) -> dict[tuple[torch.device, torch.dtype], float] | None:
    """max|x| over ``tensors`` per (device, real dtype), or None if any holds NaN or Inf.

    One pass over the tensors and one sync per (device, dtype): ``torch._foreach_norm(inf)``
    (one fused launch on accelerators), ``torch.aminmax`` per tensor on CPU, where it is 4-7
    times faster than the inf-norm (10M floats: 16 vs 69 ms, benchmarks/step_speed.py's
    machine). Sparse tensors count by their (coalesced) values, complex ones by their real view.
    """
    by_kind: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for x in tensors:
        x = x.coalesce().values() if x.is_sparse else x
        x = torch.view_as_real(x) if x.is_complex() else x
        by_kind.setdefault((x.device, x.dtype), []).append(x)
    bounds = {}
    for kind, xs in by_kind.items():
        if kind[0].type == "cpu":
            ranges = [torch.aminmax(x) for x in xs if x.numel()]  # NaN propagates into both
            ends = [e for r in ranges for e in (r.max, r.min.neg())]
            bound = torch.stack(ends).max().item() if ends else 0.0
        else:
            bound = torch.stack(torch._foreach_norm(xs, math.inf)).max().item()
        if not math.isfinite(bound):  # NaN and Inf both make the max non-finite
            return None
        bounds[kind] = bound
    return bounds
