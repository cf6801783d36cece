"""Stochastic gradient descent, classical momentum and Nesterov accelerated gradient."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ravine.optim.base import Optimizer
from ravine.optim.hyperparameters import (
    FLAG,
    NONNEGATIVE,
    POSITIVE,
    UNIT,
    Kind,
    check_hyperparameter,
)
from ravine.optim.torch_format import TorchCounterpart
from ravine.tensorlist import TL


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum; torch.optim.SGD's rule.

    Plain: theta <- theta - lr * g (Robbins & Monro, 1951).
    With momentum mu and dampening d (torch's form, learning rate outside the buffer)::

        b_1 = g_1;  b_t = mu * b_{t-1} + (1 - d) * g_t
        theta <- theta - lr * b_t                  (nesterov=False)
        theta <- theta - lr * (g_t + mu * b_t)     (nesterov=True)

    The survey writes v_t = gamma * v_{t-1} + eta * g_t; theta <- theta - v_t (learning rate inside
    the buffer, v = lr * b): the two coincide for a constant learning rate and differ under a
    schedule, where torch's form applies a new lr to the whole accumulated velocity at once.

    Sparse gradients are supported (the update is the same formula, applied with sparse ops).
    """

    paper = "Robbins & Monro 1951; Qian 1999 (momentum); Sutskever et al. 2013 (Nesterov)"
    hyperparameter_kinds: ClassVar[dict[str, Kind]] = {
        "lr": NONNEGATIVE,
        "momentum": NONNEGATIVE,
        "dampening": UNIT,
        "nesterov": FLAG,
    }
    torch_counterpart = TorchCounterpart(("SGD",), step=False)

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        **options: Any,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
        )
        super().__init__(params, defaults, **options)

    def validate_group(self, group: dict[str, Any]) -> None:
        super().validate_group(group)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                "Invalid nesterov=True: Nesterov momentum requires momentum > 0 and dampening = 0 "
                f"(got momentum={group['momentum']}, dampening={group['dampening']})"
            )

    def state_names_for(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def update(
        self,
        p: TL,
        g: TL,
        *buf: TL,
        t: int,
        lr: float,
        momentum: float,
        dampening: float,
        nesterov: bool,
    ) -> None:
        if not buf:  # momentum == 0: state_names_for gave the rule no buffer
            p.add_(g, alpha=-lr)
            return
        (b,) = buf
        # b_1 = g_1 undamped, as in torch.optim.SGD (b starts at zero); the damping is switched
        # on by (t > 1) rather than by a branch so that a tensor t (impl="compiled") traces.
        b.mul_(momentum).add_(g, alpha=1 - dampening * (t > 1))
        if nesterov:
            p.add_(b.mul(momentum).add_(g), alpha=-lr)  # g + mu b; dense first for sparse g
        else:
            p.add_(b, alpha=-lr)

    # The formula above only uses ops that accept a sparse g (dense += sparse).
    update_sparse = update


class Momentum(SGD):
    """Classical momentum (Polyak 1964; Qian 1999): SGD with ``momentum=0.9`` by default.

    b_t = gamma * b_{t-1} + g_t; theta <- theta - lr * b_t (torch's placement of lr; the survey's
    v_t = gamma * v_{t-1} + eta * g_t is the same sequence for a constant lr). See :class:`SGD`.
    """

    paper = "Qian 1999, 'On the momentum term in gradient descent learning algorithms'"

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        momentum: float = 0.9,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        **options: Any,
    ) -> None:
        super().__init__(params, lr, momentum, dampening, weight_decay, nesterov=False, **options)


NAG_FORMS = ("lookahead", "sutskever")


def _nag_torch_form(form: str, group: dict[str, Any]) -> str | None:
    """Why a NAG group has no torch.optim.SGD form, or None: torch's nesterov=True is
    form="lookahead" (gradient at the parameters, which hold the look-ahead point)."""
    if form != "lookahead":
        return (
            f"NAG(form={form!r}) evaluates the gradient at the look-ahead point, which "
            "torch.optim.SGD never does: its nesterov=True is NAG(form='lookahead')"
        )
    if not group.get("nesterov"):
        return "nesterov=False: that is torch.optim.SGD's plain momentum (ravine.Momentum)"
    return None


class NAG(SGD):
    """Nesterov accelerated gradient, in two equivalent forms (``form=``).

    ``form="sutskever"`` (Sutskever, Martens, Dahl & Hinton, ICML 2013, eq. 3-4) evaluates the
    gradient at the look-ahead point; it needs a closure, which ``step`` calls there::

        b_t = mu * b_{t-1} + grad f(theta_{t-1} - lr * mu * b_{t-1})
        theta_t = theta_{t-1} - lr * b_t

    ``form="lookahead"`` (default; Bengio, Boulanger-Lewandowski & Pascanu 2013, torch.optim.SGD's
    ``nesterov=True``) stores x_t = theta_t - lr * mu * b_t instead and needs only grad f(x_t)::

        b_t = mu * b_{t-1} + grad f(x_{t-1});  x_t = x_{t-1} - lr * (grad f(x_{t-1}) + mu * b_t)

    For a constant lr the parameters of the second are the look-ahead points of the first.
    The survey's v_t = gamma v_{t-1} + eta grad J(theta - gamma v_{t-1}) is form "sutskever" with
    v = lr * b.
    """

    paper = "Nesterov 1983; Sutskever et al. 2013 (ICML), 'On the importance of initialization...'"
    torch_counterpart = TorchCounterpart(
        ("SGD",), step=False, check=lambda opt, group: _nag_torch_form(opt.form, group)
    )

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        form: str = "lookahead",
        **options: Any,
    ) -> None:
        if form not in NAG_FORMS:
            raise ValueError(f"Invalid form: {form!r} (expected one of {', '.join(NAG_FORMS)})")
        self.form = form
        super().__init__(
            params, lr, momentum, 0.0, weight_decay, nesterov=(form == "lookahead"), **options
        )

    def validate_group(self, group: dict[str, Any]) -> None:
        # Before SGD's nesterov rule, to name the argument.
        check_hyperparameter("momentum", group["momentum"], POSITIVE)
        super().validate_group(group)

    def _evaluate_closure(self, closure: Callable[[], Any] | None) -> Any:
        if self.form != "sutskever":
            return super()._evaluate_closure(closure)
        if closure is None:
            raise RuntimeError(
                "NAG(form='sutskever') evaluates the gradient at the look-ahead point: pass a "
                "closure to step(), or use form='lookahead' (same trajectory, no closure needed)"
            )
        shifted = []
        for group in self.param_groups:
            shift = group["lr"] * group["momentum"]
            for p in group["params"]:
                buf = self.state.get(p, {}).get("momentum_buffer")  # no entry for grad-less params
                if buf is not None:
                    shifted.append((p, buf, shift))
        with torch.no_grad():
            for p, buf, shift in shifted:
                p.sub_(buf, alpha=shift)
        try:
            return super()._evaluate_closure(closure)
        finally:
            with torch.no_grad():
                for p, buf, shift in shifted:
                    p.add_(buf, alpha=shift)
