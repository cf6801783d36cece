"""Adam with dynamic bounds on the step size: AdaBound and AMSBound (Luo et al., ICLR 2019)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from torch import Tensor

from ravine.optim.adam import ADAM_KINDS, update_moments
from ravine.optim.base import Optimizer
from ravine.optim.hyperparameters import FLAG, NONNEGATIVE, POSITIVE, Kind
from ravine.tensorlist import TL

ADABOUND_PAPER = (
    "Luo, Xiong, Liu & Sun 2019, ICLR, 'Adaptive Gradient Methods with Dynamic Bound of "
    "Learning Rate', arXiv:1902.09843"
)


def bounds(final_lr: float, gamma: float, t: int) -> tuple[float, float]:
    """eta_l(t) = final_lr (1 - 1 / (gamma t + 1)),  eta_u(t) = final_lr (1 + 1 / (gamma t)):
    0 and infinity at the start, both final_lr in the limit (the paper's experiments use
    final_lr = 0.1, gamma = 1 - b2)."""
    return final_lr * (1 - 1 / (gamma * t + 1)), final_lr * (1 + 1 / (gamma * t))


class AdaBound(Optimizer):
    """AdaBound (Luo, Xiong, Liu & Sun, ICLR 2019, arXiv:1902.09843), Algorithm 2; with
    ``amsbound=True`` AMSBound, Algorithm 3.

    Adam's per-coordinate step size clipped into bounds that close in on a final SGD step::

        m_t = b1 m_{t-1} + (1 - b1) g_t;   v_t = b2 v_{t-1} + (1 - b2) g_t^2
        (AMSBound: v_t <- max(v_hat_{t-1}, v_t), kept as v_hat)
        eta_hat_t = Clip(lr / (sqrt(v_t) + eps), eta_l(t), eta_u(t));   eta_t = eta_hat_t / sqrt(t)
        theta <- theta - eta_t * m_t
        eta_l(t) = final_lr (1 - 1/(gamma t + 1));   eta_u(t) = final_lr (1 + 1/(gamma t))

    Early the bounds are (0, inf) and the rule is Adam-like; late both tend to final_lr and it
    is SGD with momentum (m is an EMA, so SGD with dampening = momentum = b1) at final_lr.

    The paper against the authors' released code (github.com/Luolc/AdaBound), which peer
    libraries follow: the code drops Algorithm 2's 1/sqrt(t) and moves Adam's bias corrections
    into the clip, step = lr sqrt(1 - b2^t) / (1 - b1^t). ravine follows the paper by default;
    ``sqrt_t_decay=False, debias=True`` reproduce the code at a constant lr (tested against a
    transcription of each). The code also rescales final_lr by lr / (lr at construction) so
    that an lr schedule moves the bounds; those construction-time rates are not in its
    state_dict (a resumed run rescales differently) and cover only the groups present at
    construction (its loop zips them with the groups, so a group added later is never
    updated). ravine keeps final_lr a hyperparameter of its own: schedule it directly if
    wanted. eps (not in the paper) is the code's, added to sqrt(v_t). The paper's beta_1t
    sequence is taken constant, as in its experiments.

    Defaults: lr = 1e-3, betas = (0.9, 0.999), final_lr = 0.1, gamma = 1e-3 (= 1 - b2, the
    paper's bound functions), eps = 1e-8. ``weight_decay`` adds wd * theta to the gradient.
    """

    paper = ADABOUND_PAPER
    hyperparameter_kinds: ClassVar[dict[str, Kind]] = {
        **ADAM_KINDS,
        "final_lr": NONNEGATIVE,
        "gamma": POSITIVE,
        "amsbound": FLAG,
        "sqrt_t_decay": FLAG,
        "debias": FLAG,
    }

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        final_lr: float = 0.1,
        gamma: float = 1e-3,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsbound: bool = False,
        sqrt_t_decay: bool = True,
        debias: bool = False,
        **options: Any,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            final_lr=final_lr,
            gamma=gamma,
            eps=eps,
            weight_decay=weight_decay,
            amsbound=amsbound,
            sqrt_t_decay=sqrt_t_decay,
            debias=debias,
        )
        super().__init__(params, defaults, **options)

    def state_names_for(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("m", "v", "v_max") if group["amsbound"] else ("m", "v")

    def update(
        self,
        p: TL,
        g: TL,
        m: TL,
        v: TL,
        *v_max: TL,
        t: int,
        lr: float,
        betas: tuple[float, float],
        final_lr: float,
        gamma: float,
        eps: float,
        amsbound: bool,
        sqrt_t_decay: bool,
        debias: bool,
    ) -> None:
        beta1, beta2 = betas
        update_moments(m, v, g, beta1, beta2)
        if amsbound:
            v = v_max[0].maximum_(v)
        alpha = lr * (1 - beta2**t) ** 0.5 / (1 - beta1**t) if debias else lr
        lower, upper = bounds(final_lr, gamma, t)
        # 1 / x then * alpha rather than alpha / x: under impl="compiled" alpha may be traced as a
        # 0-d tensor, and tensor / TL has no meaning to the tracer. In place: one temporary.
        step = v.sqrt().add_(eps).reciprocal_().mul_(alpha)
        step.clamp_(lower, upper)
        p.addcmul_(step, m, value=-(t**-0.5) if sqrt_t_decay else -1.0)


class AMSBound(AdaBound):
    """AMSBound (Luo et al., ICLR 2019, arXiv:1902.09843), Algorithm 3: :class:`AdaBound` on the
    running maximum of v_t (AMSGrad's), ``amsbound=True``. Same defaults and deviations."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        final_lr: float = 0.1,
        gamma: float = 1e-3,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        sqrt_t_decay: bool = True,
        debias: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            final_lr,
            gamma,
            eps,
            weight_decay,
            amsbound=True,
            sqrt_t_decay=sqrt_t_decay,
            debias=debias,
            **options,
        )
