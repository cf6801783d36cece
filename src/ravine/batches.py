"""The data kinds ``ravine.fit`` and ``ravine.evaluate`` accept, as one interface of batches.

* Tensors: an ``(inputs, targets)`` pair of tensors or numpy arrays, or a ``TensorDataset`` of
  two tensors. Moved once to the training device and indexed directly (the fast path: no
  DataLoader, no collation); numpy floating arrays take the model's floating dtype, numpy
  integer targets int64.
* A map-style ``torch.utils.data.Dataset`` (``__getitem__`` and ``__len__``): fit builds a
  DataLoader per epoch whose batches follow fit's own seeded order (shuffle, curriculum).
* An ``IterableDataset``: batched by a DataLoader with fit's ``batch_size``, in its own order.
* A DataLoader or any other re-iterable of batches (a list of batches, an object whose
  ``__iter__`` returns a fresh iterator): used as given, once per epoch. A one-shot iterator or
  generator is refused, since every epoch iterates the data again.

A batch is an ``(inputs, targets)`` tuple or list, a dict with one of :data:`INPUT_KEYS` and one
of :data:`TARGET_KEYS`, or anything an ``unpack(batch) -> (inputs, targets)`` callable
understands. Inputs may be a tensor or a tuple/list/dict of tensors (passed to the model as one
argument); targets are a tensor with one row per example.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

__all__ = [
    "INPUT_KEYS",
    "TARGET_KEYS",
    "Batches",
    "DatasetBatches",
    "IterableBatches",
    "TensorBatches",
    "as_batches",
    "to_device",
    "unpack_batch",
]

Unpack = Callable[[Any], tuple[Any, Any]]

INPUT_KEYS = ("inputs", "input", "x", "image", "images", "features")
TARGET_KEYS = ("targets", "target", "y", "labels", "label")


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors in ``obj`` (nested tuples, lists, dicts) on ``device``; pinned ones copied async."""
    if isinstance(obj, torch.Tensor):
        if obj.device == device:
            return obj
        return obj.to(device, non_blocking=obj.is_pinned())
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def _first_key(batch: dict[Any, Any], keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if k in batch), None)


def unpack_batch(batch: Any, where: str, unpack: Unpack | None = None) -> tuple[Any, torch.Tensor]:
    """``(inputs, targets)`` of one batch; ValueError naming ``where`` (e.g. "train batch 3")."""
    if unpack is not None:
        pair = unpack(batch)
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(
                f"{where}: unpack(batch) must return an (inputs, targets) pair, "
                f"got {_describe(pair)}"
            )
        inputs, targets = pair
    elif isinstance(batch, dict):
        ki, kt = _first_key(batch, INPUT_KEYS), _first_key(batch, TARGET_KEYS)
        if ki is None or kt is None:
            raise ValueError(
                f"{where} is a dict with keys {sorted(map(str, batch))}: expected one of "
                f"{INPUT_KEYS} for the inputs and one of {TARGET_KEYS} for the targets, or pass "
                "unpack=lambda batch: (inputs, targets)"
            )
        inputs, targets = batch[ki], batch[kt]
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        inputs, targets = batch
    else:
        raise ValueError(
            f"{where} must be an (inputs, targets) pair or a dict with input and target keys, "
            f"got {_describe(batch)}; pass unpack= to read other batches"
        )
    if not isinstance(targets, torch.Tensor):
        raise ValueError(f"{where}: the targets must be a tensor, got {_describe(targets)}")
    if targets.ndim == 0:
        raise ValueError(f"{where}: the targets must have one row per example, got a 0-d tensor")
    if isinstance(inputs, torch.Tensor) and (inputs.ndim == 0 or len(inputs) != len(targets)):
        shape = tuple(inputs.shape)
        raise ValueError(
            f"{where}: inputs of shape {shape} and targets of shape {tuple(targets.shape)} must "
            "have the same number of rows (one per example)"
        )
    return inputs, targets


