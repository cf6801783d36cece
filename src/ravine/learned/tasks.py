"""Optimizee tasks for meta-training and evaluation: a task samples problems from a seed.

A :class:`Problem` holds a model (an ``nn.Module`` built once per task and never rebuilt), the
initial parameters as a dict of tensors, and ``losses(params, step)``, evaluated with
``torch.func.functional_call`` so that the parameters can be any tensors of an unroll's graph.
``losses`` returns one loss per function in the problem (a problem may hold a batch of
independent functions, as the quadratics do); optimizers see the gradient of their sum.

Tasks (``TASKS``):

- ``quadratic``: f(theta) = ||W theta - y||^2, W 10x10 and y 10, IID N(0, 1) entries
  (Andrychowicz et al. 2016, section 3.1); theta_0 ~ N(0, 1).
- ``digits``: an MLP 64-20-10 (sigmoid) on scikit-learn's 8x8 digits, mini-batches of 128:
  the everyday variant (seconds per meta-iteration).
- ``mnist``: the paper's MLP 784-20-10 (sigmoid) on MNIST, mini-batches of 128 (section 3.2);
  meta-training draws batches from the first half of the training set, evaluation from the
  second half (``split="eval"``).
- variants of the MLP tasks by keyword: ``hidden=(40,)``, ``hidden=(20, 20)``,
  ``activation="relu"``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["TASKS", "MLPTask", "Problem", "QuadraticTask", "make_task"]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


@dataclass
class Problem:
    """One sampled optimizee: ``model``'s forward under ``params``, ``losses(params, step)``."""

    model: nn.Module
    params: dict[str, Tensor]
    inputs: list[Tensor]  # per step (or one shared by every step)
    targets: list[Tensor]
    kind: str = "regression"
    extra: dict[str, Tensor] = field(default_factory=dict)

    def losses(self, params: dict[str, Tensor], step: int) -> Tensor:
        """One loss per function of the problem at ``step``'s data."""
        i = step % len(self.inputs)
        out = functional_call(self.model, {**params, **self.extra}, (self.inputs[i],))
        if self.kind == "classification":
            return nn.functional.cross_entropy(out, self.targets[i]).reshape(1)
        return (out - self.targets[i]).square().sum(dim=-1)


class _Quadratic(nn.Module):
    """theta -> W theta for a batch of functions (W is a buffer passed in by functional_call)."""

    def __init__(self, batch: int, dim: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(batch, dim))
        self.register_buffer("W", torch.zeros(batch, dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        del x
        return torch.einsum("bij,bj->bi", self.W, self.theta)


@dataclass(frozen=True)
class QuadraticTask:
    """The paper's random quadratics, ``batch`` independent functions per problem."""

    dim: int = 10
    batch: int = 128
    name: str = "quadratic"

    @functools.cached_property
    def model(self) -> nn.Module:
        return _Quadratic(self.batch, self.dim)

    def sample(self, seed: int, horizon: int, dtype: torch.dtype = torch.float32) -> Problem:
        del horizon  # the function is the same at every step
        gen = _generator(seed)
        w = torch.randn(self.batch, self.dim, self.dim, generator=gen, dtype=torch.float64)
        y = torch.randn(self.batch, self.dim, generator=gen, dtype=torch.float64)
        theta = torch.randn(self.batch, self.dim, generator=gen, dtype=torch.float64)
        return Problem(
            self.model,
            {"theta": theta.to(dtype)},
            [torch.zeros(())],
            [y.to(dtype)],
            extra={"W": w.to(dtype)},
        )


def _activation(name: str) -> nn.Module:
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"Invalid activation: {name!r} (expected 'sigmoid' or 'relu')")


@functools.cache
def _data(dataset: str, split: str) -> tuple[Tensor, Tensor]:
    """(inputs flattened, labels) of the part of ``dataset`` a split draws from."""
    from ravine import data

    if dataset == "digits":
        sets = data.digits()
        x, y = sets.train if split == "train" else sets.test
    elif dataset == "mnist":
        x, y = data.mnist().train
        half = x.shape[0] // 2
        x, y = (x[:half], y[:half]) if split == "train" else (x[half:], y[half:])
    else:
        raise ValueError(f"Invalid dataset: {dataset!r} (expected 'digits' or 'mnist')")
    return x.reshape(x.shape[0], -1).contiguous(), y


@dataclass(frozen=True)
class MLPTask:
    """An MLP classifier on ``dataset`` (cross-entropy on mini-batches of ``batch_size``)."""

    dataset: str = "digits"
    hidden: Sequence[int] = (20,)
    activation: str = "sigmoid"
    batch_size: int = 128
    split: str = "train"
    name: str = "digits"

    @functools.cached_property
    def model(self) -> nn.Module:
        x, _ = _data(self.dataset, self.split)
        dims = [x.shape[1], *self.hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), _activation(self.activation)]
        layers.append(nn.Linear(dims[-1], 10))
        return nn.Sequential(*layers)

    def sample(self, seed: int, horizon: int, dtype: torch.dtype = torch.float32) -> Problem:
        gen = _generator(seed)
        params = {}
        for name, p in self.model.named_parameters():
            # torch.nn.Linear's default initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            fan_in = p.shape[-1] if p.dim() == 2 else self._fan_in(name)
            bound = fan_in**-0.5
            params[name] = (torch.rand(p.shape, generator=gen, dtype=dtype) * 2 - 1) * bound
        x, y = _data(self.dataset, self.split)
        idx = torch.randint(0, x.shape[0], (horizon, self.batch_size), generator=gen)
        return Problem(
            self.model,
            params,
            [x[i].to(dtype) for i in idx],
            [y[i] for i in idx],
            kind="classification",
        )

    def _fan_in(self, bias_name: str) -> int:
        weight = dict(self.model.named_parameters())[bias_name.replace("bias", "weight")]
        return weight.shape[1]


TASKS = ("quadratic", "digits", "mnist")


def make_task(name: str, **options: Any) -> QuadraticTask | MLPTask:
    """A task by name; ``options`` as the classes take them (``hidden``, ``activation``,
    ``split``, ``batch``, ``batch_size``)."""
    if name == "quadratic":
        return QuadraticTask(**options)
    if name in ("digits", "mnist"):
        options = {**options, "hidden": tuple(options.get("hidden", (20,)))}
        return MLPTask(dataset=name, name=name, **options)
    raise ValueError(f"Invalid task: {name!r} (expected one of {', '.join(TASKS)})")
