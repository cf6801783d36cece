"""The non-finite contract: under nonfinite="raise"/"skip" nothing non-finite is ever written.

Finite gradients can overflow in the update (float16's range ends at 65504: Adagrad's g*g for
g = 300; float32 and bfloat16 with |g| ~ 1e20). Every registered optimizer, on every impl, is
run twice from the same state on such a step: once with nonfinite="ignore" (no check: what
the update really writes) and once guarded. Where the unguarded update stays finite the
guarded one must write the same bits; where it does not, the guarded step must be refused
(NonFiniteUpdateError under "raise", a counted skip under "skip") with every parameter, state
tensor, step count and counter bit-identical to before. A normal step must work afterwards.

Each case runs on the host path (CPU: the verdict read at once) and on the CUDA path, forced on
CPU with ``ravine.optim.guard.DEFER_ON_CPU`` (the verdict decided on the device and read at the
next step or ``flush_guard``), where no tensor may be read back during a step.
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
from optim_specs import SPECS_BY_NAME
from ravine.optim import guard, registry
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
MODES = ("host", "device")  # the verdict read at once (CPU), or on the device (CUDA's path)
QUICK_HOST_ONLY = {("foreach", "raise"), ("loop", "skip")}


def _cases() -> list[Any]:
    cases = []
    for name in STEPWISE:
        for impl in SPECS_BY_NAME[name].impls:  # the impls the optimizer takes (l2l: no compiled)
            for dtype in HUGE:
                for policy in ("raise", "skip"):
                    for mode in MODES:
                        marks = []
                        if impl == "compiled" and (name, dtype) not in COMPILED_DEFAULT:
                            marks.append(pytest.mark.slow)
                        # the device path's quick cases: foreach skipping, loop raising
                        if mode == "device" and (impl, policy) in QUICK_HOST_ONLY:
                            marks.append(pytest.mark.slow)
                        cases.append(
                            pytest.param(
                                name,
                                impl,
                                dtype,
                                policy,
                                mode,
                                id=f"{name}-{impl}-{dtype}-{policy}-{mode}",
                                marks=marks,
                            )
                        )
    return cases


@pytest.fixture
def on_device(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """on_device("device") runs the CUDA path of the guard on CPU (for the rest of the test)."""

    def switch(mode: str) -> None:
        monkeypatch.setattr(guard, "DEFER_ON_CPU", mode == "device")

    return switch


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
    """One normal step, then the overflowing one; returns (before, after, error, skipped).
    The guard's verdict is read before ``after`` (``flush_guard``: a no-op on the host path)."""
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
        opt.flush_guard()
    except NonFiniteGradientError as e:
        error = e
    after = _snapshot(opt, params)
    return opt, params, before, after, error, _skipped(opt) - skipped


