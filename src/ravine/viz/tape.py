"""A surface's value and gradient at one point in Python floats, bit for bit what autograd gives.

Why: the runner behind ``ravine viz`` and the playground evaluates the surface at a 2-element
point every step, and through autograd that is all per-op dispatch and graph overhead (Beale:
16 forward and about 30 backward kernels, more than half of a one-optimizer run). The same
double-precision arithmetic in Python floats costs a few microseconds. The paths must not move
by a bit, so this module does not differentiate on its own: it replays autograd.

How: the surface's function is called once on tracing variables, which record each operation
(``+``, ``-``, ``*`` with variables or numbers, unary ``-``, ``** 2`` and ``** 3``: every
built-in polynomial surface and ``expr:`` formulas made of them). Anything else (``torch.cos``,
``/``, comparisons, another exponent) raises :class:`Unsupported`, and the runner keeps
autograd for that surface. From the record, :func:`compile_surface` writes one straight-line
Python function that computes, in double precision:

- the value, each operation as torch's CPU kernel computes it (``t ** 2`` is ``t * t``,
  ``t ** 3`` is ``t * t * t``; checked against torch in ``tests/test_viz.py``);
- each node's input gradients by torch's own backward formulas (``mul``: ``grad * other``;
  ``pow``: ``grad * (e * t ** (e - 1))``; ``sub``: ``-grad``; ...);
- their sums in the order torch's autograd engine adds them: it runs a node once every
  consumer has sent its gradient, the newest node (highest sequence number) first, and adds a
  gradient to what a node has received in the order of each node's inputs. Floating-point
  addition is not associative, so that order is what makes the sums agree to the bit.

The runner (:class:`ravine.viz.trajectory.Race`) uses it for ravine's own surfaces only (the
built-in ones and ``expr:`` formulas), which are pure functions of ``x`` and ``y``: a surface
registered from Python may read state that changes after it was traced.

The point is ``x, y = p.unbind()`` of one parameter (``batched=False``) or two columns of the
runs' stacked parameters (``batched=True``): there autograd adds each column's gradient to the
other column's zeros, which turns a gradient of -0.0 into +0.0, and so does this.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable
from typing import Any

#: Exponents whose torch CPU kernel is plain multiplication (others call ``std::pow``).
EXPONENTS = (2, 3)
#: Integer constants beyond this are not exactly doubles: their conversion is not traced.
MAX_EXACT_INT = 2**53

#: ``(x, y) -> (f, df/dx, df/dy)`` in floats.
ValueAndGrad = Callable[[float, float], tuple[float, float, float]]


class Unsupported(TypeError):
    """The surface does something the tape does not replay exactly (autograd is used)."""


def _constant(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unsupported(f"operand {value!r}")
    if isinstance(value, int) and abs(value) > MAX_EXACT_INT:
        raise Unsupported(f"integer {value} is not exactly a double")
    return float(value)


class _Var:
    """A traced value: arithmetic on it records a node on the tape."""

    __slots__ = ("index", "tape")

    def __init__(self, tape: _Tape, index: int) -> None:
        self.tape, self.index = tape, index

    def _binary(self, kind: str, other: Any) -> _Var:
        if isinstance(other, _Var):
            if other.tape is not self.tape:
                raise Unsupported("values of two traces")
            return self.tape.add(kind, self.index, other.index)
        return self.tape.add(kind + "c", self.index, _constant(other))

    def __add__(self, other: Any) -> _Var:
        return self._binary("add", other)

    def __radd__(self, other: Any) -> _Var:  # torch: c + t is add(t, c)
        return self._binary("add", other)

    def __sub__(self, other: Any) -> _Var:
        return self._binary("sub", other)

    def __rsub__(self, other: Any) -> _Var:  # torch: rsub(t, c)
        return self.tape.add("rsubc", self.index, _constant(other))

    def __mul__(self, other: Any) -> _Var:
        return self._binary("mul", other)

    def __rmul__(self, other: Any) -> _Var:  # torch: c * t is mul(t, c)
        return self._binary("mul", other)

    def __neg__(self) -> _Var:
        return self.tape.add("neg", self.index)

    def __pow__(self, exponent: Any) -> _Var:
        if isinstance(exponent, _Var) or _constant(exponent) not in EXPONENTS:
            raise Unsupported(f"exponent {exponent!r}")
        return self.tape.add("pow", self.index, float(exponent))

    def __bool__(self) -> bool:  # a branch on a value would not replay for other points
        raise Unsupported("a branch on a traced value")


class _Tape:
    """Nodes in creation order; node ``i``'s sequence number is ``i`` (0, 1: x and y)."""

    def __init__(self) -> None:
        self.nodes: list[tuple[Any, ...]] = [("leaf",), ("leaf",)]

    def add(self, kind: str, *args: Any) -> _Var:
        self.nodes.append((kind, *args))
        return _Var(self, len(self.nodes) - 1)


