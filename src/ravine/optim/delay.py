"""Delay-tolerant AdaGrad: AdaGrad with adaptive revision (McMahan & Streeter, NIPS 2014)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from torch import Tensor

from ravine.optim.base import Optimizer
from ravine.optim.hyperparameters import NONNEGATIVE, POSITIVE, Integer, Kind
from ravine.tensorlist import TL


def _check_delay_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Invalid {name}: {value!r} (expected an integer {name} >= 0)")


class DelayTolerantAdagrad(Optimizer):
    """AdaGrad with adaptive revision for delayed gradients (McMahan & Streeter, NIPS 2014,
    "Delay-Tolerant Algorithms for Asynchronous Distributed Online Learning", AdaptiveRevision).

    In asynchronous training (a parameter server) a gradient is applied ``delay`` updates after
    the parameters it was computed on were read; the updates applied meanwhile are its forward
    gradients. AdaptiveRevision counts the interaction with them in the learning rate and revises
    the steps they took with the old learning rate, per coordinate::

        g_fwd = gbar_t - gbar_{t-delay}      (sum of the gradients applied while g was in flight)
        eta_old = lr / (sqrt(z') + eps)
        z  <- z + g^2 + 2 g g_fwd;           z' <- max(z', z)
        eta = lr / (sqrt(z') + eps)
        theta <- theta - eta g + (eta_old - eta) g_fwd
        gbar <- gbar + g

    With zero delay g_fwd = 0, z' = z = sum of g^2 and this is Adagrad, bit for bit
    (torch.optim.Adagrad's eps and initial_accumulator_value, no lr_decay).

    ``step(closure=None, delay=0)`` is told the delay of the gradient in ``.grad``, counted in
    this optimizer's steps (each parameter's own step count; a delay longer than the run so far
    reads the start). The sums gbar of the last ``max_delay`` steps are kept per parameter
    (``max_delay + 1`` extra tensors per parameter: choose it as the largest delay the system
    produces, e.g. a few times the number of workers); ``max_delay=0`` keeps none and is plain
    Adagrad. With ``max_delay > 0``, impl="compiled" falls back to "foreach" with a warning
    (the stale sum is selected by step count, which a compiled kernel would specialise on).

    Deviations: the paper writes lr / sqrt(z'); eps is added as in torch's Adagrad so that zero
    delays reproduce it. The paper updates only coordinates with a nonzero gradient; for a dense
    gradient the others do not move either (g = 0 leaves z, eta and theta unchanged).

    Defaults: lr = 1e-2, eps = 1e-10, initial_accumulator_value = 0 (torch.optim.Adagrad's),
    max_delay = 0. ``weight_decay`` adds wd * theta to the gradient.
    """

    paper = (
        "McMahan & Streeter 2014, NIPS, 'Delay-Tolerant Algorithms for Asynchronous Distributed "
        "Online Learning' (AdaptiveRevision)"
    )
    hyperparameter_kinds: ClassVar[dict[str, Kind]] = {
        "lr": NONNEGATIVE,
        "eps": POSITIVE,
        "initial_accumulator_value": NONNEGATIVE,
        "max_delay": Integer(NONNEGATIVE),
    }
    # The ring of gradient sums has max_delay + 1 slots: a structural constant of the rule.
    static_hyperparameters: ClassVar[tuple[str, ...]] = ("max_delay",)

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        eps: float = 1e-10,
        initial_accumulator_value: float = 0.0,
        weight_decay: float = 0.0,
        max_delay: int = 0,
        **options: Any,
    ) -> None:
        self._delay = 0
        defaults = dict(
            lr=lr,
            eps=eps,
            initial_accumulator_value=initial_accumulator_value,
            weight_decay=weight_decay,
            max_delay=max_delay,
        )
        super().__init__(params, defaults, **options)

    def validate_group(self, group: dict[str, Any]) -> None:
        super().validate_group(group)
        if group["max_delay"] > 0 and self.impl == "compiled" and self.engine.layout():
            raise ValueError(
                f"Invalid max_delay: {group['max_delay']!r} (a group with max_delay > 0 cannot "
                "join an optimizer already running with impl='compiled'; expected 0)"
            )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._fall_back_for(self.param_groups[-1])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            self._fall_back_for(group)

    def _fall_back_for(self, group: dict[str, Any]) -> None:
        """Once a group with max_delay > 0 is accepted, impl="compiled" becomes "foreach"."""
        if group["max_delay"] > 0 and self.impl == "compiled":
            warnings.warn(
                "DelayTolerantAdagrad with max_delay > 0 runs with impl='foreach': the stale "
                "gradient sum is selected by step count, which a compiled kernel would "
                "specialise on (a recompile per step)",
                UserWarning,
                stacklevel=3,
            )
            self.impl = "foreach"

    def state_names_for(self, group: dict[str, Any]) -> tuple[str, ...]:
        n = group["max_delay"]
        if n == 0:
            return ("sum",)
        return ("sum", "sum_max", *(f"grad_sum_{i}" for i in range(n + 1)))

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        state = super().init_state(p, group)
        value = group["initial_accumulator_value"]
        for name in ("sum", "sum_max"):
            if name in state:
                state[name].fill_(value)
        return state

    def step(self, closure: Callable[[], Any] | None = None, delay: int = 0) -> Any:
        """One step with the gradients in ``.grad``, computed ``delay`` steps ago."""
        _check_delay_count("delay", delay)
        for gi, group in enumerate(self.param_groups):
            if delay > group["max_delay"]:
                raise ValueError(
                    f"Invalid delay: {delay!r} (expected delay <= max_delay = "
                    f"{group['max_delay']} of parameter group {gi}; construct the optimizer "
                    "with a larger max_delay)"
                )
        self._delay = delay
        try:
            return super().step(closure)
        finally:
            self._delay = 0

    def update(
        self,
        p: TL,
        g: TL,
        z: TL,
        *revision: TL,
        t: int,
        lr: float,
        eps: float,
        max_delay: int,
    ) -> None:
        if max_delay == 0:  # static: no history, Adagrad
            z.addcmul_(g, g, value=1)
            p.addcdiv_(g, z.sqrt().add_(eps), value=-lr)
            return
        z_max, *ring = revision
        slots = max_delay + 1
        delay = min(self._delay, t - 1)
        current = ring[(t - 1) % slots]  # gbar after t - 1 updates
        g_fwd = current - ring[(t - 1 - delay) % slots]
        old_denominator = z_max.sqrt().add_(eps)
        z.addcmul_(g, g, value=1).addcmul_(g, g_fwd, value=2)
        z_max.maximum_(z)
        denominator = z_max.sqrt().add_(eps)
        # Three separate terms rather than (eta_old - eta) g_fwd: with zero delay the last two
        # add exact zeros and the step is Adagrad's bit for bit.
        p.addcdiv_(g, denominator, value=-lr)
        p.addcdiv_(g_fwd, old_denominator, value=lr)
        p.addcdiv_(g_fwd, denominator, value=-lr)
        ring[t % slots].copy_(current).add_(g)
