"""Two-dimensional test functions with known minima, for watching optimizers move.

Each :class:`Surface` is a torch function of ``(x, y)`` that works elementwise, so the same code
evaluates one point (with autograd for the gradient) or a whole plotting grid. It carries its known
stationary points, a plotting window and a start point. Built-in surfaces are looked up by name with
:func:`get`; add your own with :func:`register` (a Python function) or :func:`from_expression`
(a formula such as ``"x**2 + 3*sin(y)"``).
"""

from __future__ import annotations

import ast
import difflib
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

SurfaceFn = Callable[[Tensor, Tensor], Tensor]
Point = tuple[float, float]
Window = tuple[float, float, float, float]


@dataclass(frozen=True)
class Surface:
    """A 2-D loss surface ``f(x, y)``.

    ``minima`` are the known global/local minima; ``saddles`` other stationary points worth marking
    (saddle points, and maxima such as Himmelblau's).
    ``window`` is ``(xmin, xmax, ymin, ymax)`` for plotting; ``start`` the default start point.
    ``min_value`` is the global minimum value (``None`` when the surface is unbounded below).
    ``log_levels`` asks the contour plot for logarithmically spaced levels, needed where the value
    spans many orders of magnitude (Beale, Rosenbrock).
    """

    name: str
    fn: SurfaceFn
    window: Window
    start: Point
    minima: tuple[Point, ...] = ()
    saddles: tuple[Point, ...] = ()
    min_value: float | None = 0.0
    log_levels: bool = False
    formula: str = ""
    description: str = ""
    aliases: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        xmin, xmax, ymin, ymax = self.window
        if not (xmin < xmax and ymin < ymax):
            raise ValueError(
                f"window={self.window!r} for surface {self.name!r}: expected "
                "(xmin, xmax, ymin, ymax) with xmin < xmax and ymin < ymax"
            )

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        return self.fn(x, y)

    def loss(self, p: Tensor) -> Tensor:
        """Value at a point held as a 2-element tensor (what an optimizer updates)."""
        return self.fn(p[0], p[1])

    def value(self, x: float, y: float) -> float:
        t = torch.tensor([x, y], dtype=torch.float64)
        return float(self.loss(t))

    def gradient(self, x: float, y: float) -> tuple[float, float]:
        """Gradient at ``(x, y)`` from autograd, in float64."""
        p = torch.tensor([x, y], dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(self.loss(p), p)
        return float(g[0]), float(g[1])

    def grid(self, n: int = 200, window: Window | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(X, Y, Z)`` on an ``n x n`` grid over the window, float64."""
        xmin, xmax, ymin, ymax = window or self.window
        xs = torch.linspace(xmin, xmax, n, dtype=torch.float64)
        ys = torch.linspace(ymin, ymax, n, dtype=torch.float64)
        X, Y = torch.meshgrid(xs, ys, indexing="xy")
        with torch.no_grad():
            Z = self.fn(X, Y)
        return X, Y, Z

    @property
    def stationary_points(self) -> tuple[Point, ...]:
        return self.minima + self.saddles


def _beale(x: Tensor, y: Tensor) -> Tensor:
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _rosenbrock(x: Tensor, y: Tensor) -> Tensor:
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _quadratic(x: Tensor, y: Tensor) -> Tensor:
    return x**2 + 10 * y**2


def _saddle(x: Tensor, y: Tensor) -> Tensor:
    return x**2 - y**2


def _monkey_saddle(x: Tensor, y: Tensor) -> Tensor:
    return x**3 - 3 * x * y**2


def _himmelblau(x: Tensor, y: Tensor) -> Tensor:
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


def _rastrigin(x: Tensor, y: Tensor) -> Tensor:
    two_pi = 2 * math.pi
    return 20 + x**2 - 10 * torch.cos(two_pi * x) + y**2 - 10 * torch.cos(two_pi * y)


def _booth(x: Tensor, y: Tensor) -> Tensor:
    return (x + 2 * y - 7) ** 2 + (2 * x + y - 5) ** 2


_BUILTINS: tuple[Surface, ...] = (
    Surface(
        "beale",
        _beale,
        window=(-4.5, 4.5, -4.5, 4.5),
        start=(1.0, 1.5),
        minima=((3.0, 0.5),),
        log_levels=True,
        formula="(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2",
        description="flat plateaus and a curved valley; the survey's animation surface",
    ),
    Surface(
        "rosenbrock",
        _rosenbrock,
        window=(-2.0, 2.0, -1.0, 3.0),
        start=(-1.5, 2.5),
        minima=((1.0, 1.0),),
        log_levels=True,
        formula="(1 - x)^2 + 100 (y - x^2)^2",
        description="long, narrow, curved valley",
    ),
    Surface(
        "quadratic",
        _quadratic,
        window=(-8.0, 8.0, -8.0, 8.0),
        start=(7.0, 5.0),
        minima=((0.0, 0.0),),
        formula="x^2 + 10 y^2",
        description="ill-conditioned bowl (condition number 10)",
        aliases=("bowl",),
    ),
    Surface(
        "saddle",
        _saddle,
        window=(-8.0, 8.0, -8.0, 8.0),
        start=(7.0, 0.001),
        saddles=((0.0, 0.0),),
        min_value=None,
        formula="x^2 - y^2",
        description="saddle point at the origin; unbounded below along y",
    ),
    Surface(
        "monkey-saddle",
        _monkey_saddle,
        window=(-2.0, 2.0, -2.0, 2.0),
        start=(1.5, 0.05),
        saddles=((0.0, 0.0),),
        min_value=None,
        formula="x^3 - 3 x y^2",
        description="degenerate saddle with three descending valleys",
        aliases=("monkey_saddle", "monkey"),
    ),
    Surface(
        "himmelblau",
        _himmelblau,
        window=(-5.0, 5.0, -5.0, 5.0),
        start=(-0.5, 0.0),
        minima=(
            (3.0, 2.0),
            (-2.805118086952745, 3.131312518250573),
            (-3.779310253377747, -3.283185991286170),
            (3.584428340330492, -1.848126526964404),
        ),
        # The local maximum: every optimizer is pushed away from it.
        saddles=((-0.2708445906673476, -0.9230385564799813),),
        log_levels=True,
        formula="(x^2 + y - 11)^2 + (x + y^2 - 7)^2",
        description="four equal minima; where you end depends on the path",
    ),
    Surface(
        "rastrigin",
        _rastrigin,
        window=(-5.12, 5.12, -5.12, 5.12),
        start=(-3.2, 2.2),
        minima=((0.0, 0.0),),
        formula="20 + x^2 - 10 cos(2 pi x) + y^2 - 10 cos(2 pi y)",
        description="many regularly spaced local minima",
    ),
    Surface(
        "booth",
        _booth,
        window=(-10.0, 10.0, -10.0, 10.0),
        start=(-8.0, -7.0),
        minima=((1.0, 3.0),),
        formula="(x + 2y - 7)^2 + (2x + y - 5)^2",
        description="plain convex bowl, tilted",
    ),
)

_REGISTRY: dict[str, Surface] = {}


def _normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register(surface: Surface, *, overwrite: bool = False) -> Surface:
    """Make ``surface`` available by name to :func:`get`, ``ravine viz`` and the plots."""
    keys = [_normalize(surface.name), *(_normalize(a) for a in surface.aliases)]
    if not overwrite:
        taken = [k for k in keys if k in _REGISTRY]
        if taken:
            raise ValueError(
                f"surface name {taken[0]!r} is already registered; "
                "pass overwrite=True to replace it"
            )
    for k in keys:
        _REGISTRY[k] = surface
    return surface


for _s in _BUILTINS:
    register(_s)


def names() -> list[str]:
    """Registered surface names (aliases left out), in registration order."""
    seen: list[str] = []
    for s in _REGISTRY.values():
        if s.name not in seen:
            seen.append(s.name)
    return seen


def get(name: str | Surface) -> Surface:
    """Look a surface up by name (case-insensitive, ``_`` and ``-`` alike)."""
    if isinstance(name, Surface):
        return name
    key = _normalize(name)
    if key.startswith("expr:"):
        return from_expression(name.strip()[len("expr:") :])
    try:
        return _REGISTRY[key]
    except KeyError:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"surface={name!r} is not a known surface (expected one of {', '.join(names())}, "
            f"or 'expr:<formula in x and y>'){hint}"
        ) from None


# --- user formulas -------------------------------------------------------------------------------

_FUNCS: dict[str, Callable[[Tensor], Tensor]] = {
    "sin": torch.sin,
    "cos": torch.cos,
    "tan": torch.tan,
    "exp": torch.exp,
    "log": torch.log,
    "sqrt": torch.sqrt,
    "abs": torch.abs,
    "tanh": torch.tanh,
    "sinh": torch.sinh,
    "cosh": torch.cosh,
    "atan": torch.atan,
}
_CONSTS = {"pi": math.pi, "e": math.e}
_BINOPS: dict[type[ast.operator], Callable[[object, object], object]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNOPS: dict[type[ast.unaryop], Callable[[object], object]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


#: Bounds on user formulas, so that a hostile one fails fast with a clear error instead of
#: hanging (``9**9**9`` as a Python int) or blowing the recursion limit.
MAX_FORMULA_CHARS = 1000
MAX_FORMULA_NODES = 400
MAX_FORMULA_DEPTH = 50
#: A constant exponent beyond this only makes the surface 0 or inf over the window.
MAX_EXPONENT = 100.0
#: Literals and folded constants must stay within this magnitude (float64 reaches ~1.8e308).
MAX_CONSTANT = 1e100


class _FormulaError(ValueError):
    """Raised on the sub-expression at fault; :func:`_compile_formula` names the formula."""

    def __init__(self, node: ast.AST, problem: str) -> None:
        part = ast.unparse(node)
        super().__init__(f"{part if len(part) <= 60 else part[:50] + '...'!r} {problem}")


def _shown(expr: str) -> str:
    """``expression='...'`` for messages, cut short for long formulas."""
    return f"expression={expr!r}" if len(expr) <= 80 else f"expression={expr[:60]!r}..."


def _parse_formula(expr: str) -> ast.Expression:
    """Parse, bounding the length, the node count and the nesting depth."""
    if not isinstance(expr, str):
        raise ValueError(f"expression={expr!r}: expected a formula string in x and y")
    if len(expr) > MAX_FORMULA_CHARS:
        raise ValueError(
            f"{_shown(expr)} is {len(expr)} characters long; expected at most {MAX_FORMULA_CHARS}"
        )
    try:
        tree = ast.parse(expr.replace("^", "**"), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"{_shown(expr)} is not a valid formula: {err.msg}") from None
    except (ValueError, RecursionError, MemoryError) as err:  # e.g. too deeply nested for CPython
        raise ValueError(f"{_shown(expr)} is not a valid formula: {err}") from None
    nodes, stack = 0, [(tree.body, 1)]
    while stack:  # iterative: the checks below recurse, so the depth is bounded first
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_FORMULA_DEPTH or nodes > MAX_FORMULA_NODES:
            what = (
                f"nested {depth} deep"
                if depth > MAX_FORMULA_DEPTH
                else f"more than {MAX_FORMULA_NODES} nodes"
            )
            raise ValueError(
                f"{_shown(expr)} is too complex ({what}); expected at most "
                f"{MAX_FORMULA_DEPTH} levels and {MAX_FORMULA_NODES} nodes"
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return tree


def _constant(node: ast.AST, value: object, what: str) -> float:
    """A folded constant as a float; refuse complex, non-finite and huge values."""
    if isinstance(value, complex):
        raise _FormulaError(node, f"{what} a complex number {value!r}; expected a real one")
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or abs(number) > MAX_CONSTANT:
        if isinstance(value, float):
            shown = f"{value:.6g}"
        else:
            shown = repr(value) if len(repr(value)) <= 30 else f"a {len(str(value))}-digit number"
        raise _FormulaError(
            node, f"{what} {shown}; expected a finite number of magnitude <= {MAX_CONSTANT:g}"
        )
    return number


def _fold(node: ast.AST) -> float | ast.AST:
    """Fold constant sub-expressions to floats (in float64, never Python's unbounded ints).

    Returns a float for a constant sub-expression, else the (partly folded) node. Refuses huge
    literals, constant exponents beyond ``MAX_EXPONENT``, division by a constant zero and
    constants that overflow, become complex or are not finite.
    """
    if isinstance(node, ast.Constant):
        return _constant(node, node.value, "is")
    if isinstance(node, ast.Name):
        return _CONSTS.get(node.id, node)
    if isinstance(node, ast.UnaryOp):
        operand = _fold(node.operand)
        if isinstance(operand, float):
            return _UNOPS[type(node.op)](operand)  # type: ignore[return-value]
        return ast.UnaryOp(node.op, operand)
    if isinstance(node, ast.BinOp):
        left, right = _fold(node.left), _fold(node.right)
        if isinstance(node.op, ast.Pow) and isinstance(right, float) and abs(right) > MAX_EXPONENT:
            raise _FormulaError(
                node, f"has exponent {right:g}; expected |exponent| <= {MAX_EXPONENT:g}"
            )
        if isinstance(node.op, ast.Div) and isinstance(right, float) and right == 0:
            raise _FormulaError(node, "divides by zero")
        if isinstance(left, float) and isinstance(right, float):
            try:
                value = _BINOPS[type(node.op)](left, right)
            except ZeroDivisionError:
                raise _FormulaError(node, "divides by zero") from None
            except OverflowError:
                value = math.inf
            return _constant(node, value, "evaluates to")
        as_node = [ast.Constant(v) if isinstance(v, float) else v for v in (left, right)]
        return ast.BinOp(as_node[0], node.op, as_node[1])
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    arg = _fold(node.args[0])
    if isinstance(arg, float):
        value = float(_FUNCS[node.func.id](torch.tensor(arg, dtype=torch.float64)))
        return _constant(node, value, "evaluates to")
    return ast.Call(node.func, [arg], [])


def _compile_formula(expr: str) -> SurfaceFn:
    """Turn a formula in ``x`` and ``y`` into a torch function, allowing only arithmetic,
    numbers, ``pi``/``e`` and the functions in ``_FUNCS`` (no Python ``eval``).

    Evaluation is bounded: the formula's length, size and depth are capped and its constant
    parts are folded up front in float64 (see :func:`_fold`), so every failure is a ValueError
    naming the formula and the part at fault.
    """
    tree = _parse_formula(expr)
    allowed = ", ".join(sorted(_FUNCS))

    def check(node: ast.AST) -> None:
        if isinstance(node, ast.Expression):
            check(node.body)
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            check(node.left)
            check(node.right)
        elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNOPS:
            check(node.operand)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, int | float)) or (
            isinstance(node, ast.Name) and node.id in {"x", "y", *_CONSTS}
        ):
            return
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS
            and len(node.args) == 1
            and not node.keywords
        ):
            check(node.args[0])
        else:
            raise ValueError(
                f"{_shown(expr)}: {ast.unparse(node)!r} is not allowed; expected arithmetic "
                f"(+ - * / ** ^) on x, y, numbers, pi, e and the functions {allowed}"
            )

    check(tree)
    try:
        body = _fold(tree.body)
    except _FormulaError as err:
        raise ValueError(f"{_shown(expr)}: {err}") from None

    def evaluate(node: ast.AST, x: Tensor, y: Tensor) -> object:
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](evaluate(node.left, x, y), evaluate(node.right, x, y))
        if isinstance(node, ast.UnaryOp):
            return _UNOPS[type(node.op)](evaluate(node.operand, x, y))
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return {"x": x, "y": y}[node.id]
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        # folding leaves no constant argument, so arg is a tensor
        return _FUNCS[node.func.id](evaluate(node.args[0], x, y))  # type: ignore[arg-type]

    def fn(x: Tensor, y: Tensor) -> Tensor:
        out = body if isinstance(body, float) else evaluate(body, x, y)
        # a number only for a constant formula; anything else computed from x and y (a
        # tensor, or ravine.viz.tape's tracing value) goes on as it is
        if isinstance(out, int | float):
            out = torch.full_like(x, float(out))  # type: ignore[arg-type]
        return out + 0 * x + 0 * y  # broadcast formulas that use only one variable

    return fn


def from_expression(
    expr: str,
    *,
    name: str | None = None,
    window: Sequence[float] = (-5.0, 5.0, -5.0, 5.0),
    start: Sequence[float] | None = None,
    minima: Sequence[Sequence[float]] = (),
    log_levels: bool = False,
) -> Surface:
    """A surface from a formula in ``x`` and ``y``, e.g. ``"x**2 + 3*sin(y)"`` (``^`` means power).

    The minimum value is unknown, so loss plots show the raw value. Not registered; pass the result
    to :func:`register` to look it up by name. Formulas are bounded (``MAX_FORMULA_CHARS``,
    ``MAX_FORMULA_NODES``, ``MAX_FORMULA_DEPTH``; constant exponents up to ``MAX_EXPONENT``,
    constants up to ``MAX_CONSTANT``); anything else is a ValueError naming the part at fault.
    """
    fn = _compile_formula(expr)
    window_t = _window(window)
    if start is None:
        xmin, xmax, ymin, ymax = window_t
        start = (xmin + 0.8 * (xmax - xmin), ymin + 0.8 * (ymax - ymin))
    surface = Surface(
        name or expr,
        fn,
        window=window_t,
        start=_point(start, "start"),
        minima=tuple(_point(m, "minima") for m in minima),
        min_value=None,
        log_levels=log_levels,
        formula=expr,
        description="user formula",
    )
    with torch.no_grad():
        probe = surface.fn(
            torch.tensor([start[0]], dtype=torch.float64),
            torch.tensor([start[1]], dtype=torch.float64),
        )
    if probe.shape != (1,):
        raise ValueError(f"expression={expr!r} does not give one value per point")
    return surface


def custom(
    name: str,
    fn: SurfaceFn,
    *,
    window: Sequence[float],
    start: Sequence[float],
    minima: Sequence[Sequence[float]] = (),
    min_value: float | None = None,
    log_levels: bool = False,
    description: str = "user function",
) -> Surface:
    """Wrap a user's torch function ``fn(x, y)`` (elementwise) as a :class:`Surface`."""
    if not callable(fn):
        raise ValueError(f"fn={fn!r} is not callable; expected a function of (x, y) tensors")
    return Surface(
        name,
        fn,
        window=_window(window),
        start=_point(start, "start"),
        minima=tuple(_point(m, "minima") for m in minima),
        min_value=min_value,
        log_levels=log_levels,
        description=description,
    )


def _point(value: Sequence[float], arg: str) -> Point:
    if len(value) != 2:
        raise ValueError(f"{arg}={tuple(value)!r}: expected a point (x, y)")
    return float(value[0]), float(value[1])


def _window(value: Sequence[float]) -> Window:
    if len(value) != 4:
        raise ValueError(f"window={tuple(value)!r}: expected (xmin, xmax, ymin, ymax)")
    return float(value[0]), float(value[1]), float(value[2]), float(value[3])
