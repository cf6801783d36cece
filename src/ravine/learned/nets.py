"""The learned update rules: small networks applied to every coordinate of the optimizee.

Both networks are ``nn.Module`` s with one ``forward(params, grads, states, t)`` over lists of
flattened tensors (one entry per parameter tensor) that returns the steps and the new states:

    deltas, new_states = net(params, grads, states, t)      # theta_i <- theta_i + lr * delta_i

This forward is the update, written once. The optimizers (:mod:`ravine.learned.optimizers`) call
it through ``torch.func.functional_call`` with the meta-weights cast to the parameters' dtype,
under ``no_grad``; meta-training (:mod:`ravine.learned.meta`) calls it the same way with the
meta-weights as leaves of the autograd graph. A state is one ``(numel, state_size)`` matrix per
tensor, so an optimizer keeps ``state_size`` floats per parameter.
"""

from __future__ import annotations

import abc
import itertools
import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["NETWORKS", "CoordinateLSTM", "LearnedNetwork", "PerParameterMLP", "build", "preprocess"]


def preprocess(g: Tensor, p: float) -> Tensor:
    """Andrychowicz et al. 2016, Appendix A: each gradient coordinate becomes two inputs,

        (log|g| / p, sign(g))   if |g| >= exp(-p)
        (-1, exp(p) g)          otherwise,

    so that gradients of any magnitude reach the network on one scale. Branch-free (a
    ``torch.where``): log's argument is clamped to exp(-p) so that the branch not taken is finite
    and its gradient is zero, not NaN.
    """
    threshold = math.exp(-p)
    big = g.abs() >= threshold
    log_part = torch.where(big, torch.log(g.abs().clamp(min=threshold)) / p, -torch.ones_like(g))
    sign_part = torch.where(big, torch.sign(g), g * math.exp(p))
    return torch.stack([log_part, sign_part], dim=-1)


class LearnedNetwork(nn.Module, abc.ABC):
    """What both learned rules share: an architecture dict (saved with the weights) and the
    number of state floats per coordinate."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def architecture(self) -> dict[str, Any]:
        """The constructor's arguments, saved with the weights to rebuild the network."""

    @property
    def state_size(self) -> int:
        return len(self.state_names)

    @property
    @abc.abstractmethod
    def state_names(self) -> tuple[str, ...]:
        """One name per state float of a coordinate, in the order of the state matrix's
        columns: the optimizer keeps each as a tensor shaped like the parameter."""


