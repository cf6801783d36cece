"""Adagrad."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ravine.optim.base import Optimizer
from ravine.optim.hyperparameters import NONNEGATIVE, POSITIVE, Kind
from ravine.optim.torch_format import TorchCounterpart
from ravine.tensorlist import TL


class Adagrad(Optimizer):
    """Adagrad (Duchi, Hazan & Singer, JMLR 2011); torch.optim.Adagrad's rule.

    G_t = G_{t-1} + g_t^2;  theta <- theta - eta_t * g_t / (sqrt(G_t) + eps),
    eta_t = lr / (1 + (t - 1) * lr_decay).

    Deviation from the survey, which writes eta / sqrt(G_t + eps): eps sits outside the square
    root, as in torch.optim (the two differ only while G is of the order of eps).
    ``initial_accumulator_value`` starts G above zero. Sparse gradients are supported: only the
    rows present in the gradient are read and written.
    """

    state_names = ("sum",)
    paper = "Duchi, Hazan & Singer 2011, JMLR 12, 'Adaptive Subgradient Methods'"
    hyperparameter_kinds: ClassVar[dict[str, Kind]] = {
        "lr": NONNEGATIVE,
        "lr_decay": NONNEGATIVE,
        "initial_accumulator_value": NONNEGATIVE,
        "eps": POSITIVE,
    }
    torch_counterpart = TorchCounterpart(("Adagrad",))

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        **options: Any,
    ) -> None:
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
        )
        super().__init__(params, defaults, **options)

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        value = group["initial_accumulator_value"]
        return {"sum": torch.full_like(p, value, memory_format=torch.preserve_format)}

    def update(
        self, p: TL, g: TL, G: TL, *, t: int, lr: float, lr_decay: float, eps: float
    ) -> None:
        clr = lr / (1 + (t - 1) * lr_decay)
        G.addcmul_(g, g, value=1)
        p.addcdiv_(g, G.sqrt().add_(eps), value=-clr)

    def update_sparse(
        self, p: TL, g: TL, G: TL, *, t: int, lr: float, lr_decay: float, eps: float
    ) -> None:
        clr = lr / (1 + (t - 1) * lr_decay)
        grad = g[0].coalesce()
        indices, values = grad._indices(), grad._values()

        def sparse_like_grad(v: Tensor) -> Tensor:
            return torch.sparse_coo_tensor(
                indices, v, grad.size(), dtype=v.dtype, is_coalesced=True, check_invariants=False
            )

        G[0].add_(sparse_like_grad(values.pow(2)))
        std_values = G[0].sparse_mask(grad)._values().sqrt_().add_(eps)
        p[0].add_(sparse_like_grad(values / std_values), alpha=-clr)
