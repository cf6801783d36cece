"""The non-finite contract: under nonfinite="raise"/"skip" nothing non-finite is ever written.

Finite gradients can overflow in the update (float16's range ends at 65504: Adagrad's g*g for
g = 300; float32 and bfloat16 with |g| ~ 1e20). Every registered optimizer, on every impl, is
run twice from the same state on such a step: once with nonfinite="ignore" (no check: what
the update really writes) and once guarded. Where the unguarded update stays finite the
guarded one must write the same bits; where it does not, the guarded step must be refused
(NonFiniteUpdateError under "raise", a counted skip under "skip") with every parameter, state
tensor, step count and counter bit-identical to before. A normal step must work afterwards.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

import ravine
from ravine.optim import registry
from ravine.optim.base import (
    NonFiniteGradientError,
    NonFiniteUpdateError,
    overflow_limit,
)
from ravine.optim.compiled import FlatEngine
from ravine.optim.engines import EagerEngine

pytestmark = pytest.mark.usefixtures("one_thread")

# dtype -> the finite gradient of the overflowing step (negative: the update pushes p up).
HUGE = {
    "float16": (torch.float16, -300.0),
    "bfloat16": (torch.bfloat16, -1e20),
    "float32": (torch.float32, -1e20),
}
STEPWISE = [n for n in registry.names() if n != "lbfgs"]  # L-BFGS needs a closure: see below
# Compiling costs 5-30 s per (optimizer, dtype) here: the default run compiles two cases
# (the in-kernel guard falling back to the checked path, and float16's checked path), the slow
# target all of them.
COMPILED_DEFAULT = {("adam", "float32"), ("adagrad", "float16")}


def _cases() -> list[Any]:
    cases = []
    for name in STEPWISE:
        for impl in ("loop", "foreach", "compiled"):
            for dtype in HUGE:
                for policy in ("raise", "skip"):
                    marks = []
                    if impl == "compiled" and (name, dtype) not in COMPILED_DEFAULT:
                        marks.append(pytest.mark.slow)
                    cases.append(
                        pytest.param(
                            name,
                            impl,
                            dtype,
                            policy,
                            id=f"{name}-{impl}-{dtype}-{policy}",
                            marks=marks,
                        )
                    )
    return cases


def _params(dtype: torch.dtype) -> list[torch.nn.Parameter]:
    return [
        torch.nn.Parameter(torch.linspace(0.5, 1.5, 6, dtype=torch.float64).to(dtype)),
        torch.nn.Parameter(torch.full((2, 3), 2.0, dtype=dtype)),
    ]


def _set_grads(params: list[torch.Tensor], value: float) -> None:
    for p in params:
        if p.grad is None:
            p.grad = torch.full_like(p, value)
        else:  # in place: impl="compiled" keeps .grad as views of its flat buffer
            p.grad.fill_(value)


def _snapshot(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> Any:
    """The parameters and the state_dict, less the skip counter (checked on its own)."""
    state = copy.deepcopy(opt.state_dict())
    for extra in (state.get("ravine"), state.get("inner", {}).get("ravine")):
        if extra is not None:
            extra.pop("skipped_steps", None)
    return [p.detach().clone() for p in params], state


def _same(a: Any, b: Any) -> bool:
    """Equal to the bit (floats compared through their integer views)."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.is_floating_point():
            ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
            a, b = a.contiguous().view(ints), b.contiguous().view(ints)
        return bool(torch.equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    return a == b


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


def _all_finite(snapshot: Any) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in _tensors(snapshot) if t.is_floating_point())


def _skipped(opt: torch.optim.Optimizer) -> int:
    inner = getattr(opt, "optimizer", opt)
    return inner.skipped_steps