def _describe(obj: Any) -> str:
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of length {len(obj)}"
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    return f"a {type(obj).__name__}"


class Batches(abc.ABC):
    """One kind of data, seen as batches on a device.

    ``n``: examples (None when only iterating tells); ``ordered``: whether fit's shuffle,
    seed and curriculum decide the order (True) or the data keep their own (False).
    """

    kind = "batches"
    ordered = False
    n: int | None = None

    @abc.abstractmethod
    def n_batches(self, batch_size: int | None) -> int | None:
        """Batches in an epoch; None when only iterating tells."""

    @abc.abstractmethod
    def batches(
        self, batch_size: int | None, order: torch.Tensor | None, device: torch.device
    ) -> Iterator[tuple[Any, torch.Tensor]]:
        """This epoch's ``(inputs, targets)`` on ``device``: ``order`` (if given) picks examples."""


class TensorBatches(Batches):
    """Tensors indexed directly: moved to the device once, sliced or gathered per batch."""

    kind = "tensors"
    ordered = True

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.n = len(x)

    def n_batches(self, batch_size: int | None) -> int:
        return math.ceil(self.n / min(batch_size or self.n, self.n))

    def to(self, device: torch.device) -> TensorBatches:
        return TensorBatches(self.x.to(device), self.y.to(device))

    def batches(
        self, batch_size: int | None, order: torch.Tensor | None, device: torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = to_device(self.x, device), to_device(self.y, device)
        bs = min(batch_size or self.n, self.n)
        if order is not None:
            order = order.to(x.device)
        for start in range(0, self.n, bs):
            if order is None:
                yield x[start : start + bs], y[start : start + bs]
            else:
                idx = order[start : start + bs]
                yield x[idx], y[idx]


class DatasetBatches(Batches):
    """A map-style Dataset: a DataLoader per epoch over fit's index order (num_workers=0)."""

    kind = "dataset"
    ordered = True

    def __init__(self, dataset: Dataset[Any], name: str, unpack: Unpack | None) -> None:
        self.dataset, self.name, self.unpack = dataset, name, unpack
        self.n = len(dataset)  # type: ignore[arg-type]

    def n_batches(self, batch_size: int | None) -> int:
        return math.ceil(self.n / min(batch_size or self.n, self.n))

    def batches(
        self, batch_size: int | None, order: torch.Tensor | None, device: torch.device
    ) -> Iterator[tuple[Any, torch.Tensor]]:
        bs = min(batch_size or self.n, self.n)
        indices = range(self.n) if order is None else order.tolist()
        chunks = [list(indices[i : i + bs]) for i in range(0, self.n, bs)]
        loader = DataLoader(self.dataset, batch_sampler=chunks, pin_memory=device.type == "cuda")
        for i, batch in enumerate(loader):
            inputs, targets = unpack_batch(batch, f"{self.name} batch {i}", self.unpack)
            yield to_device(inputs, device), to_device(targets, device)


class IterableBatches(Batches):
    """Batches used as given (a DataLoader, a list of batches, ...), iterated once per epoch."""

    kind = "loader"

    def __init__(
        self, data: Iterable[Any], name: str, unpack: Unpack | None, batched_by_fit: bool = False
    ) -> None:
        self.data, self.name, self.unpack = data, name, unpack
        self.batched_by_fit = batched_by_fit  # an IterableDataset that fit's batch_size batches
        try:
            self._len: int | None = len(data)  # type: ignore[arg-type]
        except TypeError:  # an iterable without a length (an IterableDataset's loader, ...)
            self._len = None

    def n_batches(self, batch_size: int | None) -> int | None:
        return self._len

    def batches(
        self, batch_size: int | None, order: torch.Tensor | None, device: torch.device
    ) -> Iterator[tuple[Any, torch.Tensor]]:
        for i, batch in enumerate(self.data):
            inputs, targets = unpack_batch(batch, f"{self.name} batch {i}", self.unpack)
            yield to_device(inputs, device), to_device(targets, device)


def _as_tensor(
    name: str, value: Any, float_dtype: torch.dtype, targets: bool = False
) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(value))
        # numpy's default float64 would meet a float32 model: follow the model, as Keras does;
        # integer targets (int32 on some platforms) become int64, what torch's losses index with
        if t.is_floating_point():
            return t.to(float_dtype)
        if targets and t.dtype not in (torch.bool, torch.int64) and not t.is_complex():
            return t.long()
        return t
    raise ValueError(f"{name} must hold tensors or numpy arrays, got {type(value).__name__}")


