"""Reference rules for the classic optimizers whose paper form torch.optim does not implement."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

Rule = Callable[..., np.ndarray]


class Reference:
    """Apply ``rule(state, theta, g, t, **hp) -> new theta`` to each parameter with a gradient.

    ``state`` is a per-parameter dict the rule may fill; ``t`` counts that parameter's steps from
    1. Parameters and gradients are copied to float64 numpy arrays and back.
    """

    def __init__(self, params: Iterable[torch.Tensor], rule: Rule, **hp: Any) -> None:
        self.params = list(params)
        self.rule = rule
        self.hp = hp
        self.state: dict[int, dict[str, Any]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            state = self.state.setdefault(i, {"t": 0})
            state["t"] += 1
            theta = p.detach().cpu().double().numpy().copy()
            g = p.grad.detach().cpu().double().numpy().copy()
            new = self.rule(state, theta, g, state["t"], **self.hp)
            with torch.no_grad():
                p.copy_(torch.from_numpy(new).to(p))
        return loss


def amsgrad(
    state: dict[str, Any],
    theta: np.ndarray,
    g: np.ndarray,
    t: int,
    *,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> np.ndarray:
    """Reddi, Kale & Kumar (ICLR 2018), Algorithm 2 with constant beta1, as the survey states it:
    m_t = b1 m + (1-b1) g; v_t = b2 v + (1-b2) g^2; vhat_t = max(vhat_{t-1}, v_t);
    theta_{t+1} = theta_t - lr m_t / (sqrt(vhat_t) + eps). No bias correction."""
    m = state.get("m", np.zeros_like(theta))
    v = state.get("v", np.zeros_like(theta))
    vhat = state.get("vhat", np.zeros_like(theta))
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    vhat = np.maximum(vhat, v)
    state.update(m=m, v=v, vhat=vhat)
    return theta - lr * m / (np.sqrt(vhat) + eps)


def nadam_dozat(
    state: dict[str, Any],
    theta: np.ndarray,
    g: np.ndarray,
    t: int,
    *,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> np.ndarray:
    """Nadam as the survey derives it from Dozat (2016):
    m_hat = m_t/(1-b1^t); v_hat = v_t/(1-b2^t);
    theta_{t+1} = theta_t - lr/(sqrt(v_hat)+eps) * (b1 m_hat + (1-b1) g_t/(1-b1^t))."""
    m = state.get("m", np.zeros_like(theta))
    v = state.get("v", np.zeros_like(theta))
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    state.update(m=m, v=v)
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    return theta - lr / (np.sqrt(v_hat) + eps) * (beta1 * m_hat + (1 - beta1) * g / (1 - beta1**t))


def sgd_momentum_survey(
    state: dict[str, Any], theta: np.ndarray, g: np.ndarray, t: int, *, lr: float, gamma: float
) -> np.ndarray:
    """The survey's momentum: v_t = gamma v_{t-1} + eta g_t; theta = theta - v_t."""
    v = gamma * state.get("v", np.zeros_like(theta)) + lr * g
    state["v"] = v
    return theta - v