class CoordinateLSTM(LearnedNetwork):
    """The L2L optimizer (Andrychowicz et al. 2016, arXiv:1606.04474, section 3.1): a two-layer
    LSTM shared by every coordinate, each coordinate with its own hidden and cell states, and a
    linear output scaled by ``output_scale``:

        x = preprocess(g) (Appendix A, p = 10) or g;  (h1, c1) = LSTM1(x, h1, c1)
        (h2, c2) = LSTM2(h1, h2, c2);  delta = output_scale * (w . h2 + b)

    State per coordinate: [h1, c1, h2, c2], ``4 * hidden`` floats (80 for the paper's 20 units).
    The cells are torch.nn.LSTMCell's equations (gate order i, f, g, o), written out with one
    matrix per layer over [x, h], applied to each tensor's coordinates as rows of a batch.
    """

    kind = "l2l"

    def __init__(
        self,
        hidden: int = 20,
        layers: int = 2,
        preprocess: bool = True,
        p: float = 10.0,
        output_scale: float = 0.1,
    ) -> None:
        super().__init__()
        if hidden < 1 or layers < 1:
            raise ValueError(f"hidden and layers must be >= 1, got {hidden!r}, {layers!r}")
        if not p > 0:
            raise ValueError(f"Invalid p: {p!r} (expected > 0)")
        self.hidden, self.layers = int(hidden), int(layers)
        self.use_preprocess, self.p, self.output_scale = bool(preprocess), float(p), output_scale
        inputs = 2 if preprocess else 1
        self.cells = nn.ModuleList(
            nn.Linear((inputs if i == 0 else hidden) + hidden, 4 * hidden) for i in range(layers)
        )
        self.out = nn.Linear(hidden, 1)

    def architecture(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "layers": self.layers,
            "preprocess": self.use_preprocess,
            "p": self.p,
            "output_scale": self.output_scale,
        }

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(
            f"{part}{layer + 1}_{unit:02d}"
            for layer in range(self.layers)
            for part in ("h", "c")
            for unit in range(self.hidden)
        )

    def _one(self, g: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        g = g.reshape(-1)
        x = preprocess(g, self.p) if self.use_preprocess else g.unsqueeze(-1)
        h_size = self.hidden
        new = []
        for i, cell in enumerate(self.cells):
            h = state[:, 2 * i * h_size : (2 * i + 1) * h_size]
            c = state[:, (2 * i + 1) * h_size : (2 * i + 2) * h_size]
            gates = cell(torch.cat([x, h], dim=-1))
            in_gate, forget, cand, out_gate = gates.chunk(4, dim=-1)
            c = torch.sigmoid(forget) * c + torch.sigmoid(in_gate) * torch.tanh(cand)
            x = torch.sigmoid(out_gate) * torch.tanh(c)
            new += [x, c]
        return self.out(x).squeeze(-1) * self.output_scale, torch.cat(new, dim=-1)

    def forward(
        self, params: list[Tensor], grads: list[Tensor], states: list[Tensor], t: Any
    ) -> tuple[list[Tensor], list[Tensor]]:
        del params, t  # the paper's LSTM sees only the gradient
        # One call per tensor, not one over all coordinates: a matrix product's rounding depends
        # on its row count, and the recurrence amplifies it (~1.3x a step), so batching would
        # make impl="foreach" and "loop" drift apart by 1e-10 in 100 steps.
        out = [self._one(g, s) for g, s in zip(grads, states)]
        return [d for d, _ in out], [s for _, s in out]


class PerParameterMLP(LearnedNetwork):
    """A per-parameter MLP optimizer in the style of Metz et al. 2022 ("Practical tradeoffs
    between memory, compute, and performance in learned optimizers", arXiv:2203.11860, the
    small_fc_lopt MLP):

        m_k <- b_k m_k + (1 - b_k) g  (b = 0.5, 0.9, 0.99);  v <- b_v v + (1 - b_v) g^2 (0.999)
        features: g, m_1..3, sqrt(v), m_k / sqrt(v + eps), 1 / sqrt(v + eps), each divided by
        its root mean square over the tensor; plus tanh(t / s - 1) for s = 1, 10, 100, 1e3, 1e4
        (d, a) = MLP(features);  delta = step_mult * d * exp(exp_mult * a)

    State per coordinate: the three momenta and v (4 floats). Deviations: the parameter value is
    not a feature (with it, weights meta-trained on digits grew the parameters of a quadratic
    without bound: growing weights lowers a classifier's cross-entropy, measured at 9.5 -> 17 in
    300 steps); the momenta and v are bias-corrected (Adam's debiasing) before the features are
    taken, so that early steps see the same scale as later ones; hidden width and multipliers
    are ravine's (the paper's code uses exp_mult = step_mult = 1e-3 and far longer
    meta-training).
    """

    kind = "mlp"
    betas: ClassVar[tuple[float, ...]] = (0.5, 0.9, 0.99)
    beta_v: ClassVar[float] = 0.999
    timescales: ClassVar[tuple[float, ...]] = (1.0, 10.0, 100.0, 1e3, 1e4)
    eps: ClassVar[float] = 1e-8

    def __init__(
        self,
        hidden: int = 32,
        layers: int = 2,
        step_mult: float = 0.01,
        exp_mult: float = 1.0,
    ) -> None:
        super().__init__()
        if hidden < 1 or layers < 1:
            raise ValueError(f"hidden and layers must be >= 1, got {hidden!r}, {layers!r}")
        self.hidden, self.layers = int(hidden), int(layers)
        self.step_mult, self.exp_mult = float(step_mult), float(exp_mult)
        n_in = 1 + 2 * len(self.betas) + 2 + len(self.timescales)
        dims = [n_in] + [self.hidden] * self.layers
        self.body = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.head = nn.Linear(self.hidden, 2)
        with torch.no_grad():  # start close to a plain normalized-momentum step
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()

    def architecture(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "layers": self.layers,
            "step_mult": self.step_mult,
            "exp_mult": self.exp_mult,
        }

    @property
    def state_names(self) -> tuple[str, ...]:
        return (*(f"m_{b:g}" for b in self.betas), "v")

    def _one(self, p: Tensor, g: Tensor, state: Tensor, t: Any) -> tuple[Tensor, Tensor]:
        del p  # see the class docstring
        g = g.reshape(-1)
        betas = torch.tensor(self.betas, dtype=g.dtype, device=g.device)
        m = state[:, :-1] * betas + (1 - betas) * g.unsqueeze(-1)
        v = state[:, -1] * self.beta_v + (1 - self.beta_v) * g * g
        m_hat = m / (1 - betas**t)
        v_hat = v / (1 - self.beta_v**t)
        rsqrt = torch.rsqrt(v_hat + self.eps)
        # sqrt's derivative is infinite at 0 (a weight of an always-blank pixel has a gradient of
        # exactly 0), which made every second-order meta-gradient NaN. The double where keeps
        # sqrt's values bit for bit (v_hat >= 0) and gives 0 the derivative 0.
        positive = v_hat > 0
        safe = torch.where(positive, v_hat, torch.ones_like(v_hat))
        root_v = torch.where(positive, safe.sqrt(), torch.zeros_like(v_hat))
        feats = torch.cat(
            [
                g.unsqueeze(-1),
                m_hat,
                root_v.unsqueeze(-1),
                m_hat * rsqrt.unsqueeze(-1),
                rsqrt.unsqueeze(-1),
            ],
            dim=-1,
        )
        # Per tensor, each feature to unit root mean square (the "second moment normalizer").
        feats = feats * torch.rsqrt(feats.square().mean(dim=0, keepdim=True) + 1e-12)
        scales = torch.tensor(self.timescales, dtype=g.dtype, device=g.device)
        times = torch.tanh(torch.as_tensor(t, dtype=g.dtype, device=g.device) / scales - 1)
        x = torch.cat([feats, times.expand(feats.shape[0], -1)], dim=-1)
        for layer in self.body:
            x = torch.relu(layer(x))
        direction, magnitude = self.head(x).unbind(-1)
        delta = self.step_mult * direction * torch.exp(self.exp_mult * magnitude)
        return delta, torch.cat([m, v.unsqueeze(-1)], dim=-1)

    def forward(
        self, params: list[Tensor], grads: list[Tensor], states: list[Tensor], t: Any
    ) -> tuple[list[Tensor], list[Tensor]]:
        out = [self._one(p, g, s, t) for p, g, s in zip(params, grads, states)]
        return [d for d, _ in out], [s for _, s in out]


NETWORKS: dict[str, type[LearnedNetwork]] = {"l2l": CoordinateLSTM, "mlp": PerParameterMLP}


def build(kind: str, architecture: dict[str, Any] | None = None, seed: int = 0) -> LearnedNetwork:
    """A freshly initialised network of ``kind`` ("l2l" or "mlp"), its weights drawn from
    ``seed`` (torch's default initialisation, under a forked RNG: the global one is untouched)."""
    if kind not in NETWORKS:
        raise ValueError(f"Invalid kind: {kind!r} (expected one of {', '.join(NETWORKS)})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return NETWORKS[kind](**(architecture or {}))