def _is_pair(data: Any) -> bool:
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in data)
    )


def as_batches(
    name: str,
    data: Any,
    *,
    batch_size: int | None,
    float_dtype: torch.dtype = torch.float32,
    unpack: Unpack | None = None,
) -> Batches:
    """``data`` as Batches; ValueError naming ``name`` and what was expected."""
    if isinstance(data, TensorDataset):
        if len(data.tensors) != 2:
            raise ValueError(
                f"{name} is a TensorDataset of {len(data.tensors)} tensors, expected 2 "
                "(inputs, targets); for other layouts pass a DataLoader and unpack="
            )
        data = data.tensors
    if _is_pair(data):
        x = _as_tensor(name, data[0], float_dtype)
        y = _as_tensor(name, data[1], float_dtype, targets=True)
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y) or len(x) == 0:
            raise ValueError(
                f"{name} inputs and targets must be non-empty and of equal length, "
                f"got shapes {tuple(x.shape)} and {tuple(y.shape)}"
            )
        return TensorBatches(x, y)
    if isinstance(data, (tuple, list)) and unpack is None:
        bad = next((i for i, b in enumerate(data) if not _is_batch(b)), None)
        if bad is not None and len(data) == 2:
            a, b = data
            raise ValueError(
                f"{name} must hold tensors or numpy arrays, got {type(a).__name__}, "
                f"{type(b).__name__}"
            )
        if bad is not None or not data:
            got = "an empty list" if not data else f"item {bad} is {_describe(data[bad])}"
            raise ValueError(
                f"{name} must be an (inputs, targets) pair of tensors or numpy arrays, or a list "
                f"of (inputs, targets) batches (or pass unpack=), got {type(data).__name__} "
                f"whose {got}"
                if data
                else f"{name} is {got}: expected batches"
            )
    if isinstance(data, IterableDataset):
        if batch_size is None:
            raise ValueError(
                f"{name} is an IterableDataset of examples: batch_size must be an integer >= 1, "
                "got None (to use batches as the dataset yields them, pass "
                "DataLoader(dataset, batch_size=None))"
            )
        return IterableBatches(DataLoader(data, batch_size=batch_size), name, unpack, True)
    if isinstance(data, Dataset):
        if not hasattr(data, "__len__"):
            raise ValueError(f"{name} is a Dataset without __len__: fit needs its size")
        if len(data) == 0:  # type: ignore[arg-type]
            raise ValueError(f"{name} is an empty Dataset")
        return DatasetBatches(data, name, unpack)
    if isinstance(data, (torch.Tensor, np.ndarray, str, bytes)) or not isinstance(data, Iterable):
        raise ValueError(
            f"{name} must be an (inputs, targets) pair of tensors or numpy arrays, a Dataset, a "
            f"DataLoader or a re-iterable of batches, got {_describe(data)}"
        )
    if iter(data) is data:
        raise ValueError(
            f"{name} is a one-shot iterator ({type(data).__name__}): every epoch iterates the "
            "data again, so pass something re-iterable: a list of batches, a DataLoader, or an "
            "object whose __iter__ returns a fresh iterator"
        )
    return IterableBatches(data, name, unpack)


def _is_batch(batch: Any) -> bool:
    """A batch as fit reads it without unpack=: a dict, or an (inputs, targets) pair."""
    return isinstance(batch, dict) or (isinstance(batch, (tuple, list)) and len(batch) == 2)
