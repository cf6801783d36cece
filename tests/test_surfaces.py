"""ravine.surfaces: known minima are stationary, lookups and user surfaces behave."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import hessian

from ravine import surfaces

ALL = surfaces.names()


def test_builtins_are_all_there() -> None:
    assert set(ALL) >= {
        "beale",
        "rosenbrock",
        "quadratic",
        "saddle",
        "monkey-saddle",
        "himmelblau",
        "rastrigin",
        "booth",
    }


@pytest.mark.parametrize("name", ALL)
def test_stationary_points_have_vanishing_gradient(name: str) -> None:
    s = surfaces.get(name)
    assert s.stationary_points, f"{name} lists no stationary point"
    for x, y in s.stationary_points:
        gx, gy = s.gradient(x, y)
        assert math.hypot(gx, gy) < 1e-9, (name, (x, y), (gx, gy))


@pytest.mark.parametrize("name", [n for n in ALL if surfaces.get(n).minima])
def test_minima_are_minima(name: str) -> None:
    """Value equals min_value, the Hessian is positive definite, and no nearby point is lower."""
    s = surfaces.get(name)
    for x, y in s.minima:
        p = torch.tensor([x, y], dtype=torch.float64)
        assert s.value(x, y) == pytest.approx(s.min_value, abs=1e-12)
        eig = torch.linalg.eigvalsh(hessian(s.loss, p))
        assert bool((eig > 0).all()), (name, (x, y), eig)
        ring = torch.linspace(0, 2 * math.pi, 16, dtype=torch.float64)
        near = s(x + 1e-3 * torch.cos(ring), y + 1e-3 * torch.sin(ring))
        assert bool((near > s.value(x, y)).all())


@pytest.mark.parametrize("name", ["saddle", "monkey-saddle"])
def test_saddles_have_no_minimum(name: str) -> None:
    s = surfaces.get(name)
    assert s.minima == () and s.min_value is None
    # Lower values exist arbitrarily close to the saddle point: it is no minimum.
    assert s.value(0.0, 0.1) < s.value(0.0, 0.0) or s.value(-0.1, 0.0) < s.value(0.0, 0.0)


@pytest.mark.parametrize("name", ALL)
def test_autograd_gradient_matches_finite_differences(name: str) -> None:
    s = surfaces.get(name)
    x, y = s.start
    h = 1e-6
    fd = (
        (s.value(x + h, y) - s.value(x - h, y)) / (2 * h),
        (s.value(x, y + h) - s.value(x, y - h)) / (2 * h),
    )
    g = s.gradient(x, y)
    for a, b in zip(g, fd):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_elementwise_on_grids_and_start_inside_window(name: str) -> None:
    s = surfaces.get(name)
    X, Y, Z = s.grid(17)
    assert X.shape == Y.shape == Z.shape == (17, 17)
    assert float(Z[3, 5]) == pytest.approx(s.value(float(X[3, 5]), float(Y[3, 5])), rel=1e-12)
    xmin, xmax, ymin, ymax = s.window
    assert xmin <= s.start[0] <= xmax and ymin <= s.start[1] <= ymax
    for mx, my in s.minima:
        assert xmin <= mx <= xmax and ymin <= my <= ymax


@pytest.mark.parametrize(
    ("query", "expected"),
    [("Beale", "beale"), ("monkey_saddle", "monkey-saddle"), (" QUADRATIC ", "quadratic")],
)
def test_lookup_is_forgiving_about_case_and_separators(query: str, expected: str) -> None:
    assert surfaces.get(query).name == expected


def test_unknown_surface_suggests_close_names() -> None:
    with pytest.raises(ValueError, match=r"surface='bael'.*did you mean 'beale'"):
        surfaces.get("bael")


def test_custom_surface_registers_and_validates() -> None:
    s = surfaces.custom(
        "test-tilted-bowl",
        lambda x, y: (x - 1) ** 2 + 2 * (y + 2) ** 2,
        window=(-4, 4, -4, 4),
        start=(3, 3),
        minima=[(1, -2)],
        min_value=0.0,
    )
    surfaces.register(s)
    try:
        assert surfaces.get("test-tilted-bowl") is s
        assert s.gradient(1.0, -2.0) == (0.0, 0.0)
        with pytest.raises(ValueError, match="already registered"):
            surfaces.register(s)
    finally:
        surfaces._REGISTRY.pop("test-tilted-bowl")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": (1, 0, 0, 1), "start": (0, 0)}, r"window=\(1.0, 0.0, 0.0, 1.0\)"),
        ({"window": (0, 1, 0), "start": (0, 0)}, r"window=\(0, 1, 0\): expected"),
        ({"window": (0, 1, 0, 1), "start": (0,)}, r"start=\(0,\): expected a point"),
    ],
)
def test_custom_surface_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        surfaces.custom("bad", lambda x, y: x + y, **kwargs)


@pytest.mark.parametrize(
    ("expr", "point", "value"),
    [
        ("x^2 + 3*sin(y)", (2.0, math.pi / 2), 7.0),
        ("x**2 - y**2", (3.0, 1.0), 8.0),
        ("exp(-x) + abs(y)", (0.0, -2.0), 3.0),
        ("2*pi", (5.0, 5.0), 2 * math.pi),
        ("y", (1.0, -4.0), -4.0),
    ],
)
def test_formula_surfaces(expr: str, point: tuple[float, float], value: float) -> None:
    s = surfaces.from_expression(expr)
    assert s.value(*point) == pytest.approx(value)
    assert s.grid(5)[2].shape == (5, 5)
    assert surfaces.get(f"expr:{expr}").value(*point) == pytest.approx(value)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "x.real",
        "(lambda: 1)()",
        "x if y else 1",
        "foo(x)",
        "x +",
    ],
)
def test_formula_rejects_anything_but_arithmetic(expr: str) -> None:
    with pytest.raises(ValueError, match="expression="):
        surfaces.from_expression(expr)


# Each of these hung (9**9**9 as a Python int), crashed with a bare traceback (ZeroDivisionError,
# OverflowError, a RuntimeError for a complex constant, RecursionError) or silently made a
# surface that is inf or 0 everywhere; each must be a ValueError naming formula and part.
HOSTILE_FORMULAS = [
    ("tower-of-powers", "9**9**9+x", r"'9 \*\* 9 \*\* 9' has exponent 3.8742e\+08"),
    ("tower-caret", "x^9^9^9", "has exponent"),
    ("huge-exponent-on-x", "x**10**10", r"expected \|exponent\| <= 100"),
    ("negative-huge-exponent", "2**-2000+x", "has exponent -2000"),
    ("int-overflow", "10**400", "'10 \\*\\* 400' has exponent 400"),
    ("float-overflow", "10.0**99*1e99*x", "evaluates to 1e\\+198"),
    ("one-over-zero", "1/0", "'1 / 0' divides by zero"),
    ("x-over-zero", "x/0", "'x / 0' divides by zero"),
    ("over-folded-zero", "y/(2-2)", r"'y / \(2 - 2\)' divides by zero"),
    ("zero-to-negative", "0**-1+x", "divides by zero"),
    ("huge-float-literal", "1e400+x", "is inf"),
    ("huge-int-literal", "9" * 500 + "*x", "is a 500-digit number"),
    ("big-literal", "1e200*x", "magnitude <= 1e\\+100"),
    ("complex-constant", "(-1)**0.5+x", "complex number"),
    ("log-of-zero", "log(0)+x", "'log\\(0\\)' evaluates to -inf"),
    ("sqrt-of-negative", "sqrt(-1)*y", "evaluates to nan"),
    ("exp-overflow", "exp(1000)*x", "evaluates to inf"),
    ("deep-unary", "-" * 900 + "x", "too complex \\(nested 51 deep\\)"),
    ("deep-parentheses", "(" * 300 + "x" + ")" * 300, "too many nested parentheses"),
    # 20 sums of 20 products: 799 nodes, only 40 deep
    (
        "many-nodes",
        "+".join(["(" + "*".join("x" * 20) + ")"] * 20),
        r"too complex \(more than 400 nodes",
    ),
    ("too-long", "x+" * 1000 + "x", "is 2001 characters long; expected at most 1000"),
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("expr", "message"),
    [(e, m) for _, e, m in HOSTILE_FORMULAS],
    ids=[i for i, _, _ in HOSTILE_FORMULAS],
)
def test_hostile_formulas_fail_fast_with_a_clear_error(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        surfaces.get(f"expr:{expr}")
    assert str(err.value).startswith("expression='")


@pytest.mark.parametrize(
    ("expr", "point", "value"),
    [
        ("2**0.5*x", (2.0, 0.0), 2 * math.sqrt(2)),
        ("x**-2 + y", (2.0, 1.0), 1.25),
        ("10**x + 0*y", (2.0, 0.0), 100.0),
        ("x**100", (1.5, 0.0), 1.5**100),
        ("x/(1+1) - cos(pi)*y", (3.0, 2.0), 3.5),
        ("3", (1.0, 1.0), 3.0),
    ],
    ids=[
        "constant-root",
        "negative-exponent",
        "power-of-x",
        "exponent-at-cap",
        "folded",
        "constant",
    ],
)
def test_bounded_formulas_still_evaluate(
    expr: str, point: tuple[float, float], value: float
) -> None:
    s = surfaces.from_expression(expr)
    assert s.value(*point) == pytest.approx(value, rel=1e-12)
    assert s.gradient(*point) == pytest.approx(surfaces.from_expression(expr).gradient(*point))
