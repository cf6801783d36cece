"""The lab's problems: one row per named problem, and users' own problems by ``module:function``.

A problem is dataset x model x loss x batch size x epoch budget x target metric. Every run of a
problem sees the same data split, the same epoch budget and, for a given seed, the same initial
weights and data order, whatever the optimizer (see :func:`build`).

A user's problem is a function ``f() -> (model, loss_fn, (train, val, test))`` named as
``"package.module:function"``, each split an (inputs, targets) pair of tensors or a
TensorDataset; it is called once per run after ``torch.manual_seed(seed)``, so it should build a
fresh model each time.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

__all__ = [
    "PROBLEMS",
    "Built",
    "Problem",
    "build",
    "get",
    "is_user_problem",
    "names",
    "user_problem",
]

Pair = tuple[torch.Tensor, torch.Tensor]
METRICS = ("val_accuracy", "val_loss")


@dataclass(frozen=True)
class Problem:
    """A named problem: what is trained, on what, for how long, and what "better" means.

    ``metric`` is the validation series the protocol maximises (val_accuracy) or minimises
    (val_loss) to pick a configuration; the test split is never read to choose.
    ``factory`` is "module:function" for a user's problem (then dataset and model are unused).
    """

    name: str
    dataset: str
    model: str
    batch_size: int
    epochs: int
    metric: str = "val_accuracy"
    loss: str = "cross_entropy"
    dataset_kwargs: Mapping[str, Any] = field(default_factory=dict)
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    needs_data_dir: bool = False
    factory: str | None = None
    note: str = field(default="", compare=False)  # a remark for --list, not part of the problem

    def __post_init__(self) -> None:
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ValueError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        object.__setattr__(self, "dataset_kwargs", MappingProxyType(dict(self.dataset_kwargs)))
        object.__setattr__(self, "model_kwargs", MappingProxyType(dict(self.model_kwargs)))

    @property
    def maximize(self) -> bool:
        return self.metric == "val_accuracy"

    def spec(self) -> dict[str, Any]:
        """The row as plain data (what the store records)."""
        return {
            "name": self.name,
            "dataset": self.dataset,
            "model": self.model,
            "loss": self.loss,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "metric": self.metric,
            "dataset_kwargs": dict(self.dataset_kwargs),
            "model_kwargs": dict(self.model_kwargs),
            "needs_data_dir": self.needs_data_dir,
            "factory": self.factory,
        }

    def identity(self) -> dict[str, Any]:
        """What a study's name is a digest of: ``spec()`` less the fields added since names were
        first defined, while they hold their defaults. A ravine with a new field so keeps every
        existing study's name, and the same command continues the same study."""
        spec = self.spec()
        for key, default in _LATER_FIELDS.items():
            if spec[key] == default:
                del spec[key]
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Problem:
        """The problem a store recorded (``spec()``'s inverse): workers train exactly that,
        even if this ravine's table has changed since."""
        return cls(**{k: v for k, v in spec.items() if k in _SPEC_FIELDS})

    def with_epochs(self, epochs: int | None) -> Problem:
        """The same problem with another epoch budget (None: keep it)."""
        if epochs is None:
            return self
        from dataclasses import replace

        return replace(self, epochs=epochs)


def _p(name: str, dataset: str, model: str, bs: int, epochs: int, **kw: Any) -> Problem:
    return Problem(name, dataset, model, bs, epochs, **kw)


_SPEC_FIELDS = (
    "name", "dataset", "model", "loss", "batch_size", "epochs", "metric", "dataset_kwargs",
    "model_kwargs", "needs_data_dir", "factory",
)  # fmt: skip
_LATER_FIELDS = {"needs_data_dir": False}  # field -> default; see Problem.identity
_MNIST1D = {"num_samples": 5000, "seed": 42}
# Budgets follow the seed comparison's models at CPU scale: MNIST-sized sets 10 epochs of
# mini-batches of 128; MNIST-1D 60 epochs of 100 (2160 steps, the paper trains 6000).
PROBLEMS: tuple[Problem, ...] = (
    _p("mnist-logreg", "mnist", "logreg", 128, 10),
    _p("mnist-mlp", "mnist", "mlp", 128, 10),
    _p("mnist-lenet5", "mnist", "lenet5", 128, 10),
    _p("fashion-logreg", "fashion-mnist", "logreg", 128, 10),
    _p("fashion-mlp", "fashion-mnist", "mlp", 128, 10),
    _p("fashion-lenet5", "fashion-mnist", "lenet5", 128, 10),
    _p("fashion-resnet18", "fashion-mnist", "resnet18", 128, 5, note="GPU-sized on CPU"),
    _p("mnist1d-logreg", "mnist1d", "logreg", 100, 60, dataset_kwargs=_MNIST1D),
    _p(
        "mnist1d-mlp",
        "mnist1d",
        "mlp",
        100,
        60,
        dataset_kwargs=_MNIST1D,
        model_kwargs={"hidden": (100, 100)},
        note="the MNIST-1D paper's MLP",
    ),
    _p("mnist1d-cnn", "mnist1d", "cnn1d", 100, 60, dataset_kwargs=_MNIST1D),
    _p("digits-mlp", "digits", "mlp", 32, 20, model_kwargs={"hidden": (128,)}),
    _p("sparse-logreg", "sparse", "logreg", 64, 10),
    _p(
        "cifar10-resnet18",
        "cifar10",
        "resnet18",
        128,
        20,
        needs_data_dir=True,
        note="needs --data-dir with CIFAR-10's python batches",
    ),
)

