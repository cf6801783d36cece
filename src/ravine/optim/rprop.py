"""Rprop."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ravine.optim.base import Optimizer
from ravine.optim.hyperparameters import NONNEGATIVE, POSITIVE, Interval, Kind, Reals
from ravine.optim.torch_format import TorchCounterpart
from ravine.tensorlist import TL


class Rprop(Optimizer):
    """Resilient backpropagation (Riedmiller & Braun, ICNN 1993), in torch.optim.Rprop's form.

    Each weight keeps its own step size Delta, grown by eta+ while the gradient keeps its sign and
    shrunk by eta- when it flips, clamped to [step_min, step_max]; the step is -sign(g) * Delta.
    On a sign flip the gradient is treated as zero for that step and the next one ("Rprop-" /
    iRprop- of Igel & Huesken 2000: no weight backtracking), as torch.optim does. ``lr`` is the
    initial step size Delta_0 (0.1 in the paper; torch uses 0.01). Full-batch method: with
    mini-batches the sign flips are mostly noise. ``step_sizes[1]`` may be ``inf`` (no upper
    clamp), the one hyperparameter of ravine's that takes an infinite value on purpose.
    """

    state_names = ("prev", "step_size")
    weight_decay_mode = None
    paper = "Riedmiller & Braun 1993, ICNN, 'A direct adaptive method for faster backpropagation'"
    hyperparameter_kinds: ClassVar[dict[str, Kind]] = {
        "lr": POSITIVE,
        "etas": Reals(POSITIVE, 2),
        # An infinite largest step size is allowed: it means no upper clamp.
        "step_sizes": Reals(Interval(0, allow_inf=True), 2),
    }
    torch_counterpart = TorchCounterpart(("Rprop",))

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.1,
        etas: tuple[float, float] = (0.5, 1.2),
        step_sizes: tuple[float, float] = (1e-6, 50.0),
        **options: Any,
    ) -> None:
        super().__init__(params, dict(lr=lr, etas=etas, step_sizes=step_sizes), **options)

    def validate_group(self, group: dict[str, Any]) -> None:
        super().validate_group(group)
        eta_minus, eta_plus = group["etas"]
        if not 0.0 < eta_minus < 1.0 < eta_plus:
            raise ValueError(
                f"Invalid etas: {group['etas']!r} (expected 0 < etas[0] < 1 < etas[1])"
            )
        step_min, step_max = group["step_sizes"]
        if step_min not in NONNEGATIVE or step_min > step_max:
            raise ValueError(
                f"Invalid step_sizes: {group['step_sizes']!r} "
                "(expected 0 <= step_sizes[0] <= step_sizes[1], step_sizes[0] finite)"
            )

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        return {
            "prev": torch.zeros_like(p, memory_format=torch.preserve_format),
            "step_size": torch.full_like(p, group["lr"], memory_format=torch.preserve_format),
        }

    def update(
        self,
        p: TL,
        g: TL,
        prev: TL,
        step_size: TL,
        *,
        t: int,
        etas: tuple[float, float],
        step_sizes: tuple[float, float],
    ) -> None:
        eta_minus, eta_plus = etas
        agreement = (g * prev).sign()

        def factor_of(s: Tensor) -> Tensor:
            # The etas in s's dtype: torch.where on Python floats would round them to float32.
            # torch.full rather than as_tensor: a fill on the device, where as_tensor copies
            # from the host and waits for the device (a sync per step on CUDA).
            up = torch.full((), eta_plus, dtype=s.dtype, device=s.device)
            down = torch.full((), eta_minus, dtype=s.dtype, device=s.device)
            return torch.where(s > 0, up, torch.where(s < 0, down, 1.0))

        factor = agreement.map(factor_of)
        step_size.mul_(factor).clamp_(min=step_sizes[0], max=step_sizes[1])
        # After a sign flip the gradient counts as zero: no step now, no flip test next time.
        g_used = g.map(lambda x, s: x.masked_fill(s < 0, 0), agreement)
        p.addcmul_(g_used.sign(), step_size, value=-1)
        prev.copy_(g_used)
