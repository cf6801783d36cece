"""Rectified Adam: RAdam (Liu et al., ICLR 2020)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ravine.optim.adam import ADAM_KINDS, ADAM_STATE, update_moments
from ravine.optim.base import Optimizer
from ravine.optim.hyperparameters import FLAG, Interval, Kind
from ravine.optim.torch_format import TorchCounterpart
from ravine.tensorlist import TL


def _indicator(condition: Any, like: Any) -> Any:
    """1.0 where ``condition`` holds, else 0.0, for a bool, a SymBool or a 0-d tensor (then of
    ``like``'s dtype)."""
    if isinstance(condition, Tensor):
        return condition.to(like.dtype if isinstance(like, Tensor) else torch.float64)
    return torch.sym_ite(condition, 1.0, 0.0)


def _at_least(x: Any, low: float) -> Any:
    return x.clamp_min(low) if isinstance(x, Tensor) else max(x, low)


def radam_rectification(beta2: float, t: int, threshold: float) -> tuple[Any, Any]:
    """(on, r_t): on = 1.0 when rho_t > threshold (the variance is tractable), else 0.0; r_t the
    rectification term (0 when off).

    Written without a Python branch on t or beta2, whose values impl="compiled" traces
    symbolically (as SymFloats or 0-d tensors): one kernel serves every step."""
    rho_inf = 2 / (1 - beta2) - 1
    beta2_t = beta2**t
    rho_t = rho_inf - 2 * t * beta2_t / (1 - beta2_t)
    on = _indicator(rho_t > threshold, like=rho_t)
    # Clamped so that the square root stays real when rho_t <= 4 and the division defined when
    # rho_inf is 4 or 2 (beta2 = 0.6 or 0.5); those terms are multiplied by on = 0 there.
    numerator = _at_least((rho_t - 4) * (rho_t - 2) * rho_inf, 0.0)
    denominator = _at_least((rho_inf - 4) * (rho_inf - 2) * rho_t, 1e-300)
    return on, on * (numerator / denominator) ** 0.5


class RAdam(Optimizer):
    """RAdam (Liu, Jiang, He, Chen, Liu, Gao & Han, ICLR 2020, arXiv:1908.03265), Algorithm 2.

    Adam whose adaptive learning rate is used only once its variance is tractable, and then
    rectified::

        m_t, v_t as in Adam;  m_hat = m_t / (1 - b1^t)
        rho_inf = 2 / (1 - b2) - 1;  rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        if rho_t > 4:  l_t = sqrt(1 - b2^t) / (sqrt(v_t) + eps)
                       r_t = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t))
                       theta <- theta - lr r_t l_t m_hat
        else:          theta <- theta - lr m_hat          (un-adapted momentum SGD)

    Deviations and the peer implementations:

    - The paper switches at rho_t > 4 (where r_t becomes real); the authors' code switches at
      rho_t >= 5 ("more conservative since it's an approximated value") and torch.optim.RAdam at
      rho_t > 5, one step later with the default b2 (rho_5 = 4.99). ravine follows the paper by
      default; ``rho_threshold=5.0`` gives torch.optim.RAdam (and the authors' code, except at
      a rho_t of exactly 5).
    - eps: the paper's l_t = sqrt((1 - b2^t) / v_t) has none; as in torch and the authors' code
      it is added to sqrt(v_t) (not to the bias-corrected root, unlike Adam).

    Defaults: lr = 1e-3, betas = (0.9, 0.999), eps = 1e-8 (the paper's and torch's).
    ``decoupled_weight_decay=True`` decays as AdamW (torch's option of the same name).
    """

    state_names = ("m", "v")
    paper = (
        "Liu et al. 2020, ICLR, 'On the Variance of the Adaptive Learning Rate and Beyond', "
        "arXiv:1908.03265"
    )
    hyperparameter_kinds: ClassVar[dict[str, Kind]] = {
        **ADAM_KINDS,
        "rho_threshold": Interval(4),
        "decoupled_weight_decay": FLAG,
    }
    # torch.optim.RAdam switches to the rectified step at rho_t > 5.
    torch_counterpart = TorchCounterpart(("RAdam",), ADAM_STATE, implied={"rho_threshold": 5.0})

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        rho_threshold: float = 4.0,
        decoupled_weight_decay: bool = False,
        **options: Any,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            rho_threshold=rho_threshold,
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
        rho_threshold: float,
    ) -> None:
        beta1, beta2 = betas
        update_moments(m, v, g, beta1, beta2)
        on, r_t = radam_rectification(beta2, t, rho_threshold)
        bc1 = 1 - beta1**t
        if isinstance(on, float):
            # Eager (t a Python int): take only the branch that applies, one pass over p.
            if on:
                p.addcdiv_(m, v.sqrt().add_(eps), value=-lr * r_t * (1 - beta2**t) ** 0.5 / bc1)
            else:
                p.add_(m, alpha=-lr / bc1)
            return
        # Traced (impl="compiled"): both branches are written and the scalar of the one not taken
        # is exactly 0, so one kernel serves every step instead of one specialised on rho_t.
        p.addcdiv_(m, v.sqrt().add_(eps), value=-lr * r_t * (1 - beta2**t) ** 0.5 / bc1)
        p.add_(m, alpha=-lr * (1 - on) / bc1)