def _run(name: str, impl: str, dtype: torch.dtype, policy: str, huge: float) -> Any:
    """One normal step, then the overflowing one; returns (before, after, error, skipped)."""
    params = _params(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. DelayTolerantAdagrad's compiled fallback note
        opt = registry.create(name, params, impl=impl, nonfinite=policy)
    _set_grads(params, 0.1)
    opt.step()
    skipped = _skipped(opt)
    before = _snapshot(opt, params)
    _set_grads(params, huge)
    error = None
    try:
        opt.step()
    except NonFiniteGradientError as e:
        error = e
    after = _snapshot(opt, params)
    return opt, params, before, after, error, _skipped(opt) - skipped


@pytest.mark.parametrize(("name", "impl", "dtype", "policy"), _cases())
def test_overflowing_update_is_refused_or_identical(
    name: str, impl: str, dtype: str, policy: str
) -> None:
    torch_dtype, huge = HUGE[dtype]
    _, _, _, unguarded, _, _ = _run(name, impl, torch_dtype, "ignore", huge)
    overflows = not _all_finite(unguarded)
    opt, params, before, after, error, skipped = _run(name, impl, torch_dtype, policy, huge)

    assert _all_finite(after), "non-finite values written under nonfinite=" + policy
    if overflows:
        if policy == "raise":
            assert isinstance(error, NonFiniteUpdateError)
            assert "parameter group 0, parameter" in str(error) and "at step 2" in str(error)
        else:
            assert error is None and skipped == 1
        assert _same(after[0], before[0]) and _same(after[1], before[1])
    else:  # the guard changes nothing about a finite step
        assert error is None and skipped == 0
        assert _same(after[0], unguarded[0])

    skipped = _skipped(opt)
    _set_grads(params, 0.1)  # and training goes on
    opt.step()
    assert _skipped(opt) == skipped and _all_finite(_snapshot(opt, params))


@pytest.mark.parametrize("impl", ["loop", "foreach", "compiled"])
@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_refused_first_step_leaves_nothing(impl: str, policy: str) -> None:
    """Even the lazily created state of a first step is undone (impl="compiled" builds its
    flat buffers, state included, before the step: there the state is zeros at step 0)."""
    params = _params(torch.float16)
    opt = ravine.Adagrad(params, impl=impl, nonfinite=policy)
    before = [p.detach().clone() for p in params]
    _set_grads(params, 300.0)  # g*g = 90000 > 65504
    if policy == "raise":
        with pytest.raises(NonFiniteUpdateError, match=r"group 0, parameter 0 .* at step 1"):
            opt.step()
    else:
        opt.step()
        assert opt.skipped_steps == 1
    assert _same([p.detach() for p in params], before)
    for state in opt.state.values():
        assert int(state["step"]) == 0 and not state["sum"].any()
    if impl != "compiled":
        assert not opt.state


@pytest.mark.parametrize("impl", ["loop", "foreach", "compiled"])
@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_a_scalar_too_large_for_the_dtype_is_an_overflow_too(impl: str, policy: str) -> None:
    """weight_decay=1e308 is a finite float, but not a float32: torch refuses the scalar with a
    RuntimeError. It is an overflowing update like any other, refused by the policy."""
    params = _params(torch.float32)
    opt = ravine.SGD(params, lr=1e30, weight_decay=1e308, impl=impl, nonfinite=policy)
    before = [p.detach().clone() for p in params]
    _set_grads(params, 1.0)
    if policy == "raise":
        with pytest.raises(NonFiniteUpdateError):
            opt.step()
    else:
        opt.step()
        assert opt.skipped_steps == 1
    assert _same([p.detach() for p in params], before)


@pytest.mark.parametrize("impl", ["loop", "foreach", "compiled"])
def test_refusal_is_atomic_across_groups(impl: str) -> None:
    """A float32 group that could step alone is not written when a float16 group overflows."""
    wide = torch.nn.Parameter(torch.ones(5))
    narrow = torch.nn.Parameter(torch.ones(5, dtype=torch.float16))
    opt = ravine.Adagrad([{"params": [wide]}, {"params": [narrow]}], impl=impl)
    _set_grads([wide, narrow], 0.5)
    opt.step()
    before = _snapshot(opt, [wide, narrow])
    wide.grad.fill_(0.5)
    narrow.grad.fill_(300.0)
    with pytest.raises(NonFiniteUpdateError, match="parameter group 1, parameter 0"):
        opt.step()
    after = _snapshot(opt, [wide, narrow])
    assert _same(after, before)


@pytest.mark.parametrize("impl", ["foreach", "compiled"])
def test_refused_step_does_not_advance_gradient_noise(impl: str) -> None:
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.float16))
    opt = ravine.Adagrad([p], impl=impl, nonfinite="skip", grad_noise=1e-3)
    _set_grads([p], 300.0)
    noise = opt.grad_transforms[0]
    t, generator = noise.t, noise.state_dict()["generators"]
    opt.step()
    assert opt.skipped_steps == 1 and noise.t == t
    assert _same(noise.state_dict()["generators"], generator)