@pytest.mark.parametrize(("name", "impl", "dtype", "policy", "mode"), _cases())
def test_overflowing_update_is_refused_or_identical(
    name: str, impl: str, dtype: str, policy: str, mode: str, on_device: Any
) -> None:
    torch_dtype, huge = HUGE[dtype]
    _, _, _, unguarded, _, _ = _run(name, impl, torch_dtype, "ignore", huge)
    overflows = not _all_finite(unguarded)
    on_device(mode)
    opt, params, before, after, error, skipped = _run(name, impl, torch_dtype, policy, huge)
    flat = impl == "compiled"
    if mode == "device" and flat and dtype != "float16":
        # impl="compiled" on CUDA refuses a gradient above the overflow limit (1e20 is)
        # instead of running it checked: the host learns of it too late to run it then.
        overflows = True

    assert _all_finite(after), "non-finite values written under nonfinite=" + policy
    if overflows:
        if policy == "raise":
            assert isinstance(error, NonFiniteUpdateError)
            where = "parameter group 0" if flat and mode == "device" else "group 0, parameter"
            assert where in str(error) and "at step 2" in str(error)
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


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", ["loop", "foreach", "compiled"])
@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_refused_first_step_leaves_nothing(
    impl: str, policy: str, mode: str, on_device: Any
) -> None:
    """Even the lazily created state of a first step is undone (impl="compiled" builds its
    flat buffers, state included, before the step: there the state is zeros at step 0)."""
    on_device(mode)
    params = _params(torch.float16)
    opt = ravine.Adagrad(params, impl=impl, nonfinite=policy)
    before = [p.detach().clone() for p in params]
    _set_grads(params, 300.0)  # g*g = 90000 > 65504
    where = "group 0 .*" if impl == "compiled" and mode == "device" else "group 0, parameter 0 .*"
    if policy == "raise":
        with pytest.raises(NonFiniteUpdateError, match=where + "at step 1"):
            opt.step()
            opt.flush_guard()
    else:
        opt.step()
        opt.flush_guard()
        assert opt.skipped_steps == 1
    assert _same([p.detach() for p in params], before)
    for state in opt.state.values():
        assert int(state["step"]) == 0 and not state["sum"].any()
    if impl != "compiled":
        assert not opt.state


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", ["loop", "foreach", "compiled"])
@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_a_scalar_too_large_for_the_dtype_is_an_overflow_too(
    impl: str, policy: str, mode: str, on_device: Any
) -> None:
    """weight_decay=1e308 is a finite float, but not a float32: torch refuses the scalar with a
    RuntimeError. It is an overflowing update like any other, refused by the policy."""
    on_device(mode)
    params = _params(torch.float32)
    opt = ravine.SGD(params, lr=1e30, weight_decay=1e308, impl=impl, nonfinite=policy)
    before = [p.detach().clone() for p in params]
    _set_grads(params, 1.0)
    if policy == "raise":
        with pytest.raises(NonFiniteUpdateError):
            opt.step()
            opt.flush_guard()
    else:
        opt.step()
        opt.flush_guard()
        assert opt.skipped_steps == 1
    assert _same([p.detach() for p in params], before)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", ["loop", "foreach", "compiled"])
def test_refusal_is_atomic_across_groups(impl: str, mode: str, on_device: Any) -> None:
    """A float32 group that could step alone is not written when a float16 group overflows."""
    on_device(mode)
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
        opt.flush_guard()
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


# -- the CUDA path: no host read per step -------------------------------------------------------
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call of a Tensor method that reads a value back to the host, by name (on CUDA
    each is a sync: the host waits for the device to finish all work queued so far)."""
    calls: list[str] = []
    for name in HOST_READS:
        method = getattr(torch.Tensor, name)

        def counted(*args: Any, _name: str = name, _method: Any = method, **kwargs: Any) -> Any:
            calls.append(_name)
            return _method(*args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def _model_steps(
    opt: Any, model: torch.nn.Module, steps: int, nan_at: int | None, reads: list[str]
) -> list[int]:
    """Training steps (backward outside the count); the host reads counted per step()."""
    x = torch.linspace(-1, 1, 24, dtype=torch.float64).reshape(8, 3).to(model.weight.dtype)
    per_step = []
    for i in range(steps):
        opt.zero_grad()
        model(x).float().pow(2).mean().backward()
        if i == nan_at:
            with torch.no_grad():
                model.weight.grad[0, 1] = math.nan
        start = len(reads)
        opt.step()
        per_step.append(len(reads) - start)
    return per_step


@pytest.mark.parametrize(
    ("impl", "dtype"),
    [
        ("loop", torch.float32),
        ("foreach", torch.float32),
        ("foreach", torch.float16),
        ("compiled", torch.float32),
        pytest.param("compiled", torch.float16, marks=pytest.mark.slow),  # another kernel
    ],
    ids=str,
)
def test_the_cuda_path_reads_nothing_back_per_step(
    impl: str, dtype: torch.dtype, on_device: Any, host_reads: list[str]
) -> None:
    """Counted over training steps with a NaN gradient among them: no item/bool/float/tolist
    in any step, and the skip is counted once the verdict is read (by the next step)."""
    on_device("device")
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).to(dtype)
    opt = ravine.SGD(model.parameters(), lr=0.1, momentum=0.9, impl=impl, nonfinite="skip")
    per_step = _model_steps(opt, model, 6, nan_at=3, reads=host_reads)
    assert per_step == [0] * 6, host_reads
    assert opt.skipped_steps == 1  # read by step 5
    assert {int(s["step"]) for s in opt.state_dict()["state"].values()} == {5}


@pytest.mark.parametrize("impl", ["loop", "foreach", "compiled"])
def test_the_cuda_path_takes_the_same_steps(impl: str, on_device: Any) -> None:
    """Skipping a NaN step on the device leaves the run bit-identical to the host path's."""
    runs = []
    for mode in MODES:
        on_device(mode)
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2).to(torch.float64)
        opt = ravine.Adam(model.parameters(), lr=0.1, impl=impl, nonfinite="skip")
        _model_steps(opt, model, 6, nan_at=2, reads=[])
        opt.flush_guard()
        runs.append((_snapshot(opt, list(model.parameters())), opt.skipped_steps))
    assert runs[0][1] == runs[1][1] == 1
    assert _same(runs[0][0], runs[1][0])


