"""Adam and its family: Adam, AMSGrad, AdamW, AdaMax, Nadam."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ravine.optim.base import Optimizer
from ravine.optim.hyperparameters import (
    FLAG,
    NONNEGATIVE,
    POSITIVE,
    UNIT_OPEN_HIGH,
    Kind,
    OrNone,
    Reals,
)
from ravine.optim.torch_format import TorchCounterpart
from ravine.tensorlist import TL

# ravine's state names -> torch.optim.Adam's (the Adam family's checkpoints, both ways)
ADAM_STATE = {"m": "exp_avg", "v": "exp_avg_sq", "v_max": "max_exp_avg_sq"}
ADAM_KINDS: dict[str, Kind] = {
    "lr": NONNEGATIVE,
    "betas": Reals(UNIT_OPEN_HIGH, 2),
    "eps": POSITIVE,
}


def update_moments(m: TL, v: TL, g: TL, beta1: float, beta2: float) -> None:
    """m_t = b1 m + (1 - b1) g;  v_t = b2 v + (1 - b2) g^2 (the biased moment estimates)."""
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)


def adam_step(
    p: TL,
    m: TL,
    v: TL,
    *,
    t: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    debias: bool = True,
) -> None:
    """theta <- theta - lr * m_hat / (sqrt(v_hat) + eps), hats = bias-corrected when ``debias``."""
    if debias:
        # ** 0.5 rather than math.sqrt: t and the betas may be 0-d tensors (impl="compiled").
        denom = v.sqrt().div_((1 - beta2**t) ** 0.5).add_(eps)
        p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))
    else:
        p.addcdiv_(m, v.sqrt().add_(eps), value=-lr)


class Adam(Optimizer):
    """Adam (Kingma & Ba, ICLR 2015, arXiv:1412.6980), Algorithm 1; torch.optim.Adam's rule.

    m_t = b1 m_{t-1} + (1 - b1) g_t;  v_t = b2 v_{t-1} + (1 - b2) g_t^2
    m_hat = m_t / (1 - b1^t);  v_hat = v_t / (1 - b2^t)
    theta <- theta - lr m_hat / (sqrt(v_hat) + eps)

    ``amsgrad=True`` is torch's variant (max of v, then bias-corrected); :class:`AMSGrad` is the
    paper's. ``decoupled_weight_decay=True`` makes this AdamW.
    """

    paper = "Kingma & Ba 2015, arXiv:1412.6980"
    hyperparameter_kinds: ClassVar[dict[str, Kind]] = {
        **ADAM_KINDS,
        "amsgrad": FLAG,
        "decoupled_weight_decay": FLAG,
    }
    torch_counterpart = TorchCounterpart(("Adam", "AdamW"), ADAM_STATE)

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        decoupled_weight_decay: bool = False,
        **options: Any,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults, **options)

    def state_names_for(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("m", "v", "v_max") if group["amsgrad"] else ("m", "v")

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
        eps: float,
        amsgrad: bool,
    ) -> None:
        beta1, beta2 = betas
        update_moments(m, v, g, beta1, beta2)
        if amsgrad:
            v = v_max[0].maximum_(v)
        adam_step(p, m, v, t=t, lr=lr, beta1=beta1, beta2=beta2, eps=eps)


class AMSGrad(Optimizer):
    """AMSGrad (Reddi, Kale & Kumar, ICLR 2018, "On the Convergence of Adam and Beyond").

    As the survey states it: m_t, v_t as in Adam; v_hat_t = max(v_hat_{t-1}, v_t);
    theta <- theta - lr m_t / (sqrt(v_hat_t) + eps), with no bias correction (Reddi et al.'s
    Algorithm 2 with a constant beta1 and the survey's eps).

    ``debias=True`` gives torch.optim.Adam(amsgrad=True): the maximum is taken of the raw v,
    then m and v_hat are bias-corrected as in Adam.
    """

    state_names = ("m", "v", "v_max")
    paper = "Reddi, Kale & Kumar 2018, ICLR, arXiv:1904.09237"
    hyperparameter_kinds: ClassVar[dict[str, Kind]] = {**ADAM_KINDS, "debias": FLAG}
    # torch.optim.Adam(amsgrad=True) is debias=True (the paper's debias=False has no torch form).
    torch_counterpart = TorchCounterpart(
        ("Adam",),
        ADAM_STATE,
        requires={"amsgrad": True, "decoupled_weight_decay": False},
        implied={"debias": True},
    )

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        debias: bool = False,
        **options: Any,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, debias=debias)
        super().__init__(params, defaults, **options)

    def update(
        self,
        p: TL,
        g: TL,
        m: TL,
        v: TL,
        v_max: TL,
        *,
        t: int,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        debias: bool,
    ) -> None:
        beta1, beta2 = betas
        update_moments(m, v, g, beta1, beta2)
        v_max.maximum_(v)
        adam_step(p, m, v_max, t=t, lr=lr, beta1=beta1, beta2=beta2, eps=eps, debias=debias)


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, ICLR 2019, arXiv:1711.05101).

    theta <- theta (1 - lr * wd), then the Adam step. Deviation from the paper, which decays by
    eta_t * lambda with eta_t a schedule multiplier separate from alpha: the decay is scaled by
    the learning rate, as in torch.optim.AdamW (so a schedule on lr also schedules the decay).
    Default weight_decay = 1e-2 (torch's).
    """

    weight_decay_mode = "decoupled"
    paper = "Loshchilov & Hutter 2019, arXiv:1711.05101"
    torch_counterpart = TorchCounterpart(
        ("AdamW", "Adam"), ADAM_STATE, requires={"decoupled_weight_decay": True}
    )

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, True, **options)


