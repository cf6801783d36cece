"""Gradient checking against central finite differences.

    dJ/dtheta_i ~ (J(theta + h e_i) - J(theta - h e_i)) / (2 h)        error O(h^2)

The relative error per element is |a - n| / max(|a| + |n|, floor), as in the CS231n notes and
LeCun et al., "Efficient BackProp" (1998). In float64 a right gradient gives ~1e-7 (up to ~1e-5
where rounding in J dominates tiny gradients); a wrong one gives ~1e-2 or more.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["GradcheckResult", "gradcheck"]

# Defaults per dtype: h balances truncation error O(h^2) against rounding error O(eps / h).
_DEFAULT_EPS = {torch.float64: 1e-6, torch.float32: 1e-3}
_DEFAULT_TOL = {torch.float64: 1e-5, torch.float32: 1e-2}


@dataclass
class GradcheckResult:
    """Worst relative error per parameter; ``passed`` when every one is within ``tolerance``."""

    errors: dict[str, float]
    tolerance: float
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def worst(self) -> float:
        return max(self.errors.values(), default=0.0)

    @property
    def passed(self) -> bool:
        return all(e <= self.tolerance for e in self.errors.values())

    @property
    def failed(self) -> list[str]:
        return [name for name, e in self.errors.items() if e > self.tolerance]

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        lines = [
            f"{name}: max rel err {err:.3e} over {self.checked.get(name, 0)} entries"
            + ("  FAIL" if err > self.tolerance else "")
            for name, err in self.errors.items()
        ]
        verdict = "passed" if self.passed else "FAILED"
        return "\n".join([*lines, f"gradcheck {verdict} (tolerance {self.tolerance:.1e})"])


def _named(
    params: Iterable[torch.Tensor]
    | Mapping[str, torch.Tensor]
    | Iterable[tuple[str, torch.Tensor]],
) -> list[tuple[str, torch.Tensor]]:
    if isinstance(params, Mapping):
        return list(params.items())
    items = list(params)
    if items and isinstance(items[0], tuple):
        return [(str(n), p) for n, p in items]
    return [(f"param{i}", p) for i, p in enumerate(items)]


def gradcheck(
    fn: Callable[[], torch.Tensor],
    params: Iterable[torch.Tensor]
    | Mapping[str, torch.Tensor]
    | Iterable[tuple[str, torch.Tensor]],
    grads: Sequence[torch.Tensor] | Callable[[], Sequence[torch.Tensor]] | None = None,
    *,
    eps: float | None = None,
    tolerance: float | None = None,
    max_entries: int | None = 200,
    seed: int = 0,
) -> GradcheckResult:
    """Compare a gradient with central finite differences of ``fn`` at ``params``.

    ``fn()`` evaluates the scalar objective from the current values of ``params`` (a closure, as
    for ``optimizer.step``). ``params`` may be tensors, ``(name, tensor)`` pairs such as
    ``model.named_parameters()``, or a dict. ``grads`` is the gradient to check (tensors, or a
    callable returning them); by default autograd's. At most ``max_entries`` entries per parameter
    are probed (a seeded random subset; None probes all). Use float64 for a sharp test.
    """
    named = _named(params)
    if not named:
        raise ValueError("params must contain at least one tensor, got none")
    dtype = named[0][1].dtype
    if not dtype.is_floating_point:
        raise ValueError(f"params must be floating point, got dtype {dtype}")
    eps = _DEFAULT_EPS.get(dtype, 1e-2) if eps is None else eps
    tolerance = _DEFAULT_TOL.get(dtype, 5e-2) if tolerance is None else tolerance
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance!r}")
    if max_entries is not None and max_entries < 1:
        raise ValueError(f"max_entries must be >= 1 or None, got {max_entries!r}")

    tensors = [p for _, p in named]
    if grads is None:
        with torch.enable_grad():
            loss = fn()
            if loss.numel() != 1:
                raise ValueError(f"fn must return a scalar, got shape {tuple(loss.shape)}")
            analytic = torch.autograd.grad(loss, tensors, allow_unused=True)
        analytic = [torch.zeros_like(p) if g is None else g for p, g in zip(tensors, analytic)]
    else:
        analytic = list(grads() if callable(grads) else grads)
    if len(analytic) != len(tensors):
        raise ValueError(
            f"grads must have one tensor per param ({len(tensors)}), got {len(analytic)}"
        )
    for (name, p), g in zip(named, analytic):
        if g.shape != p.shape:
            raise ValueError(
                f"grads for {name} must have shape {tuple(p.shape)}, got {tuple(g.shape)}"
            )

    gen = torch.Generator().manual_seed(seed)
    errors: dict[str, float] = {}
    checked: dict[str, int] = {}
    with torch.no_grad():
        for (name, p), g in zip(named, analytic):
            flat, gflat = p.view(-1), g.detach().reshape(-1)
            n = flat.numel()
            if max_entries is None or n <= max_entries:
                idx = torch.arange(n)
            else:
                idx = torch.randperm(n, generator=gen)[:max_entries]
            worst = 0.0
            for i in idx.tolist():
                orig = flat[i].item()
                flat[i] = orig + eps
                plus = float(fn())
                flat[i] = orig - eps
                minus = float(fn())
                flat[i] = orig  # restore exactly: we wrote a copy, not orig +- eps - eps
                numeric = (plus - minus) / (2 * eps)
                a = float(gflat[i])
                # floor keeps 0 vs 1e-12 from reading as a 100% error
                err = abs(a - numeric) / max(abs(a) + abs(numeric), 1e-8)
                worst = max(worst, err) if math.isfinite(err) else math.inf
            errors[name] = worst
            checked[name] = len(idx)
    return GradcheckResult(errors=errors, tolerance=tolerance, checked=checked)
