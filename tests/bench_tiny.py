"""Tiny user problems for the bench tests (imported by name, "bench_tiny:<function>").

A 3-class linear problem small enough that a run of a few epochs takes a fraction of a second,
and factories that fail in each way the lab must record: raising, returning the wrong types,
and a loss that turns NaN.
"""

from __future__ import annotations

import time

import torch
from torch import nn

N, D, C = 600, 10, 3


def _data() -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(N, D, generator=g)
    w = torch.randn(D, C, generator=g)
    y = (x @ w + 0.5 * torch.randn(N, C, generator=g)).argmax(1)
    return (x[:400], y[:400]), (x[400:500], y[400:500]), (x[500:], y[500:])


def linear() -> tuple[nn.Module, object, tuple]:
    """A fresh linear classifier (initialised from torch's global seed) and fixed data."""
    return nn.Linear(D, C), nn.functional.cross_entropy, _data()


class _Slow(nn.Sequential):
    """An MLP whose training steps take 10 ms more: a SIGKILL lands inside an epoch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            time.sleep(0.01)
        return super().forward(x)


def slow_mlp() -> tuple[nn.Module, object, tuple]:
    model = _Slow(nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, C))
    return model, nn.functional.cross_entropy, _data()


def raises() -> tuple:
    raise RuntimeError("this factory is broken on purpose")


def wrong_types() -> object:
    return "not a (model, loss_fn, splits) triple"


def nan_loss() -> tuple[nn.Module, object, tuple]:
    """A loss that is NaN from the third step on."""
    calls = {"n": 0}

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        value = nn.functional.cross_entropy(out, y)
        return value * float("nan") if calls["n"] > 2 and out.requires_grad else value

    return nn.Linear(D, C), loss, _data()
