"""Drive optimizers on a small multi-tensor model with a fixed sequence of mini-batches.

The model has a parameter that never receives a gradient and a parameter frozen mid-run, so
lazy state, skipped parameters and per-parameter step counts are exercised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import ravine


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 10)
        self.fc2 = nn.Linear(10, 8)
        self.head = nn.Linear(8, 3)
        self.scale = nn.Parameter(torch.ones(3))
        self.unused = nn.Parameter(torch.randn(4))  # never in the graph: grad stays None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc1(x))
        h = torch.tanh(self.fc2(h))
        return self.head(h) * self.scale


def make_model(dtype: torch.dtype = torch.float64, device: str = "cpu", seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet().to(device=device, dtype=dtype)


def batches(
    steps: int, dtype: torch.dtype = torch.float64, device: str = "cpu", seed: int = 1
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        x = torch.randn(16, 6, generator=gen, dtype=torch.float64)
        y = torch.randn(16, 3, generator=gen, dtype=torch.float64)
        out.append((x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)))
    return out


def train(
    make_opt: Callable[[list[torch.nn.Parameter]], Any],
    steps: int = 100,
    *,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    freeze_at: int | None = None,
    model: TinyNet | None = None,
    opt: Any = None,
    start: int = 0,
    data: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    set_to_none: bool = True,
    on_step: Callable[[int, TinyNet, Any], None] | None = None,
) -> tuple[TinyNet, Any]:
    """Run steps ``start..steps-1``; at ``freeze_at`` the head's bias stops receiving gradients.

    ``set_to_none`` goes to ``opt.zero_grad``: impl="compiled" zeroes its flat gradients in
    place whatever it says, so a frozen parameter keeps taking zero-gradient steps, as in
    torch with ``set_to_none=False`` (compare it with runs that pass False). ``on_step(i, model,
    opt)`` runs after step ``i`` (a scheduler, a recorder).
    """
    model = model if model is not None else make_model(dtype, device)
    opt = opt if opt is not None else make_opt(list(model.parameters()))
    data = data if data is not None else batches(steps, dtype, device)
    for i in range(start, steps):
        if freeze_at is not None and i == freeze_at:
            model.head.bias.requires_grad_(False)
        x, y = data[i]

        def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
            opt.zero_grad(set_to_none=set_to_none)
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)
        if on_step is not None:
            on_step(i, model, opt)
    return model, opt


def params_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def max_rel_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        x, y = x.double().cpu(), y.double().cpu()
        scale = max(y.abs().max().item(), 1e-300)
        worst = max(worst, (x - y).abs().max().item() / scale)
    return worst


def ravine_factory(name: str, **hp: Any) -> Callable[[list[torch.nn.Parameter]], Any]:
    return lambda params: ravine.create(name, params, **hp)