@pytest.mark.parametrize("impl", ["loop", "foreach", "compiled"])
def test_ignore_does_not_check(impl: str) -> None:
    """nonfinite="ignore" keeps the unchecked behaviour: the overflow is written."""
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.float16))
    opt = ravine.Adagrad([p], impl=impl, nonfinite="ignore")
    _set_grads([p], 300.0)
    opt.step()
    assert not bool(torch.isfinite(opt.state[p]["sum"]).all())


@pytest.mark.parametrize(
    ("impl", "dtype"),
    [
        pytest.param(impl, dtype, id=f"{impl}-{str(dtype)[6:]}", marks=marks)
        for impl in ("loop", "foreach", "compiled")
        for dtype in (torch.float32, torch.bfloat16)
        # compiling another kernel: 20 s
        for marks in [[pytest.mark.slow] if (impl, dtype) == ("compiled", torch.bfloat16) else []]
    ],
)
def test_ordinary_steps_take_the_unchecked_path(
    impl: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default path stays one pass: below the overflow limit nothing runs checked."""

    def refuse(*args: Any) -> None:
        raise AssertionError("an ordinary step ran the checked (copying) path")

    monkeypatch.setattr(EagerEngine, "apply_checked", refuse)
    monkeypatch.setattr(FlatEngine, "_checked", refuse)
    params = _params(dtype)
    opt = ravine.Adam(params, impl=impl, lr=0.1, weight_decay=1e-2)
    for value in (1e3, -1e6, 1e9):
        _set_grads(params, value)
        opt.step()
    assert _all_finite(_snapshot(opt, params))


@pytest.mark.parametrize(
    ("dtype", "limit"),
    [
        (torch.float16, -math.inf),
        (torch.bfloat16, math.sqrt(torch.finfo(torch.bfloat16).max) / 1e3),
        (torch.float32, math.sqrt(torch.finfo(torch.float32).max) / 1e3),
        (torch.float64, math.sqrt(torch.finfo(torch.float64).max) / 1e3),
    ],
    ids=str,
)
def test_overflow_limit(dtype: torch.dtype, limit: float) -> None:
    assert overflow_limit(dtype) == limit
    if limit > 0:  # a million squares at the limit still sum to a finite number
        assert limit**2 * 1e6 <= torch.finfo(dtype).max


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("impl", ["loop", "foreach"])
def test_lbfgs_step_into_nonfinite_region_is_rolled_back(dtype: torch.dtype, impl: str) -> None:
    """L-BFGS evaluates the closure several times per step: a later evaluation with NaN
    gradients (here sqrt of a negative number after too long a step) must not leave the
    parameters moved or the L-BFGS state changed (before: NaN parameters, no error)."""
    p = torch.nn.Parameter(torch.ones(4, dtype=dtype))
    opt = ravine.create("lbfgs", [p], lr=1.0, impl=impl)

    def closure(loss_of: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            opt.zero_grad()
            loss = loss_of(p)
            loss.backward()
            return loss

        return run

    def quadratic(x: torch.Tensor) -> torch.Tensor:
        return ((x - 0.5) ** 2).sum()

    opt.step(closure(quadratic))  # history and state to keep
    before = _snapshot(opt, [p])
    opt.param_groups[0]["lr"] = 10.0
    with pytest.raises(NonFiniteUpdateError, match=r"parameter group 0, parameter 0 .* step 2"):
        opt.step(closure(lambda x: x.sqrt().sum()))
    opt.param_groups[0]["lr"] = 1.0
    assert _same(_snapshot(opt, [p]), before)
    opt.step(closure(quadratic))
    assert bool(torch.isfinite(p).all())


@pytest.mark.parametrize("impl", ["loop", "foreach"])
def test_lookahead_synchronisation_of_float16_stays_finite(impl: str) -> None:
    """The slow weights move by lerp between finite values; in float16 the difference of fast
    and slow weights (here 80000) exceeds the range, and lerp must not form it in float16.
    (float32/bfloat16 weights beyond finfo.max / 2 of opposite signs are the documented
    limit: lerp computes in float32 there.)"""
    p = torch.nn.Parameter(torch.full((4,), -40000.0, dtype=torch.float16))
    opt = ravine.Lookahead(ravine.SGD([p], lr=1.0, impl=impl), k=2, alpha=0.5)
    for _ in range(2):  # the fast weights go to 0, then +40000: finite, so both steps go in
        _set_grads([p], -40000.0)
        opt.step()
    assert opt.optimizer.skipped_steps == 0 and opt.lookahead_steps == 2
    assert bool(torch.isfinite(p).all()) and bool(torch.isfinite(opt.state[p]["slow_param"]).all())
    assert p.tolist() == [0.0] * 4