class AdaMax(Optimizer):
    """AdaMax (Kingma & Ba 2015, arXiv:1412.6980, section 7.1): Adam with the infinity norm.

    m_t = b1 m + (1 - b1) g;  u_t = max(b2 u_{t-1}, |g_t| + eps)
    theta <- theta - lr / (1 - b1^t) * m_t / u_t

    Deviation from the paper (u_t = max(b2 u, |g|)): eps is added inside the max, as in
    torch.optim.Adamax, so u_t never reaches zero. Default lr = 2e-3 (the paper's).
    """

    state_names = ("m", "u")
    paper = "Kingma & Ba 2015, arXiv:1412.6980 (section 7.1)"
    hyperparameter_kinds: ClassVar[dict[str, Kind]] = ADAM_KINDS
    torch_counterpart = TorchCounterpart(("Adamax",), {"m": "exp_avg", "u": "exp_inf"})

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        **options: Any,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, **options)

    def update(
        self,
        p: TL,
        g: TL,
        m: TL,
        u: TL,
        *,
        t: int,
        lr: float,
        betas: tuple[float, float],
        eps: float,
    ) -> None:
        beta1, beta2 = betas
        m.lerp_(g, 1 - beta1)
        u.mul_(beta2).maximum_(g.abs().add_(eps))
        p.addcdiv_(m, u, value=-lr / (1 - beta1**t))


_MU_PRODUCTS: dict[tuple[float, float], list[float]] = {}


def nadam_mu(beta1: float, momentum_decay: float, t: int) -> float:
    """Dozat's momentum schedule mu_t = b1 (1 - 0.5 * 0.96^(t * psi)), as in torch.optim.NAdam."""
    return beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))


def nadam_mu_product(beta1: float, momentum_decay: float, t: int) -> float:
    """prod_{i <= t} mu_i, memoised: derivable from t, so it is not kept in the state.

    With 0-d tensors (impl="compiled") it is evaluated on the host by a custom op: the product
    has no closed form a compiled kernel could compute from t.
    """
    if isinstance(t, Tensor):
        return _mu_product_op(torch.as_tensor(beta1), torch.as_tensor(momentum_decay), t)
    products = _MU_PRODUCTS.setdefault((beta1, momentum_decay), [1.0])
    while len(products) <= t:
        products.append(products[-1] * nadam_mu(beta1, momentum_decay, len(products)))
    return products[t]


@torch.library.custom_op("ravine::nadam_mu_product", mutates_args=())
def _mu_product_op(beta1: Tensor, momentum_decay: Tensor, t: Tensor) -> Tensor:
    value = nadam_mu_product(beta1.item(), momentum_decay.item(), round(t.item()))
    return torch.tensor(value, dtype=t.dtype, device=t.device)


@_mu_product_op.register_fake
def _(beta1: Tensor, momentum_decay: Tensor, t: Tensor) -> Tensor:
    return torch.empty((), dtype=t.dtype, device=t.device)


class NAdam(Optimizer):
    """Nadam: Adam with Nesterov momentum (Dozat, ICLR 2016 workshop, "Incorporating Nesterov
    Momentum into Adam").

    Default (``momentum_decay=None``), the survey's form::

        m_hat = m_t / (1 - b1^t);  v_hat = v_t / (1 - b2^t)
        theta <- theta - lr / (sqrt(v_hat) + eps) * (b1 m_hat + (1 - b1) g_t / (1 - b1^t))

    ``momentum_decay=psi`` (torch's default 4e-3) gives torch.optim.NAdam: the momentum schedule
    mu_t = b1 (1 - 0.5 * 0.96^(t psi)) and its running product in the bias corrections.
    ``decoupled_weight_decay=True`` decays the weights as AdamW does.
    """

    paper = "Dozat 2016, ICLR workshop, 'Incorporating Nesterov Momentum into Adam'"
    state_names = ("m", "v")
    hyperparameter_kinds: ClassVar[dict[str, Kind]] = {
        **ADAM_KINDS,
        "momentum_decay": OrNone(NONNEGATIVE),
        "decoupled_weight_decay": FLAG,
    }
    # torch keeps the running product of mu_t per parameter; ravine derives it from t.
    torch_counterpart = TorchCounterpart(
        ("NAdam",),
        ADAM_STATE,
        derived={
            "mu_product": lambda group, t: nadam_mu_product(
                group["betas"][0], group["momentum_decay"], t
            )
        },
        check=lambda opt, group: (
            "momentum_decay=None (the survey's form) has no torch.optim.NAdam equivalent, "
            "whose momentum schedule is mu_t = b1 (1 - 0.5 * 0.96^(t psi)); use "
            "momentum_decay=4e-3 (torch's default) to match it"
            if group.get("momentum_decay") is None
            else None
        ),
    )

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float | None = None,
        decoupled_weight_decay: bool = False,
        **options: Any,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
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
        eps: float,
        momentum_decay: float | None,
    ) -> None:
        beta1, beta2 = betas
        update_moments(m, v, g, beta1, beta2)
        denom = v.sqrt().div_((1 - beta2**t) ** 0.5).add_(eps)
        if momentum_decay is None:
            bc1 = 1 - beta1**t
            p.addcdiv_(m, denom, value=-lr * beta1 / bc1)
            p.addcdiv_(g, denom, value=-lr * (1 - beta1) / bc1)
            return
        mu = nadam_mu(beta1, momentum_decay, t)
        mu_next = nadam_mu(beta1, momentum_decay, t + 1)
        mu_product = nadam_mu_product(beta1, momentum_decay, t)
        p.addcdiv_(g, denom, value=-lr * (1 - mu) / (1 - mu_product))
        p.addcdiv_(m, denom, value=-lr * mu_next / (1 - mu_product * mu_next))
