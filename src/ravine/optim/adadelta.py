"""Adadelta."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from torch import Tensor

from ravine.optim.base import Optimizer
from ravine.optim.hyperparameters import NONNEGATIVE, POSITIVE, UNIT, Kind
from ravine.optim.torch_format import TorchCounterpart
from ravine.tensorlist import TL


class Adadelta(Optimizer):
    """Adadelta (Zeiler 2012, arXiv:1212.5701), Algorithm 1; torch.optim.Adadelta's rule.

    E[g^2]_t = rho E[g^2]_{t-1} + (1 - rho) g_t^2
    dx_t = - RMS[dx]_{t-1} / RMS[g]_t * g_t,   RMS[y] = sqrt(E[y^2] + eps)
    E[dx^2]_t = rho E[dx^2]_{t-1} + (1 - rho) dx_t^2;   theta <- theta + lr * dx_t

    No learning rate is needed: the default ``lr=1.0`` is Zeiler's rule exactly; ``lr`` is only a
    multiplier, as in torch.optim. ``rho=0.9`` as in the survey and torch (Zeiler used 0.95).
    """

    state_names = ("Eg2", "Edx2")
    paper = "Zeiler 2012, arXiv:1212.5701"
    hyperparameter_kinds: ClassVar[dict[str, Kind]] = {
        "lr": NONNEGATIVE,
        "rho": UNIT,
        "eps": POSITIVE,
    }
    torch_counterpart = TorchCounterpart(("Adadelta",), {"Eg2": "square_avg", "Edx2": "acc_delta"})

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        **options: Any,
    ) -> None:
        super().__init__(
            params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay), **options
        )

    def update(
        self, p: TL, g: TL, Eg2: TL, Edx2: TL, *, t: int, lr: float, rho: float, eps: float
    ) -> None:
        Eg2.mul_(rho).addcmul_(g, g, value=1 - rho)
        rms_g = Eg2.add(eps).sqrt_()
        dx = Edx2.add(eps).sqrt_().div_(rms_g).mul_(g)  # -dx_t
        Edx2.mul_(rho).addcmul_(dx, dx, value=1 - rho)
        p.add_(dx, alpha=-lr)
