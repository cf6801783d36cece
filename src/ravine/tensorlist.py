"""TL: arithmetic over a list of tensors, written once and dispatched to ``torch._foreach_*``.

Update rules are written over TLs so they read like the paper (``m.lerp_(g, 1 - b1)``) while a
whole (device, dtype) group is updated by a handful of multi-tensor kernels. This module is the
only place that knows about foreach: with ``foreach=False`` the same methods run one ordinary
tensor op per element, which is what ``impl="loop"`` uses as a reference.

Scalars may be Python numbers, 0-d tensors, or a sequence with one scalar per tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Union

import torch
from torch import Tensor

Scalar = float | int | Tensor
Operand = Union["TL", Scalar, Sequence[Scalar]]


class TL:
    """A list of tensors with elementwise arithmetic.

    In-place methods end with ``_`` and return ``self``; the others return a new TL, as do the
    operators ``-`` and ``*``. Only the operations some rule uses are here: add one with the rule
    that needs it (and a case in tests/test_tensorlist.py).
    """

    __slots__ = ("foreach", "tensors")

    def __init__(self, tensors: Iterable[Tensor], *, foreach: bool = True) -> None:
        self.tensors: list[Tensor] = list(tensors)
        self.foreach = foreach

    # -- container protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.tensors)

    def __getitem__(self, i: int) -> Tensor:
        return self.tensors[i]

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(t.shape)) for t in self.tensors)
        return f"TL([{shapes}], foreach={self.foreach})"

    def _new(self, tensors: Iterable[Tensor]) -> TL:
        return TL(tensors, foreach=self.foreach)

    # -- dispatch -----------------------------------------------------------------------------
    def _args(self, other: Operand) -> tuple[str, object]:
        """Classify an operand: ('list', tensors), ('scalars', one per tensor), ('scalar', x)."""
        if isinstance(other, TL):
            return "list", other.tensors
        if isinstance(other, (list, tuple)):
            return "scalars", list(other)
        return "scalar", _hoisted(other)

    def _binary(self, name: str, other: Operand, inplace: bool) -> TL:
        kind, value = self._args(other)
        if self.foreach:
            fn = getattr(torch, f"_foreach_{name}{'_' if inplace else ''}")
            out = fn(self.tensors, value)
            return self if inplace else self._new(out)
        values = value if kind in ("list", "scalars") else [value] * len(self.tensors)
        method = f"{name}{'_' if inplace else ''}"
        if not hasattr(Tensor, method):  # maximum_ exists only as a foreach op
            for t, v in zip(self.tensors, values):
                t.copy_(getattr(torch, name)(t, v))
            return self
        out = [getattr(t, method)(v) for t, v in zip(self.tensors, values)]
        return self if inplace else self._new(out)

    def _unary(self, name: str, inplace: bool) -> TL:
        if self.foreach:
            out = getattr(torch, f"_foreach_{name}{'_' if inplace else ''}")(self.tensors)
            return self if inplace else self._new(out)
        out = [getattr(t, f"{name}{'_' if inplace else ''}")() for t in self.tensors]
        return self if inplace else self._new(out)

    # -- binary arithmetic --------------------------------------------------------------------
    def add_(self, other: Operand, alpha: Scalar = 1) -> TL:
        """self += alpha * other."""
        if isinstance(other, TL):
            if isinstance(alpha, Tensor):
                other, alpha = other.mul(alpha), 1
            if self.foreach:
                torch._foreach_add_(self.tensors, other.tensors, alpha=alpha)
            else:
                for t, o in zip(self.tensors, other.tensors):
                    t.add_(o, alpha=alpha)
            return self
        if not _is_one(alpha):
            other = _mul(other, alpha)
        return self._binary("add", other, True)

    def add(self, other: Operand, alpha: Scalar = 1) -> TL:
        """self + alpha * other, as a new TL."""
        if isinstance(other, TL) and not isinstance(alpha, Tensor):
            if self.foreach:
                return self._new(torch._foreach_add(self.tensors, other.tensors, alpha=alpha))
            return self._new(t.add(o, alpha=alpha) for t, o in zip(self.tensors, other.tensors))
        return self.clone().add_(other, alpha)

    def mul_(self, other: Operand) -> TL:
        return self._binary("mul", other, True)

    def mul(self, other: Operand) -> TL:
        return self._binary("mul", other, False)

    def div_(self, other: Operand) -> TL:
        return self._binary("div", other, True)

    def div(self, other: Operand) -> TL:
        return self._binary("div", other, False)

    def maximum_(self, other: TL) -> TL:
        return self._binary("maximum", other, True)

    def clamp_(self, min: Operand | None = None, max: Operand | None = None) -> TL:
        if min is not None:
            self._binary("clamp_min", min, True) if self.foreach else self._clamp_loop(min, None)
        if max is not None:
            self._binary("clamp_max", max, True) if self.foreach else self._clamp_loop(None, max)
        return self

    def _clamp_loop(self, lo: Operand | None, hi: Operand | None) -> None:
        for i, t in enumerate(self.tensors):
            a = _hoisted(_pick(lo, i))
            b = _hoisted(_pick(hi, i))
            if (isinstance(a, Tensor) and a.dim() > 0) or (isinstance(b, Tensor) and b.dim() > 0):
                torch.clamp(t, a, b, out=t)
            else:
                t.clamp_(a, b)

    def lerp_(self, end: TL, weight: Scalar) -> TL:
        """self += weight * (end - self): the exponential moving average of the papers."""
        weight = _hoisted(weight)
        if self.foreach:
            torch._foreach_lerp_(self.tensors, end.tensors, weight)
        else:
            for t, e in zip(self.tensors, end.tensors):
                t.lerp_(e, weight)
        return self

    def addcmul_(self, a: TL, b: TL, value: Scalar = 1) -> TL:
        """self += value * a * b."""
        if isinstance(value, Tensor):
            return self.add_(a.mul(b).mul_(value))
        if self.foreach:
            torch._foreach_addcmul_(self.tensors, a.tensors, b.tensors, value)
        else:
            for t, x, y in zip(self.tensors, a.tensors, b.tensors):
                t.addcmul_(x, y, value=value)
        return self

    def addcdiv_(self, a: TL, b: TL, value: Scalar | Sequence[Scalar] = 1) -> TL:
        """self += value * a / b (``value`` may hold one scalar per tensor)."""
        if isinstance(value, Tensor):
            return self.add_(a.div(b).mul_(value))
        if self.foreach:
            torch._foreach_addcdiv_(self.tensors, a.tensors, b.tensors, value)
        else:
            values = value if isinstance(value, (list, tuple)) else [value] * len(self.tensors)
            for t, x, y, v in zip(self.tensors, a.tensors, b.tensors, values):
                t.addcdiv_(x, y, value=v)
        return self

    # -- unary --------------------------------------------------------------------------------
    def sqrt(self) -> TL:
        return self._unary("sqrt", False)

    def sqrt_(self) -> TL:
        return self._unary("sqrt", True)

    def reciprocal_(self) -> TL:
        return self._unary("reciprocal", True)

    def abs(self) -> TL:
        return self._unary("abs", False)

    def sign(self) -> TL:
        return self._unary("sign", False)

    def neg(self) -> TL:
        return self._unary("neg", False)

    def clone(self) -> TL:
        if self.foreach:
            return self._new(torch._foreach_mul(self.tensors, 1))
        return self._new(t.clone() for t in self.tensors)

    def copy_(self, src: TL) -> TL:
        if self.foreach:
            torch._foreach_copy_(self.tensors, src.tensors)
        else:
            for t, s in zip(self.tensors, src.tensors):
                t.copy_(s)
        return self

    # -- escape hatch for ops that have no foreach kernel (comparisons, where, ...) ------------
    def map(self, fn: Callable[..., Tensor], *others: TL) -> TL:
        """A new TL of ``fn(t, *o)`` for each position."""
        return self._new(fn(t, *o) for t, *o in zip(self.tensors, *(x.tensors for x in others)))

    # -- operators (out of place) -------------------------------------------------------------
    def __sub__(self, other: Operand) -> TL:
        return self._binary("sub", other, False)

    def __mul__(self, other: Operand) -> TL:
        return self._binary("mul", other, False)


def _hoisted(x: object) -> object:
    """A 0-d tensor scalar, computed once per call when traced by torch.compile for the CPU.

    Inductor inlines the scalar algebra of a rule (``lr / (1 - beta1**t)``) into the elementwise
    loop that consumes it, where the C compiler cannot hoist ``pow`` out again (the output
    pointers may alias the scalars): it would run once per vector of elements. A reduction is
    always computed into a buffer of its own, so ``max(x, x)`` (exact, NaN-propagating) moves the
    scalar into a one-element loop before the main one, with no call back into Python. On GPUs
    the recomputation is free and a reduction would cost a kernel launch, so nothing is done.
    """
    if (
        isinstance(x, Tensor)
        and x.dim() == 0
        and x.device.type == "cpu"
        and torch.compiler.is_compiling()
    ):
        return x.expand(2).amax()
    return x


def _is_one(x: object) -> bool:
    return isinstance(x, (int, float)) and x == 1


def _pick(x: Operand | None, i: int) -> object:
    if isinstance(x, TL):
        return x.tensors[i]
    if isinstance(x, (list, tuple)):
        return x[i]
    return x


def _mul(x: Operand, y: Scalar) -> Operand:
    if isinstance(x, (list, tuple)):
        return [v * y for v in x]
    return x * y
