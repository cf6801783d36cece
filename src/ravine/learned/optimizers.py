"""The learned optimizers as ordinary ravine optimizers: param groups, closure, state_dict with the
recurrent state, schedulers, ``ravine.fit``, ``ravine viz``.

    theta <- theta + lr * delta,   (delta, state) = net(theta, g, state, t)

``net`` is one of :mod:`ravine.learned.nets` (a copy with its meta-weights cast to the
parameters' dtype): its forward is the very function meta-training differentiates.
``lr`` multiplies the network's step (1.0: the step it was meta-trained to take), so learning-rate
schedules apply. Each state float of a coordinate is one state tensor shaped like the parameter
(``state_names``), so checkpoints, the non-finite guard and complex parameters (pairs of reals)
work as for every other rule.

impl="compiled" is refused: its kernel is traced on a bare instance shared by every optimizer
of the class, which cannot hold a network's weights.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ravine.learned.nets import LearnedNetwork
from ravine.learned.weights import load_network
from ravine.optim.base import IMPLS, Optimizer
from ravine.optim.hyperparameters import NONNEGATIVE, Kind
from ravine.tensorlist import TL

__all__ = ["L2L", "LearnedMLP", "LearnedOptimizer"]

Weights = str | os.PathLike[str] | dict[str, Any]
_SUPPORTED_IMPLS = ("foreach", "loop")


class LearnedOptimizer(Optimizer):
    """What :class:`L2L` and :class:`LearnedMLP` share: the weights, the network call and the
    state layout. ``weights``: a bundled name, a path to a weights file, or a weights record."""

    network_kind: ClassVar[str]
    hyperparameter_kinds: ClassVar[dict[str, Kind]] = {"lr": NONNEGATIVE}

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        weight_decay: float,
        weights: Weights,
        **options: Any,
    ) -> None:
        impl = options.get("impl", "foreach")
        if impl == "compiled":
            self._refuse_compiled()
        self.weights = weights
        self.net: LearnedNetwork = load_network(weights, self.network_kind)
        self._cast: dict[tuple[torch.dtype, torch.device], LearnedNetwork] = {}
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay), **options)

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, impl: str) -> None:
        if impl == "compiled":
            self._refuse_compiled()
        Optimizer.impl.fset(self, impl)  # type: ignore[attr-defined]

    def _refuse_compiled(self) -> None:
        raise ValueError(
            f"Invalid impl: 'compiled' ({type(self).__name__} runs "
            f"{' or '.join(repr(i) for i in _SUPPORTED_IMPLS)}: the compiled kernel is shared by "
            f"every instance and cannot hold a network's weights; of {', '.join(IMPLS)})"
        )

    def state_names_for(self, group: dict[str, Any]) -> tuple[str, ...]:
        return self.net.state_names

    def _network_for(self, dtype: torch.dtype, device: torch.device) -> LearnedNetwork:
        """The network with its meta-weights in ``dtype`` on ``device``, converted once."""
        key = (dtype, device)
        if key not in self._cast:
            self._cast[key] = copy.deepcopy(self.net).to(device=device, dtype=dtype)
        return self._cast[key]

    def update(self, p: TL, g: TL, *states: TL, t: Any, lr: Any) -> None:
        # Half precision computes in float32 (the network's own precision) and stores back.
        dtype = p[0].dtype if p[0].dtype in (torch.float32, torch.float64) else torch.float32
        net = self._network_for(dtype, p[0].device)
        n = len(p)
        # (coordinates, state floats) per tensor: one stack of its state tensors.
        matrices = [
            torch.stack([s[i] for s in states], dim=-1).reshape(-1, len(states)).to(dtype)
            for i in range(n)
        ]
        deltas, new = net(
            [x.reshape(-1).to(dtype) for x in p], [x.reshape(-1).to(dtype) for x in g], matrices, t
        )
        sources = [c.view_as(p[i]) for i in range(n) for c in new[i].unbind(-1)]
        targets = [s[i] for i in range(n) for s in states]
        TL(targets, foreach=p.foreach).copy_(TL(sources, foreach=p.foreach))
        p.add_(TL([d.view_as(x) for d, x in zip(deltas, p)], foreach=p.foreach), alpha=lr)


class L2L(LearnedOptimizer):
    """The coordinatewise LSTM optimizer of Andrychowicz et al. 2016, "Learning to learn by
    gradient descent by gradient descent", arXiv:1606.04474 (network:
    :class:`ravine.learned.nets.CoordinateLSTM`).

        (delta, h) = LSTM(preprocess(g), h);  theta <- theta + lr * delta

    Args:
        params: parameters or parameter groups.
        lr: multiplies the network's step (default 1.0: the step it was meta-trained for).
        weight_decay: L2 penalty added to the gradient the network sees (default 0).
        weights: bundled name (``"quadratic"``: meta-trained on the paper's random 10-d
            quadratics), a path to a file written by ``ravine meta-train``, or a record.

    State: ``4 * hidden`` floats per parameter (80 for the paper's two layers of 20).

    Example::

        opt = ravine.create("l2l", model.parameters(), weights="quadratic")
    """

    paper = (
        "Andrychowicz et al. 2016, Learning to learn by gradient descent by gradient descent, "
        "arXiv:1606.04474"
    )
    network_kind = "l2l"

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        weight_decay: float = 0.0,
        *,
        weights: Weights = "quadratic",
        **options: Any,
    ) -> None:
        super().__init__(params, lr, weight_decay, weights, **options)


class LearnedMLP(LearnedOptimizer):
    """A per-parameter MLP optimizer in the style of small_fc_lopt (Metz et al. 2022,
    "Practical tradeoffs between memory, compute, and performance in learned optimizers",
    arXiv:2203.11860; network: :class:`ravine.learned.nets.PerParameterMLP`): momenta at three
    decays, an RMS accumulator and a step-count embedding, normalized per tensor, into a tiny MLP
    that gives a direction and a magnitude.

    Args:
        params: parameters or parameter groups.
        lr: multiplies the network's step (default 1.0).
        weight_decay: L2 penalty added to the gradient the network sees (default 0).
        weights: bundled name (``"digits"``: meta-trained on an MLP on scikit-learn's digits),
            a path to a file written by ``ravine meta-train``, or a record.

    State: 4 floats per parameter.
    """

    paper = (
        "Metz et al. 2022, Practical tradeoffs between memory, compute, and performance in "
        "learned optimizers, arXiv:2203.11860"
    )
    network_kind = "mlp"

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        weight_decay: float = 0.0,
        *,
        weights: Weights = "digits",
        **options: Any,
    ) -> None:
        super().__init__(params, lr, weight_decay, weights, **options)
