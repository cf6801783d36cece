"""What a valid hyperparameter is: ranges, kinds (real, tuple of reals, flag, integer, choice) and
the one check every optimizer, ``add_param_group`` and ``load_state_dict`` run.

A kind checks a value and returns it normalised (numpy scalars become Python numbers, lists of
reals become tuples), or raises :class:`HyperparameterError` in torch.optim's wording plus what
was expected: ``Invalid lr: (0.1, 0.2) (expected a real number in [0, inf))``.

Reals are finite unless an :class:`Interval` says ``allow_inf=True``; where one does, the
hyperparameter's docstring says why infinity has a meaning there.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor


class HyperparameterError(TypeError, ValueError):
    """An invalid hyperparameter: caught as ValueError (torch.optim's convention, and what the
    CLIs catch) and, for a value of the wrong type, as TypeError."""


class Kind(Protocol):
    """A kind of hyperparameter value; ``check`` returns the value normalised or raises."""

    def check(self, name: str, value: Any) -> Any: ...

    def describe(self) -> str: ...


def _invalid(name: str, value: Any, expected: str) -> HyperparameterError:
    return HyperparameterError(f"Invalid {name}: {value!r} (expected {expected})")


def _is_numpy_bool(value: Any) -> bool:
    return type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool")


def _real(value: Any) -> Any:
    """``value`` as a Python int or float, a one-element real tensor as itself; else None."""
    if isinstance(value, bool) or _is_numpy_bool(value):
        return None
    if isinstance(value, Tensor):
        real = not value.is_complex() and value.dtype != torch.bool
        return value if real and value.numel() == 1 else None
    if type(value) in (int, float):
        return value
    if isinstance(value, numbers.Integral):  # numpy integers
        return int(value)
    if isinstance(value, numbers.Real):  # numpy floats, Fraction
        return float(value)
    return None


@dataclass(frozen=True)
class Interval:
    """A range of real values, e.g. ``Interval(0, 1, high_open=True)`` for [0, 1).

    Used as a kind, it means one finite real number in the range (``allow_inf=True`` admits an
    infinite bound where the range reaches it). Python numbers, numpy scalars and one-element
    real tensors (as torch.optim takes ``lr``) are accepted.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    allow_inf: bool = False

    def __contains__(self, value: Any) -> bool:
        if isinstance(value, Tensor):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        value = float(value)
        if math.isnan(value) or (math.isinf(value) and not self.allow_inf):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (
            self.high is not None and (value >= self.high if self.high_open else value > self.high)
        )

    def __str__(self) -> str:
        lo = "(-inf" if self.low is None else ("(" if self.low_open else "[") + f"{self.low:g}"
        hi = "inf)" if self.high is None else f"{self.high:g}" + (")" if self.high_open else "]")
        if self.allow_inf and self.high is None:
            hi = "inf]"
        return f"{lo}, {hi}"

    def describe(self) -> str:
        return f"a real number in {self}"

    def check(self, name: str, value: Any) -> Any:
        real = _real(value)
        if real is None or real not in self:
            raise _invalid(name, value, self.describe())
        return real


NONNEGATIVE = Interval(0)
POSITIVE = Interval(0, low_open=True)
UNIT_OPEN_HIGH = Interval(0, 1, high_open=True)  # betas: [0, 1)
UNIT = Interval(0, 1)  # rho, dampening: [0, 1]


@dataclass(frozen=True)
class Reals:
    """A tuple of reals each in ``interval``: ``arity`` of them, or any positive number if None.

    A list is accepted and stored as a tuple; elements are named ``betas[0]``, ``betas[1]``...
    """

    interval: Interval
    arity: int | None = 2

    def describe(self) -> str:
        count = "one or more" if self.arity is None else str(self.arity)
        return f"a tuple of {count} real numbers in {self.interval}"

    def check(self, name: str, value: Any) -> Any:
        if not isinstance(value, (tuple, list)) or (
            len(value) != self.arity if self.arity is not None else not value
        ):
            raise _invalid(name, value, self.describe())
        return tuple(self.interval.check(f"{name}[{i}]", v) for i, v in enumerate(value))


@dataclass(frozen=True)
class Flag:
    """True or False; nothing else (``maximize="no"`` is a string, not False)."""

    def describe(self) -> str:
        return "True or False"

    def check(self, name: str, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if _is_numpy_bool(value):
            return bool(value)
        raise _invalid(name, value, self.describe())


@dataclass(frozen=True)
class Integer:
    """An integer (not a bool, not a float with an integral value) in ``interval``."""

    interval: Interval

    def describe(self) -> str:
        return f"an integer in {self.interval}"

    def check(self, name: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise _invalid(name, value, self.describe())
        if int(value) not in self.interval:
            raise _invalid(name, value, self.describe())
        return int(value)


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of values (strings, None)."""

    values: tuple[Any, ...]

    def describe(self) -> str:
        return "one of " + ", ".join(map(repr, self.values))

    def check(self, name: str, value: Any) -> Any:
        if not isinstance(value, (str, type(None))) or value not in self.values:
            raise _invalid(name, value, self.describe())
        return value


@dataclass(frozen=True)
class OrNone:
    """None, or a value of ``kind`` (e.g. NAdam's ``momentum_decay``: None is Dozat's form)."""

    kind: Kind

    def describe(self) -> str:
        return f"None or {self.kind.describe()}"

    def check(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        try:
            return self.kind.check(name, value)
        except HyperparameterError:
            raise _invalid(name, value, self.describe()) from None


FLAG = Flag()


def check_hyperparameter(name: str, value: Any, kind: Kind) -> Any:
    """``value`` normalised if it is valid for ``kind`` (an :class:`Interval` means one real);
    otherwise raise :class:`HyperparameterError` naming ``name``, the value and what was
    expected."""
    return kind.check(name, value)


def check_hyperparameters(values: dict[str, Any], kinds: dict[str, Kind]) -> dict[str, Any]:
    """A copy of ``values`` with every entry that has a kind checked and normalised."""
    out = dict(values)
    for name in kinds:
        if name in out:
            out[name] = kinds[name].check(name, out[name])
    return out


# Boolean words as the command lines write flags: maximize=no must not be the (true) string "no".
BOOLEAN_WORDS = {"true": True, "false": False, "yes": True, "no": False}


def parse_literal(text: str) -> Any:
    """A hyperparameter written as text (``ravine train --hp``, ``ravine viz`` specs).

    true/false/yes/no (any case) are booleans; anything else must be a Python literal (number,
    tuple, list, string, True/False/None), read with ``ast.literal_eval``, which never runs
    code. Raises ValueError when ``text`` is neither.
    """
    import ast

    word = text.strip().lower()
    if word in BOOLEAN_WORDS:
        return BOOLEAN_WORDS[word]
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(f"{text!r} is not a Python literal or a boolean word") from None


def checked_count(where: str, value: Any) -> int:
    """A step count: an int >= 0 (or a one-element tensor holding one, torch's form)."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        number = value.item()
        value = int(number) if float(number).is_integer() else number
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Invalid {where}: {value!r} (expected an integer >= 0)")
    return value
