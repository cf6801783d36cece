"""Offline datasets and the order examples are visited in (shuffling, curriculum learning)."""

from ravine.data.datasets import (
    DATASETS,
    DatasetNotFoundError,
    Splits,
    cifar10,
    digits,
    fashion_mnist,
    load,
    mnist,
    mnist1d,
    read_idx,
    sparse_powerlaw,
)
from ravine.data.order import STRATEGIES, curriculum_order, loss_difficulty, shuffled

__all__ = [
    "DATASETS",
    "STRATEGIES",
    "DatasetNotFoundError",
    "Splits",
    "cifar10",
    "curriculum_order",
    "digits",
    "fashion_mnist",
    "load",
    "loss_difficulty",
    "mnist",
    "mnist1d",
    "read_idx",
    "shuffled",
    "sparse_powerlaw",
]
