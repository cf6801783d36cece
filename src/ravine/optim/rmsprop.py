"""RMSprop."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from torch import Tensor

from ravine.optim.base import Optimizer
from ravine.optim.hyperparameters import FLAG, NONNEGATIVE, POSITIVE, UNIT, Kind
from ravine.optim.torch_format import TorchCounterpart
from ravine.tensorlist import TL


class RMSprop(Optimizer):
    """RMSprop (Hinton, Coursera lecture 6e, 2012); torch.optim.RMSprop's rule.

    v_t = alpha v_{t-1} + (1 - alpha) g_t^2;  theta <- theta - lr * g_t / (sqrt(v_t) + eps)

    ``centered=True`` (Graves 2013, arXiv:1308.0850) divides by sqrt(v_t - gbar_t^2) + eps with
    gbar_t = alpha gbar_{t-1} + (1 - alpha) g_t. ``momentum > 0`` accumulates
    b_t = momentum b_{t-1} + g_t / (sqrt(v_t) + eps) and steps theta <- theta - lr b_t.

    Defaults are Hinton's (alpha = 0.9, lr = 1e-3, as the survey quotes), not torch's
    (alpha = 0.99, lr = 1e-2). Deviation from the survey's eta / sqrt(E[g^2] + eps): eps sits
    outside the square root, as in torch.optim.
    """

    paper = "Hinton 2012, Neural Networks for Machine Learning, lecture 6e"
    hyperparameter_kinds: ClassVar[dict[str, Kind]] = {
        "lr": NONNEGATIVE,
        "alpha": UNIT,
        "eps": POSITIVE,
        "momentum": NONNEGATIVE,
        "centered": FLAG,
    }
    torch_counterpart = TorchCounterpart(("RMSprop",), {"v": "square_avg", "g_avg": "grad_avg"})

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        alpha: float = 0.9,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        **options: Any,
    ) -> None:
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
        )
        super().__init__(params, defaults, **options)

    def state_names_for(self, group: dict[str, Any]) -> tuple[str, ...]:
        return (
            ("v",)
            + (("g_avg",) if group["centered"] else ())
            + (("momentum_buffer",) if group["momentum"] > 0 else ())
        )

    def update(
        self,
        p: TL,
        g: TL,
        v: TL,
        *optional: TL,
        t: int,
        lr: float,
        alpha: float,
        eps: float,
        momentum: float,
        centered: bool,
    ) -> None:
        rest = list(optional)
        v.mul_(alpha).addcmul_(g, g, value=1 - alpha)
        if centered:
            g_avg = rest.pop(0)
            g_avg.lerp_(g, 1 - alpha)
            denom = v.clone().addcmul_(g_avg, g_avg, value=-1).sqrt_().add_(eps)
        else:
            denom = v.sqrt().add_(eps)
        if rest:  # momentum > 0: state_names_for gave the rule a momentum buffer
            (b,) = rest
            b.mul_(momentum).addcdiv_(g, denom)
            p.add_(b, alpha=-lr)
        else:
            p.addcdiv_(g, denom, value=-lr)