@pytest.mark.parametrize("impl", ["loop", "foreach", "compiled"])
def test_on_cuda_a_refused_step_raises_at_the_next_call(impl: str, on_device: Any) -> None:
    """The NaN step writes nothing; its error comes from the next step(), which takes no step
    either, naming the refused step; state_dict() then holds its step count as before it."""
    on_device("device")
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).to(torch.float64)
    opt = ravine.Adam(model.parameters(), lr=0.1, impl=impl)
    _model_steps(opt, model, 2, nan_at=None, reads=[])
    before = _snapshot(opt, list(model.parameters()))
    _model_steps(opt, model, 1, nan_at=0, reads=[])  # returns: the verdict is on the device
    where = "group 0" if impl == "compiled" else "group 0, parameter 0"
    with pytest.raises(NonFiniteGradientError, match=f"{where} .*at step 3.*reported late"):
        _model_steps(opt, model, 1, nan_at=None, reads=[])
    assert _same(_snapshot(opt, list(model.parameters())), before)
    _model_steps(opt, model, 1, nan_at=None, reads=[])  # and training goes on
    assert {int(s["step"]) for s in opt.state_dict()["state"].values()} == {3}


def test_on_cuda_state_dict_and_flush_read_the_verdict(on_device: Any) -> None:
    on_device("device")
    model = torch.nn.Linear(3, 2)
    opt = ravine.Adam(model.parameters(), nonfinite="skip")
    _model_steps(opt, model, 1, nan_at=0, reads=[])
    assert opt.skipped_steps == 0  # not read yet
    assert opt.state_dict()["ravine"]["skipped_steps"] == 1 and not opt.state
    opt = ravine.Adam(model.parameters())
    _model_steps(opt, model, 1, nan_at=0, reads=[])
    with pytest.raises(NonFiniteGradientError, match="at step 1"):
        opt.flush_guard()
    opt.flush_guard()  # read once
    fresh = ravine.Adam(model.parameters())
    _model_steps(opt, model, 1, nan_at=0, reads=[])
    opt.load_state_dict(fresh.state_dict())  # the loaded state replaces the pending step
    opt.flush_guard()


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_lookahead_takes_back_a_step_refused_late(policy: str, on_device: Any) -> None:
    """On the device path the inner refusal is read at the next step: Lookahead's count of
    steps ends as on the host path."""
    counts = []
    for mode in MODES:
        on_device(mode)
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        opt = ravine.Lookahead(ravine.SGD(model.parameters(), lr=0.1, nonfinite=policy), k=3)
        for i in range(5):
            try:
                _model_steps(opt, model, 1, nan_at=0 if i == 1 else None, reads=[])
            except NonFiniteGradientError:
                assert policy == "raise"
        opt.flush_guard()
        counts.append((opt.lookahead_steps, opt.optimizer.skipped_steps))
    if policy == "skip":
        assert counts == [(4, 1), (4, 1)]
    else:  # the late error comes from the next step(), which is not taken either
        assert counts == [(4, 0), (3, 0)]


@pytest.mark.slow  # compiles the training step: ~30 s
def test_the_cuda_path_inside_a_compiled_training_step(on_device: Any) -> None:
    """opt.step() traced by dynamo: the deferred guard runs outside the graph (a graph break),
    and a NaN step is skipped as in eager mode."""
    on_device("device")
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = ravine.Adam(model.parameters(), lr=0.1, nonfinite="skip")

    @torch.compile
    def step() -> None:
        opt.step()

    x = torch.linspace(-1, 1, 24).reshape(8, 3)
    for i in range(5):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        if i == 2:
            with torch.no_grad():
                model.weight.grad[0, 0] = math.nan
        step()
    opt.flush_guard()
    assert opt.skipped_steps == 1
    assert {int(s["step"]) for s in opt.state_dict()["state"].values()} == {4}
