"""Quasi-hyperbolic momentum and Adam: QHM and QHAdam (Ma & Yarats, ICLR 2019)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from torch import Tensor

from ravine.optim.adam import ADAM_KINDS, update_moments
from ravine.optim.base import Optimizer
from ravine.optim.hyperparameters import FLAG, NONNEGATIVE, UNIT, UNIT_OPEN_HIGH, Kind, Reals
from ravine.tensorlist import TL

QH_PAPER = (
    "Ma & Yarats 2019, ICLR, 'Quasi-hyperbolic momentum and Adam for deep learning', "
    "arXiv:1810.06801"
)


class QHM(Optimizer):
    """Quasi-hyperbolic momentum (Ma & Yarats, ICLR 2019, arXiv:1810.06801), Algorithm 1.

    An average of a plain SGD step and a momentum step, weighted by the immediate discount
    factor nu::

        b_t = beta b_{t-1} + (1 - beta) g_t                (b_0 = 0, no bias correction)
        theta <- theta - lr [(1 - nu) g_t + nu b_t]

    nu = 0 is plain SGD; nu = 1 is momentum SGD with the normalised (EMA) buffer, i.e.
    torch.optim.SGD(lr=lr (1 - beta), momentum=beta) exactly (the paper's section 3 identity).

    Defaults: the paper's rule of thumb nu = 0.7, beta = 0.999 ("momentum"). ``lr`` = 1e-2 is
    ravine's choice (the paper prescribes none): QHM's step is of the size of lr |g|, like SGD,
    and 1e-2 is the effective step of :class:`~ravine.optim.sgd.Momentum`'s defaults,
    1e-3 / (1 - 0.9). ``weight_decay`` adds wd * theta to the gradient (the paper's QHM has no
    decay; the ``weight_decay`` of the authors' qhoptim in its default "grad" form).
    """

    state_names = ("momentum_buffer",)
    paper = QH_PAPER
    hyperparameter_kinds: ClassVar[dict[str, Kind]] = {
        "lr": NONNEGATIVE,
        "momentum": UNIT_OPEN_HIGH,
        "nu": UNIT,
    }

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        momentum: float = 0.999,
        nu: float = 0.7,
        weight_decay: float = 0.0,
        **options: Any,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, nu=nu, weight_decay=weight_decay)
        super().__init__(params, defaults, **options)

    def update(self, p: TL, g: TL, b: TL, *, t: int, lr: float, momentum: float, nu: float) -> None:
        b.lerp_(g, 1 - momentum)
        # Two in-place adds rather than one combined direction: with nu = 0 the second adds
        # exactly zero, so the step is bit-identical to SGD's p - lr g.
        p.add_(g, alpha=-lr * (1 - nu))
        p.add_(b, alpha=-lr * nu)


class QHAdam(Optimizer):
    """QHAdam (Ma & Yarats, ICLR 2019, arXiv:1810.06801), Algorithm 2.

    Adam with both moment estimates made quasi-hyperbolic::

        m_t = b1 m_{t-1} + (1 - b1) g_t;       v_t = b2 v_{t-1} + (1 - b2) g_t^2
        m_hat = m_t / (1 - b1^t);              v_hat = v_t / (1 - b2^t)
        theta <- theta - lr [(1 - nu1) g_t + nu1 m_hat] / (sqrt((1 - nu2) g_t^2 + nu2 v_hat) + eps)

    nus = (1, 1) is Adam (torch.optim.Adam's eps placement, outside the square root).

    Defaults: the paper's recommendation nus = (0.7, 1.0), betas = (0.995, 0.999); lr = 1e-3,
    eps = 1e-8 as in Adam. The authors' qhoptim defaults to nus = (1, 1), betas = (0.9, 0.999),
    i.e. to Adam; ravine takes the paper's recommended values. ``decoupled_weight_decay=True``
    decays the weights as AdamW does (qhoptim's ``decouple_weight_decay``); by default
    ``weight_decay`` is added to the gradient the rule sees (qhoptim adds it to ``.grad`` in
    place, so the caller's gradient changes; ravine leaves ``.grad`` alone).
    """

    state_names = ("m", "v")
    paper = QH_PAPER
    hyperparameter_kinds: ClassVar[dict[str, Kind]] = {
        **ADAM_KINDS,
        "nus": Reals(UNIT, 2),
        "decoupled_weight_decay": FLAG,
    }

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.995, 0.999),
        nus: tuple[float, float] = (0.7, 1.0),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        **options: Any,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            nus=nus,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults, **options)

    def update(
        self,
        p: TL,
        g: TL,
        m: TL,
        v: TL,
        *,
        t: int,
        lr: float,
        betas: tuple[float, float],
        nus: tuple[float, float],
        eps: float,
    ) -> None:
        beta1, beta2 = betas
        nu1, nu2 = nus
        update_moments(m, v, g, beta1, beta2)
        numerator = m.mul(nu1 / (1 - beta1**t)).add_(g, alpha=1 - nu1)
        denominator = v.mul(nu2 / (1 - beta2**t)).addcmul_(g, g, value=1 - nu2).sqrt_().add_(eps)
        p.addcdiv_(numerator, denominator, value=-lr)