_BY_NAME = {p.name: p for p in PROBLEMS}


def names() -> list[str]:
    return list(_BY_NAME)


def is_user_problem(name: str) -> bool:
    """``"pkg.mod:function"`` names a user's problem; table names hold no colon."""
    return ":" in name


def user_problem(
    spec: str, *, batch_size: int = 128, epochs: int = 10, metric: str = "val_accuracy"
) -> Problem:
    """A user's problem ``"module:function"`` with the given budget (checked, not imported)."""
    module, sep, function = spec.partition(":")
    parts = module.split(".")
    if not (sep and all(p.isidentifier() for p in parts) and function.isidentifier()):
        raise ValueError(f"a user problem must look like 'package.module:function', got {spec!r}")
    return Problem(spec, "", "", batch_size, epochs, metric=metric, loss="", factory=spec)


def get(name: str, *, data_dir: str | None = None) -> Problem:
    """The table's problem ``name``; ValueError lists the known names."""
    try:
        problem = _BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"problem must be one of {', '.join(_BY_NAME)} or 'module:function', got {name!r}"
        ) from None
    if problem.needs_data_dir and data_dir is None:
        raise ValueError(f"problem {name!r} needs --data-dir (data_dir=...); got none")
    return problem


@dataclass
class Built:
    """A problem ready to train: a fresh model, its loss and the three splits as pairs."""

    model: nn.Module
    loss_fn: Callable[..., torch.Tensor]
    train: Pair
    val: Pair
    test: Pair


def _as_pair(what: str, data: Any) -> Pair:
    if isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) == 2:
        data = data.tensors
    if not (
        isinstance(data, tuple | list)
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    ):
        raise TypeError(
            f"{what} must be an (inputs, targets) pair of tensors or a TensorDataset of two, "
            f"got {type(data).__name__}"
        )
    x, y = data
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"{what} must be non-empty with one target per input, got {len(x)}, {len(y)}"
        )
    return x, y


def _call_factory(spec: str) -> Built:
    module, _, function = spec.partition(":")
    factory = getattr(importlib.import_module(module), function, None)
    if not callable(factory):
        raise TypeError(f"{spec}: {function!r} is not a function of module {module!r}")
    out = factory()
    shape = "(model, loss_fn, (train, val, test))"
    if not (isinstance(out, tuple | list) and len(out) == 3):
        raise TypeError(f"{spec} must return {shape}, got {type(out).__name__}")
    model, loss_fn, splits = out
    if not isinstance(model, nn.Module):
        raise TypeError(f"{spec} must return a torch.nn.Module first, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"{spec} must return a callable loss second, got {type(loss_fn).__name__}")
    if not (isinstance(splits, tuple | list) and len(splits) == 3):
        raise TypeError(f"{spec} must return (train, val, test) third, got {type(splits).__name__}")
    train, val, test = (
        _as_pair(f"{spec} {n}", s) for n, s in zip(("train", "val", "test"), splits)
    )
    return Built(model, loss_fn, train, val, test)


_LOSSES: dict[str, Callable[..., torch.Tensor]] = {"cross_entropy": nn.functional.cross_entropy}


def build(problem: Problem, seed: int, *, data_dir: str | None = None) -> Built:
    """The model (initialised from ``seed``), loss and splits of ``problem``.

    The same (problem, seed) gives the same initial weights for every optimizer.
    """
    torch.manual_seed(seed)
    if problem.factory is not None:
        return _call_factory(problem.factory)
    from ravine.data import load
    from ravine.models import create

    kwargs = dict(problem.dataset_kwargs)
    if problem.needs_data_dir:
        kwargs["data_dir"] = data_dir
    splits = load(problem.dataset, **kwargs)
    # the data are loaded (and cached) before seeding the model, so loading cannot shift it
    torch.manual_seed(seed)
    model = create(problem.model, splits.input_shape, splits.num_classes, **problem.model_kwargs)
    return Built(model, _LOSSES[problem.loss], splits.train, splits.val, splits.test)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / min(batch_size, n_train))