def _source(tape: _Tape, root: int, batched: bool) -> tuple[str, dict[str, float]]:
    """The value-and-gradient function's source, and its constants (bound by name)."""
    consts: dict[str, float] = {}

    def const(value: float) -> str:
        name = f"c{len(consts)}"
        consts[name] = value
        return name

    lines = ["def value_and_grad(v0, v1):"]
    for i, (kind, *args) in enumerate(tape.nodes):
        if kind == "leaf":
            continue
        a = f"v{args[0]}"
        if kind in ("add", "sub", "mul"):
            expr = f"{a} {dict(add='+', sub='-', mul='*')[kind]} v{args[1]}"
        elif kind in ("addc", "subc", "mulc"):
            expr = f"{a} {dict(addc='+', subc='-', mulc='*')[kind]} {const(args[1])}"
        elif kind == "rsubc":
            expr = f"{const(args[1])} - {a}"
        elif kind == "neg":
            expr = f"-{a}"
        else:  # pow: torch's kernel multiplies for 2 and 3
            expr = " * ".join([a] * int(args[1]))
        lines.append(f"    v{i} = {expr}")

    # Which nodes feed the root (autograd runs only those) and how many edges reach each.
    deps = [0] * len(tape.nodes)
    seen, todo = {root}, [root]
    while todo:
        kind, *args = tape.nodes[todo.pop()]
        for j in _inputs(kind, args):
            deps[j] += 1
            if j not in seen:
                seen.add(j)
                todo.append(j)

    # The engine: ready nodes by sequence number, newest first; gradients summed on arrival.
    received: dict[int, str] = {root: "1.0"}
    names = iter(f"g{k}" for k in range(10 * len(tape.nodes) + 10))
    ready = [-root]
    while ready:
        i = -heapq.heappop(ready)
        kind, *args = tape.nodes[i]
        if kind == "leaf":
            continue
        g = received[i]
        for j, grad in zip(_inputs(kind, args), _backward(kind, args, g, const)):
            name = next(names)
            if j in received:
                lines.append(f"    {name} = {received[j]} + {grad}")
            else:
                lines.append(f"    {name} = {grad}")
            received[j] = name
            deps[j] -= 1
            if deps[j] == 0:
                heapq.heappush(ready, -j)
    gx, gy = received.get(0), received.get(1)
    if batched and gx is not None and gy is not None:
        # each column's gradient added to the other column's zeros: -0.0 becomes +0.0
        gx, gy = f"({gx} + 0.0)", f"({gy} + 0.0)"
    lines.append(f"    return v{root}, {gx or '0.0'}, {gy or '0.0'}")
    return "\n".join(lines) + "\n", consts


def _inputs(kind: str, args: list[Any]) -> list[int]:
    """The nodes a node's backward sends gradients to, in torch's edge order (self, other)."""
    if kind == "leaf":
        return []
    if kind in ("add", "sub", "mul"):
        return [args[0], args[1]]
    return [args[0]]


def _backward(kind: str, args: list[Any], g: str, const: Callable[[float], str]) -> list[str]:
    """Each input's gradient by torch's derivative formula (tools/autograd/derivatives.yaml)."""
    if kind in ("add",):
        return [g, g]
    if kind == "sub":
        return [g, f"(-{g})"]
    if kind == "mul":  # self: grad * other, other: grad * self
        return [f"({g} * v{args[1]})", f"({g} * v{args[0]})"]
    if kind in ("addc", "subc"):
        return [g]
    if kind in ("rsubc", "neg"):
        return [f"(-{g})"]
    if kind == "mulc":
        return [f"({g} * {const(args[1])})"]
    # pow_backward: grad * (exponent * self.pow(exponent - 1)); self.pow(1) is self
    a, e = f"v{args[0]}", args[1]
    power = a if e == 2 else f"({a} * {a})"
    return [f"({g} * ({const(e)} * {power}))"]


@functools.lru_cache(maxsize=256)
def compile_surface(fn: Callable[..., Any], batched: bool) -> ValueAndGrad:
    """``fn``'s value and gradient at a point as autograd computes them in float64, as a plain
    Python function; :class:`Unsupported` if ``fn`` does anything the tape cannot replay."""
    tape = _Tape()
    try:
        out = fn(_Var(tape, 0), _Var(tape, 1))
    except Unsupported:
        raise
    except Exception as err:  # torch functions, methods, comparisons... on a tracing value
        raise Unsupported(f"{type(err).__name__}: {err}") from None
    if not isinstance(out, _Var) or out.tape is not tape or out.index < 2:
        raise Unsupported("the surface's value is not computed from x and y")
    source, consts = _source(tape, out.index, batched)
    # The constants are bound as default arguments (locals); the source holds names only.
    source = source.replace("(v0, v1)", "(v0, v1" + "".join(f", {k}={k}" for k in consts) + ")", 1)
    namespace: dict[str, Any] = {}
    name = f"<tape of {getattr(fn, '__name__', 'a surface')}>"
    exec(compile(source, name, "exec"), dict(consts), namespace)
    return namespace["value_and_grad"]  # type: ignore[no-any-return]
