"""Scalar transcriptions of the later papers' pseudo-code (elementwise float64 numpy).

Each rule follows the paper's algorithm box line by line, not ravine's code and not a peer
library's; where a rule needs something the algorithm box leaves out (an eps, a threshold the
implementations disagree on) it is a keyword argument, named in the docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from reference.classic import Reference


def qhm(
    state: dict[str, Any],
    theta: np.ndarray,
    g: np.ndarray,
    t: int,
    *,
    lr: float,
    beta: float = 0.999,
    nu: float = 0.7,
) -> np.ndarray:
    """Ma & Yarats (ICLR 2019), Algorithm 1 (QHM):
    g_{t+1} = beta g_t + (1 - beta) grad;  theta_{t+1} = theta_t - lr [(1 - nu) grad + nu g_{t+1}].
    """
    buf = state.get("buf", np.zeros_like(theta))
    buf = beta * buf + (1 - beta) * g
    state["buf"] = buf
    return theta - lr * ((1 - nu) * g + nu * buf)


def qhadam(
    state: dict[str, Any],
    theta: np.ndarray,
    g: np.ndarray,
    t: int,
    *,
    lr: float,
    beta1: float = 0.995,
    beta2: float = 0.999,
    nu1: float = 0.7,
    nu2: float = 1.0,
    eps: float = 1e-8,
) -> np.ndarray:
    """Ma & Yarats (ICLR 2019), Algorithm 2 (QHAdam):
    g_{t+1} = b1 g_t + (1-b1) grad;  s_{t+1} = b2 s_t + (1-b2) grad^2;
    g' = g_{t+1} / (1 - b1^{t+1});  s' = s_{t+1} / (1 - b2^{t+1})   (t+1 is our 1-based t)
    theta -= lr [(1-nu1) grad + nu1 g'] / (sqrt((1-nu2) grad^2 + nu2 s') + eps)."""
    m = state.get("m", np.zeros_like(theta))
    s = state.get("s", np.zeros_like(theta))
    m = beta1 * m + (1 - beta1) * g
    s = beta2 * s + (1 - beta2) * g * g
    state.update(m=m, s=s)
    m_hat = m / (1 - beta1**t)
    s_hat = s / (1 - beta2**t)
    num = (1 - nu1) * g + nu1 * m_hat
    den = np.sqrt((1 - nu2) * g * g + nu2 * s_hat) + eps
    return theta - lr * num / den


def aggmo(
    state: dict[str, Any],
    theta: np.ndarray,
    g: np.ndarray,
    t: int,
    *,
    lr: float,
    betas: Sequence[float] = (0.0, 0.9, 0.99),
) -> np.ndarray:
    """Lucas, Sun, Zemel & Grosse (ICLR 2019), Algorithm 1 (AggMo), in the paper's signs:
    v^(i)_t = beta^(i) v^(i)_{t-1} - grad;  theta_t = theta_{t-1} + (lr / K) sum_i v^(i)_t."""
    vs = state.get("v", [np.zeros_like(theta) for _ in betas])
    vs = [beta * v - g for beta, v in zip(betas, vs)]
    state["v"] = vs
    return theta + lr / len(betas) * sum(vs)


def adabound(
    state: dict[str, Any],
    theta: np.ndarray,
    g: np.ndarray,
    t: int,
    *,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    final_lr: float = 0.1,
    gamma: float = 1e-3,
    eps: float = 1e-8,
    amsbound: bool = False,
) -> np.ndarray:
    """Luo, Xiong, Liu & Sun (ICLR 2019), Algorithm 2 (AdaBound) / Algorithm 3 (AMSBound), with a
    constant beta1 and the bound functions of the paper's experiments written with final_lr and
    gamma (the paper's are final_lr = 0.1, gamma = 1 - b2):
    m_t = b1 m + (1-b1) g;  v_t = b2 v + (1-b2) g^2   (AMSBound: v_hat = max(v_hat, v_t))
    eta_hat = Clip(lr / sqrt(v_t), eta_l(t), eta_u(t));  eta_t = eta_hat / sqrt(t)
    eta_l(t) = final_lr (1 - 1/(gamma t + 1));  eta_u(t) = final_lr (1 + 1/(gamma t))
    theta -= eta_t * m_t   (no projection: the feasible set is the whole space).
    ``eps`` is added to sqrt(v_t) (not in the paper; the authors' code has it)."""
    m = state.get("m", np.zeros_like(theta))
    v = state.get("v", np.zeros_like(theta))
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    state.update(m=m, v=v)
    if amsbound:
        v = np.maximum(state.get("v_hat", np.zeros_like(theta)), v)
        state["v_hat"] = v
    lower = final_lr * (1 - 1 / (gamma * t + 1))
    upper = final_lr * (1 + 1 / (gamma * t))
    eta_hat = np.clip(lr / (np.sqrt(v) + eps), lower, upper)
    return theta - eta_hat / np.sqrt(t) * m


def adabound_authors_code(
    state: dict[str, Any],
    theta: np.ndarray,
    g: np.ndarray,
    t: int,
    *,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    final_lr: float = 0.1,
    gamma: float = 1e-3,
    eps: float = 1e-8,
    amsbound: bool = False,
) -> np.ndarray:
    """What the authors' released code (github.com/Luolc/AdaBound) computes at a constant lr,
    which differs from their Algorithm 2: the Adam bias corrections go inside the clip and there
    is no 1/sqrt(t):
    step = lr sqrt(1 - b2^t) / (1 - b1^t);  eta = Clip(step / (sqrt(v_t) + eps), eta_l, eta_u);
    theta -= eta * m_t."""
    m = state.get("m", np.zeros_like(theta))
    v = state.get("v", np.zeros_like(theta))
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    state.update(m=m, v=v)
    if amsbound:
        v = np.maximum(state.get("v_hat", np.zeros_like(theta)), v)
        state["v_hat"] = v
    step = lr * np.sqrt(1 - beta2**t) / (1 - beta1**t)
    lower = final_lr * (1 - 1 / (gamma * t + 1))
    upper = final_lr * (1 + 1 / (gamma * t))
    eta = np.clip(step / (np.sqrt(v) + eps), lower, upper)
    return theta - eta * m


def radam(
    state: dict[str, Any],
    theta: np.ndarray,
    g: np.ndarray,
    t: int,
    *,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    threshold: float = 4.0,
) -> np.ndarray:
    """Liu et al. (ICLR 2020), Algorithm 2 (RAdam):
    rho_inf = 2/(1-b2) - 1;  v_t = b2 v + (1-b2) g^2;  m_t = b1 m + (1-b1) g;
    m_hat = m_t / (1 - b1^t);  rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
    if rho_t > 4:  l_t = sqrt((1 - b2^t) / v_t)
                   r_t = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t))
                   theta -= lr r_t m_hat l_t
    else:          theta -= lr m_hat
    ``eps`` goes into l_t as sqrt(1 - b2^t) / (sqrt(v_t) + eps) (not in the paper; in the
    authors' code and torch's); ``threshold`` replaces the paper's 4 (the authors' code and
    torch use 5)."""
    m = state.get("m", np.zeros_like(theta))
    v = state.get("v", np.zeros_like(theta))
    v = beta2 * v + (1 - beta2) * g * g
    m = beta1 * m + (1 - beta1) * g
    state.update(m=m, v=v)
    m_hat = m / (1 - beta1**t)
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
    if rho_t > threshold:
        l_t = np.sqrt(1 - beta2**t) / (np.sqrt(v) + eps)
        r_t = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        return theta - lr * r_t * m_hat * l_t
    return theta - lr * m_hat


class LookaheadReference:
    """Zhang, Lucas, Hinton & Ba (NeurIPS 2019), Algorithm 1 (Lookahead) around any optimizer:
    phi_0 = theta_0;  every k inner steps:  phi <- phi + alpha (theta - phi);  theta <- phi.
    One counter for the whole model (the algorithm works on the whole parameter vector)."""

    def __init__(self, params: Iterable[torch.Tensor], inner: Any, k: int, alpha: float) -> None:
        self.params = list(params)
        self.inner = inner
        self.k = k
        self.alpha = alpha
        self.count = 0
        self.slow: list[np.ndarray] | None = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if self.slow is None:
            self.slow = [p.detach().cpu().double().numpy().copy() for p in self.params]
        loss = self.inner.step(closure)
        self.count += 1
        if self.count % self.k == 0:
            for p, phi in zip(self.params, self.slow):
                theta = p.detach().cpu().double().numpy()
                phi += self.alpha * (theta - phi)
                with torch.no_grad():
                    p.copy_(torch.from_numpy(phi).to(p))
        return loss


def annealed_noise_variance(t: int, *, eta: float, gamma: float = 0.55) -> float:
    """Neelakantan et al. (2015), section 2: sigma_t^2 = eta / (1 + t)^gamma, t = 0 at the first
    step."""
    return eta / (1 + t) ** gamma


class AdaptiveRevisionReference:
    """McMahan & Streeter (NIPS 2014), AdaptiveRevision (AdaGrad with revised learning rates for
    delayed gradients), per coordinate. ``step(delay=d)`` applies a gradient computed on the
    parameters as they were d updates ago, i.e. when the running gradient sum was gbar_old:

        g_fwd = gbar - gbar_old            (the gradients applied while this one was in flight)
        eta_old = lr / (sqrt(z') + eps)
        z  <- z + g^2 + 2 g g_fwd;         z' <- max(z', z)
        eta = lr / (sqrt(z') + eps)
        theta <- theta - eta g + (eta_old - eta) g_fwd       (revise the in-flight steps)
        gbar <- gbar + g

    ``eps`` and ``initial_accumulator_value`` (z = z' at the start) are torch.optim.Adagrad's, so
    that zero delays give Adagrad exactly. Delays count this parameter's own updates."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        *,
        lr: float,
        eps: float = 1e-10,
        initial_accumulator_value: float = 0.0,
    ) -> None:
        self.params = list(params)
        self.lr = lr
        self.eps = eps
        self.init = initial_accumulator_value
        self.state: dict[int, dict[str, Any]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self, closure: Callable[[], Any] | None = None, delay: int = 0) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            theta = p.detach().cpu().double().numpy().copy()
            g = p.grad.detach().cpu().double().numpy().copy()
            s = self.state.setdefault(
                i,
                {
                    "z": np.full_like(theta, self.init),
                    "z_max": np.full_like(theta, self.init),
                    "history": [np.zeros_like(theta)],  # gbar after 0, 1, 2, ... updates
                },
            )
            n = len(s["history"]) - 1  # updates so far
            gbar = s["history"][-1]
            g_fwd = gbar - s["history"][max(n - delay, 0)]
            eta_old = self.lr / (np.sqrt(s["z_max"]) + self.eps)
            s["z"] = s["z"] + g * g + 2 * g * g_fwd
            s["z_max"] = np.maximum(s["z_max"], s["z"])
            eta = self.lr / (np.sqrt(s["z_max"]) + self.eps)
            theta = theta - eta * g + (eta_old - eta) * g_fwd
            s["history"].append(gbar + g)
            with torch.no_grad():
                p.copy_(torch.from_numpy(theta).to(p))
        return loss


__all__ = [
    "AdaptiveRevisionReference",
    "LookaheadReference",
    "Reference",
    "adabound",
    "adabound_authors_code",
    "aggmo",
    "annealed_noise_variance",
    "qhadam",
    "qhm",
    "radam",
]
