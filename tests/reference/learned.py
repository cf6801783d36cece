"""The L2L optimizer (Andrychowicz et al. 2016, arXiv:1606.04474) transcribed independently of
ravine.learned: Appendix A's preprocessing as a scalar loop over coordinates, the LSTM equations
(Hochreiter & Schmidhuber 1997, with a forget gate, in torch.nn.LSTMCell's gate order i, f, g, o)
one layer and one tensor at a time, given the weights of a ravine weights record.

The gates are one product (F.linear) with the record's matrix over [x, h] (not LSTMCell's two):
over 100 steps the trajectory amplifies a difference in rounding by ~1.3 per step (1e-16 after
one step, 2e-8 after 100, measured), so the comparison at 1e-10 needs the same summation order.
tests/test_learned.py checks one step against torch.nn.LSTMCell itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


def preprocess(g: float, p: float) -> tuple[float, float]:
    """Appendix A: (log|g| / p, sign g) if |g| >= e^-p, else (-1, e^p g)."""
    if abs(g) >= math.exp(-p):
        return math.log(abs(g)) / p, math.copysign(1.0, g) if g != 0 else 0.0
    return -1.0, math.exp(p) * g


class L2LReference:
    """theta <- theta + lr * scale * (w . h2 + b), (h, c) per coordinate and layer."""

    def __init__(self, params: Iterable[torch.Tensor], record: dict[str, Any], lr: float = 1.0):
        self.params = list(params)
        self.lr = lr
        arch = record["architecture"]
        self.p, self.scale, hidden = arch["p"], arch["output_scale"], arch["hidden"]
        sd = record["state_dict"]
        self.layers = [
            (sd[f"cells.{i}.weight"].double(), sd[f"cells.{i}.bias"].double())
            for i in range(arch["layers"])
        ]
        self.hidden = hidden
        self.w_out = sd["out.weight"].double()
        self.b_out = sd["out.bias"].double()
        self.state: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad.detach().double().reshape(-1)
            x = torch.tensor([preprocess(float(v), self.p) for v in g], dtype=torch.float64)
            zeros = torch.zeros(g.numel(), self.hidden, dtype=torch.float64)
            hc = self.state.setdefault(i, [(zeros, zeros) for _ in self.layers])
            for layer, (weight, bias) in enumerate(self.layers):
                h, c = hc[layer]
                gates = torch.nn.functional.linear(torch.cat([x, h], dim=1), weight, bias)
                i_t, f_t, g_t, o_t = gates.chunk(4, dim=1)
                c = torch.sigmoid(f_t) * c + torch.sigmoid(i_t) * torch.tanh(g_t)
                h = torch.sigmoid(o_t) * torch.tanh(c)
                hc[layer] = (h, c)
                x = h
            delta = (
                torch.nn.functional.linear(x, self.w_out, self.b_out).reshape(p.shape) * self.scale
            )
            p.add_(delta.to(p.dtype), alpha=self.lr)
        return loss
