"""Aggregated momentum: AggMo (Lucas, Sun, Zemel & Grosse, ICLR 2019)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from torch import Tensor

from ravine.optim.base import Optimizer
from ravine.optim.hyperparameters import (
    NONNEGATIVE,
    UNIT_OPEN_HIGH,
    Integer,
    Interval,
    Kind,
    Reals,
    check_hyperparameter,
)
from ravine.tensorlist import TL


class AggMo(Optimizer):
    """AggMo (Lucas, Sun, Zemel & Grosse, ICLR 2019, arXiv:1804.00325), Algorithm 1.

    K momentum buffers, one per damping coefficient beta^(i), averaged::

        v^(i)_t = beta^(i) v^(i)_{t-1} - g_t          (i = 1..K, v_0 = 0)
        theta_t = theta_{t-1} + (lr / K) sum_i v^(i)_t

    ravine stores b^(i) = -v^(i) (so the buffers hold the same sign as the gradient, as
    torch.optim.SGD's momentum buffer does) and steps theta <- theta - (lr / K) sum_i b^(i): the
    same numbers. With one beta it is momentum SGD, torch.optim.SGD(lr, momentum=beta), exactly.
    A beta of 0 keeps no buffer (its b^(i) is g_t): the default vector stores two buffers, not
    three, and a step moves 28 bytes per float32 element instead of 36.

    Defaults: betas = (0, 0.9, 0.99), the paper's recommended damping vector (K = 3, a = 0.1 in
    its exponential form, see :meth:`from_exp_form`). ``lr`` = 1e-3 as ravine's Momentum (the
    paper tunes it per task). ``weight_decay`` adds wd * theta to the gradient.
    """

    paper = "Lucas, Sun, Zemel & Grosse 2019, ICLR, 'Aggregated Momentum', arXiv:1804.00325"
    # Which betas are zero decides the buffers (impl="compiled": a kernel per damping vector).
    static_hyperparameters: ClassVar[tuple[str, ...]] = ("betas",)
    hyperparameter_kinds: ClassVar[dict[str, Kind]] = {
        "lr": NONNEGATIVE,
        # One state buffer per nonzero entry: the length is the rule's K.
        "betas": Reals(UNIT_OPEN_HIGH, arity=None),
    }

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.0, 0.9, 0.99),
        weight_decay: float = 0.0,
        **options: Any,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay)
        super().__init__(params, defaults, **options)

    @classmethod
    def from_exp_form(
        cls,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        a: float = 0.1,
        k: int = 3,
        **kwargs: Any,
    ) -> AggMo:
        """The paper's exponential parameterisation: beta^(i) = 1 - a^(i-1), i = 1..k."""
        a = check_hyperparameter("a", a, Interval(0, 1, low_open=True, high_open=True))
        k = check_hyperparameter("k", k, Integer(Interval(1)))
        return cls(params, lr=lr, betas=tuple(1 - a**i for i in range(k)), **kwargs)

    def state_names_for(self, group: dict[str, Any]) -> tuple[str, ...]:
        # beta = 0 needs no buffer: b = 0 b + g is g itself (the default vector has one)
        return tuple(f"momentum_buffer_{i}" for i, beta in enumerate(group["betas"]) if beta != 0)

    def update(
        self, p: TL, g: TL, *buffers: TL, t: int, lr: float, betas: tuple[float, ...]
    ) -> None:
        stored = iter(buffers)
        terms = []
        for beta in betas:
            if beta == 0:
                terms.append(g)
            else:
                terms.append(next(stored).mul_(beta).add_(g))
        for b in terms:
            p.add_(b, alpha=-lr / len(betas))
