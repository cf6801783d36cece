"""impl="compiled": the same rules through torch.compile over flat buffers.

Every registered optimizer must agree with impl="foreach" and impl="loop" to 1e-6 (relative to
the tensor's scale) in float32 and 1e-12 in float64; a learning-rate schedule must not recompile;
checkpoints move between impls; and whatever cannot be compiled still runs, with a warning.

Compiling is slow, so the fast tests use one or two settings per optimizer and small tensors; a
kernel compiled for one test is reused by the others (the cache is per process). Every setting of
every spec runs under ``-m slow``.

Every test runs twice: with the direct call of the compiled graph (the default) and with it
switched off (``compiled.DIRECT_CALL = False``, as ``RAVINE_COMPILED_DIRECT=0`` sets it), where
each step goes through dynamo and its guards; the kernels are shared, so the second mode costs
no compile.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
import torch
from torch import Tensor

import ravine.optim as O
from optim_specs import SPECS, SPECS_BY_NAME
from ravine.optim import compiled
from ravine.optim.base import NonFiniteGradientError

SHAPES = [(4, 3), (5,), (2, 3, 2), (1,)]


@pytest.fixture(autouse=True, params=[True, False], ids=["direct-call", "through-dynamo"])
def direct_call(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(compiled, "DIRECT_CALL", request.param)
    return request.param


STEPS = 6
TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


def _settings(name: str) -> list[dict[str, Any]]:
    """Every setting the spec of ``name`` names (configs first: they exercise all state)."""
    spec = SPECS_BY_NAME.get(name)
    if spec is None:  # a rule without a spec yet still gets its defaults compiled and checked
        return [{}]
    out: list[dict[str, Any]] = []
    for hp in [
        *spec.configs,
        *(c[0] for c in spec.torch_configs),
        *(c[0] for c in spec.reference_configs),
    ]:
        if hp not in out:
            out.append(hp)
    return out


# Declared by the specs (tests/test_optim_registry.py checks every registered name has one).
COMPILED_NAMES = [s.name for s in SPECS if "compiled" in s.impls]


def _params(dtype: torch.dtype) -> list[Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in SHAPES]


def _loss(params: list[Tensor]) -> Tensor:
    # Not a quadratic: the gradients change direction, so sign-based and max-based rules branch.
    return sum(((p - 0.5) ** 2).sum() + 0.3 * torch.sin(3 * p).sum() for p in params)


def _run(
    name: str, hp: dict[str, Any], impl: str, dtype: torch.dtype, steps: int = STEPS
) -> tuple[list[Tensor], torch.optim.Optimizer]:
    params = _params(dtype)
    opt = O.create(name, params, impl=impl, **hp)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = _loss(params)
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return params, opt


def _assert_close(actual: Tensor, expected: Tensor, dtype: torch.dtype, what: str) -> None:
    tol = TOL[dtype]
    scale = max(expected.abs().max().item(), 1e-30)
    err = (actual - expected).abs().max().item()
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} * scale {scale:.3g}"


def _compare(name: str, hp: dict[str, Any], dtype: torch.dtype, against: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a compile fallback fails the test
        got, opt_c = _run(name, hp, "compiled", dtype)
    want, opt_r = _run(name, hp, against, dtype)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == dtype
        _assert_close(a.detach(), b.detach(), dtype, f"{name} {hp} param {i}")
        sa, sb = opt_c.state[a], opt_r.state[b]
        assert sa.keys() == sb.keys()
        for key, value in sb.items():
            if isinstance(value, Tensor):
                _assert_close(sa[key], value, dtype, f"{name} {hp} state {key!r} of param {i}")
            else:
                assert sa[key] == value, f"{name} {hp} state {key!r}"


@pytest.mark.parametrize("name", COMPILED_NAMES)
def test_compiled_matches_foreach_float32(name: str) -> None:
    _compare(name, _settings(name)[0], torch.float32, "foreach")


@pytest.mark.parametrize("name", COMPILED_NAMES)
def test_compiled_matches_loop_float64(name: str) -> None:
    _compare(name, _settings(name)[0], torch.float64, "loop")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", COMPILED_NAMES)
def test_compiled_matches_foreach_every_setting(name: str, dtype: torch.dtype) -> None:
    for hp in _settings(name):
        _compare(name, hp, dtype, "foreach")


# -- structural options and hyperparameter flavours, on Adam (kernels shared with the above) -------
@pytest.mark.parametrize(
    "hp",
    [
        {"lr": 0.01, "weight_decay": 0.1, "maximize": True},
        {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
        {"lr": torch.tensor(0.01), "betas": (0.8, 0.99)},
    ],
    ids=["l2-maximize", "decoupled", "tensor-lr"],
)
def test_compiled_options_match_foreach(hp: dict[str, Any]) -> None:
    _compare("adam", hp, torch.float32, "foreach")


def test_params_grads_and_state_are_views_into_flat_buffers() -> None:
    params, opt = _run("adam", {"lr": 0.01}, "compiled", torch.float32, steps=2)
    (fg,) = opt.engine.groups
    base = fg.p.untyped_storage().data_ptr()
    for p in params:
        assert p.untyped_storage().data_ptr() == base
        assert p.grad.untyped_storage().data_ptr() == fg.g.untyped_storage().data_ptr()
        assert opt.state[p]["m"].untyped_storage().data_ptr() == fg.state[0].data_ptr()
        assert opt.state[p]["step"] == 2
    assert opt.engine.rebuilds == 1 and opt.engine.resyncs == 0
    grads = [p.grad for p in params]
    opt.zero_grad()  # in place: the views stay
    assert all(p.grad is g for p, g in zip(params, grads))
    assert float(fg.g.abs().sum()) == 0.0
    # One step number per flat group (a view of it per parameter, so that a replaced entry is
    # seen); checkpoints hold plain ints, as the other impls write.
    step_ptr = fg.step_tensor.data_ptr()
    assert all(opt.state[p]["step"].data_ptr() == step_ptr for p in params)
    assert all(type(s["step"]) is int for s in opt.state_dict()["state"].values())


def test_no_recompile_over_a_cosine_schedule_and_across_instances() -> None:
    steps = 40
    params = _params(torch.float32)
    opt = O.Adam(params, lr=0.05, impl="compiled")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for _ in range(steps):
        opt.zero_grad()
        _loss(params).backward()
        opt.step()
        sched.step()
    kernel = opt.engine.groups[0].kernel
    assert kernel is compiled.kernels()[kernel.key]
    after_schedule = kernel.compiles
    assert after_schedule == 1, f"{after_schedule} compiles for one configuration"
    # A second optimizer with the same structure (other values, other sizes) reuses the kernel.
    other = [torch.randn(37, requires_grad=True)]
    opt2 = O.Adam(other, lr=0.3, betas=(0.5, 0.6), impl="compiled")
    _loss(other).backward()
    opt2.step()
    assert kernel.compiles == after_schedule


def test_state_dict_moves_between_compiled_and_foreach() -> None:
    hp = {"lr": 0.01, "amsgrad": True}
    ref, _ = _run("adam", hp, "compiled", torch.float32, steps=2 * STEPS)
    for first, second in [("compiled", "foreach"), ("foreach", "compiled")]:
        params, opt = _run("adam", hp, first, torch.float32, steps=STEPS)
        saved = opt.state_dict()
        assert all(isinstance(s["step"], int) for s in saved["state"].values())
        resumed = [p.detach().clone().requires_grad_() for p in params]
        opt2 = O.Adam(resumed, impl=second, **hp)
        opt2.load_state_dict(saved)
        for _ in range(STEPS):
            opt2.zero_grad()
            _loss(resumed).backward()
            opt2.step()
        for a, b in zip(resumed, ref):
            _assert_close(a.detach(), b.detach(), torch.float32, f"{first} -> {second}")


def test_load_state_dict_into_a_running_compiled_optimizer_rebuilds() -> None:
    params, opt = _run("adam", {"lr": 0.01}, "compiled", torch.float32, steps=3)
    saved = {k: v for k, v in opt.state_dict().items()}
    saved["state"] = {
        k: {n: (v.clone() if isinstance(v, Tensor) else v) for n, v in s.items()}
        for k, s in saved["state"].items()
    }
    opt.load_state_dict(saved)
    opt.zero_grad()
    _loss(params).backward()
    opt.step()
    assert opt.engine.rebuilds == 2
    (fg,) = opt.engine.groups
    assert all(s["step"] == 4 for s in fg.state_dicts(opt))
    assert opt.state[params[0]]["m"].untyped_storage().data_ptr() == fg.state[0].data_ptr()


def test_model_zero_grad_set_to_none_is_resynced() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    twin.load_state_dict(model.state_dict())
    x = torch.randn(8, 3)
    opt = O.Adam(model.parameters(), lr=0.01, impl="compiled")
    ref = O.Adam(twin.parameters(), lr=0.01)
    for _ in range(4):
        for m, o in ((model, opt), (twin, ref)):
            m.zero_grad()  # sets .grad to None: the compiled path copies fresh grads back
            m(x).pow(2).mean().backward()
            o.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        _assert_close(a.detach(), b.detach(), torch.float32, "model.zero_grad()")
    assert opt.engine.rebuilds == 1 and opt.engine.resyncs == 3


def _twin_models() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    make = lambda: torch.nn.Sequential(  # noqa: E731
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2), torch.nn.Linear(2, 1)
    )
    model, twin = make(), make()
    twin.load_state_dict(model.state_dict())
    return model, twin


def _held_old_grads(model: torch.nn.Module, it: int, keep: list[Any]) -> None:
    keep[:] = [p.grad for p in model.parameters()]  # alive while backward makes fresh ones
    model.zero_grad()


def _replace_one_grad(model: torch.nn.Module, it: int, keep: list[Any]) -> None:
    if it > 0:
        p = next(iter(model.parameters()))
        p.grad = torch.zeros_like(p)  # a new tensor: the flat view is dropped


def _replace_data(model: torch.nn.Module, it: int, keep: list[Any]) -> None:
    if it == 2:
        p = list(model.parameters())[2]
        p.data = p.data.clone()  # the parameter leaves the flat buffer


def _hold_state_dict(model: torch.nn.Module, it: int, keep: list[Any]) -> None:
    if it == 1:
        keep.append(model.state_dict())  # views of the flat parameters, held from now on


# name -> (what to do before the forward pass of iteration ``it``, zero with opt.zero_grad()?)
LAYOUT_CHANGES: dict[str, tuple[Any, bool]] = {
    "model.zero_grad() every step": (lambda m, it, keep: m.zero_grad(), False),
    "old grads held across model.zero_grad()": (_held_old_grads, False),
    "one .grad replaced out of place": (_replace_one_grad, True),
    "a parameter's .data replaced": (_replace_data, True),
    "state_dict views held": (_hold_state_dict, True),
    "plain loop": (lambda m, it, keep: None, True),
}


@pytest.mark.parametrize("change", LAYOUT_CHANGES)
def test_layout_changes_between_steps_are_seen(change: str) -> None:
    """The cheap per-step check (storage use counts, gradient version) catches what users do."""
    before_forward, opt_zero = LAYOUT_CHANGES[change]
    model, twin = _twin_models()
    x = torch.randn(8, 3)
    opt = O.Adam(model.parameters(), lr=0.01, impl="compiled")
    ref = O.Adam(twin.parameters(), lr=0.01)
    keeps: dict[int, list[Any]] = {id(opt): [], id(ref): []}
    for it in range(6):
        for m, o in ((model, opt), (twin, ref)):
            if opt_zero:
                o.zero_grad()
            before_forward(m, it, keeps[id(o)])
            m(x).pow(2).mean().backward()
            o.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        _assert_close(a.detach(), b.detach(), torch.float32, change)
    if change in ("plain loop", "state_dict views held"):
        # no per-parameter check on the plain path; a held view costs one check, then it is known
        assert opt.engine.verifications <= (1 if change == "state_dict views held" else 0)
        assert opt.engine.rebuilds == 1 and opt.engine.resyncs == 0


def test_a_repeated_step_on_the_same_gradients() -> None:
    results = []
    for impl in ("foreach", "compiled"):
        params = _params(torch.float32)
        opt = O.Adam(params, lr=0.05, impl=impl)
        _loss(params).backward()
        for _ in range(3):  # no backward in between: the gradient buffer does not change
            opt.step()
        results.append(params)
    for a, b in zip(*results):
        _assert_close(a.detach(), b.detach(), torch.float32, "repeated step")


def test_frozen_and_late_parameters() -> None:
    a, b = torch.randn(5, requires_grad=True), torch.randn(3, requires_grad=True)
    opt = O.SGD([a, b], lr=0.1, momentum=0.9, impl="compiled")
    (a**2).sum().backward()  # b has no gradient: it is not stepped
    b_before = b.detach().clone()
    opt.step()
    assert torch.equal(b.detach(), b_before) and "step" not in opt.state[b]
    opt.zero_grad()
    ((a**2).sum() + (b**2).sum()).backward()  # b joins: a new flat group (its own step count)
    opt.step()
    assert opt.state[b]["step"] == 1 and opt.state[a]["step"] == 2
    assert len(opt.engine.groups) == 2


def test_param_groups_dtypes_complex_and_sparse() -> None:
    w32 = torch.randn(4, requires_grad=True)
    w64 = torch.randn(4, dtype=torch.float64, requires_grad=True)
    z = torch.randn(3, dtype=torch.complex64, requires_grad=True)
    emb = torch.nn.Embedding(6, 2, sparse=True)
    results = []
    for impl in ("foreach", "compiled"):
        ps = [t.detach().clone().requires_grad_() for t in (w32, w64, z)]
        e = torch.nn.Embedding(6, 2, sparse=True)
        e.load_state_dict(emb.state_dict())
        opt = O.SGD(
            [{"params": ps[:2]}, {"params": [ps[2]], "lr": 0.05}, {"params": e.parameters()}],
            lr=0.1,
            momentum=0.5,
            impl=impl,
        )
        for _ in range(3):
            opt.zero_grad()
            loss = (ps[0] ** 2).sum() + (ps[1] ** 3).sum() + (ps[2].abs() ** 2).sum()
            loss = loss + e(torch.tensor([1, 4])).pow(2).sum()
            loss.backward()
            opt.step()
        results.append([*ps, e.weight])
        if impl == "compiled":
            assert len(opt.engine.groups) == 2  # float32 and float64; complex/sparse stay out
    for x, y in zip(*results):
        assert torch.allclose(x.detach(), y.detach(), rtol=1e-6, atol=1e-7)


def test_shared_memory_parameters_keep_their_storage() -> None:
    shared = torch.randn(6).share_memory_().requires_grad_()
    plain = torch.randn(6, requires_grad=True)
    ptr = shared.data_ptr()
    ref = [shared.detach().clone().requires_grad_(), plain.detach().clone().requires_grad_()]
    opt = O.Adam([shared, plain], lr=0.1, impl="compiled")
    opt_ref = O.Adam(ref, lr=0.1)
    for params, o in (([shared, plain], opt), (ref, opt_ref)):
        for _ in range(3):
            o.zero_grad()
            _loss(params).backward()
            o.step()
    assert shared.data_ptr() == ptr and shared.is_shared()
    (fg,) = opt.engine.groups
    assert len(fg.params) == 1 and fg.params[0] is plain
    for a, b in zip([shared, plain], ref):
        _assert_close(a.detach(), b.detach(), torch.float32, "shared memory")


@pytest.mark.parametrize("groups", [1, 2], ids=["guard in the kernel", "two flat groups"])
def test_nonfinite_gradient_refused_before_any_write(groups: int) -> None:
    # One flat group checks inside its kernel; with two, every group is checked before any
    # kernel runs, so the NaN in the second group leaves the first one untouched too.
    params = _params(torch.float32)
    split = [{"params": params[:2]}, {"params": params[2:], "lr": 0.02}]
    opt = O.Adam(split if groups == 2 else params, lr=0.01, impl="compiled")
    for _ in range(2):
        opt.zero_grad()
        _loss(params).backward()
        opt.step()
    assert len(opt.engine.groups) == groups
    before = [p.detach().clone() for p in params]
    m_before = opt.state[params[0]]["m"].clone()
    opt.zero_grad()
    _loss(params).backward()
    params[2].grad[0, 0, 0] = math.nan
    with pytest.raises(NonFiniteGradientError, match="parameter" + (" 0" if groups == 2 else " 2")):
        opt.step()
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))
    assert torch.equal(opt.state[params[0]]["m"], m_before)
    assert opt.state[params[0]]["step"] == 2
    opt.nonfinite = "skip"
    opt.step()
    assert opt.skipped_steps == 1 and opt.state[params[0]]["step"] == 2
    params[2].grad.zero_()  # finite again: the step goes through, in every group
    opt.step()
    assert opt.state[params[0]]["step"] == 3 and opt.state[params[3]]["step"] == 3
    assert not torch.equal(params[0].detach(), before[0])


def test_gradient_transforms_see_per_parameter_gradients() -> None:
    class Halve:
        def __init__(self) -> None:
            self.shapes: list[tuple[int, ...]] = []

        def __call__(self, params: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
            self.shapes = [tuple(g.shape) for g in grads]
            return [g * 0.5 for g in grads]

        def state_dict(self) -> dict[str, Any]:
            return {}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            pass

    out = []
    for impl in ("foreach", "compiled"):
        params = _params(torch.float32)
        halve = Halve()
        opt = O.Adam(params, lr=0.01, impl=impl, grad_transforms=[halve])
        for _ in range(3):
            opt.zero_grad()
            _loss(params).backward()
            opt.step()
        assert halve.shapes == [tuple(s) for s in SHAPES]
        out.append(params)
    for a, b in zip(*out):
        _assert_close(a.detach(), b.detach(), torch.float32, "grad transform")


class _Untraceable(O.SGD):
    """A rule torch.compile cannot trace in one graph: it must fall back to foreach."""

    def update(
        self,
        p: Any,
        g: Any,
        *buf: Any,
        t: Any,
        lr: float,
        momentum: float,
        dampening: float,
        nesterov: bool,
    ) -> None:
        torch._dynamo.graph_break()
        super().update(
            p, g, *buf, t=t, lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov
        )


def test_compile_failure_falls_back_to_foreach_with_a_warning() -> None:
    results = []
    for impl in ("foreach", "compiled"):
        params = _params(torch.float32)
        opt = _Untraceable(params, lr=0.1, momentum=0.9, impl=impl)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                opt.zero_grad()
                _loss(params).backward()
                opt.step()
        fallbacks = [w for w in caught if "could not compile" in str(w.message)]
        assert len(fallbacks) == (1 if impl == "compiled" else 0)
        results.append(params)
    for a, b in zip(*results):
        assert torch.equal(a.detach(), b.detach())


def test_unknown_impl_is_rejected() -> None:
    with pytest.raises(ValueError, match="compiled"):
        O.Adam([torch.zeros(1, requires_grad=True)], impl="jit")


def test_lookahead_keeps_flat_slow_weights_around_a_compiled_optimizer() -> None:
    """Slow weights follow the inner flat layout (two kernels per synchronisation) and give
    the same trajectory and checkpoints as around a foreach optimizer, resumed mid-cycle."""
    results = []
    for impl in ("foreach", "compiled"):
        params = _params(torch.float32)
        opt = O.Lookahead(O.Adam(params, lr=0.05, impl=impl), k=3, alpha=0.5)
        for step in range(11):
            if step == 7:  # checkpoint mid-cycle, resume into a fresh optimizer
                saved = opt.state_dict()
                opt = O.Lookahead(O.Adam(params, lr=0.05, impl=impl), k=3, alpha=0.5)
                opt.load_state_dict(saved)
            opt.zero_grad()
            _loss(params).backward()
            opt.step()
        if impl == "compiled":
            (fg,) = opt.optimizer.engine.groups
            (pair,) = opt._slow_flats
            assert pair[0] is fg.p
            slow = opt.state[params[1]]["slow_param"]
            assert slow.untyped_storage().data_ptr() == pair[1].untyped_storage().data_ptr()
        results.append((params, opt.state_dict()))
    (a, sa), (b, sb) = results
    for x, y in zip(a, b):
        _assert_close(x.detach(), y.detach(), torch.float32, "Lookahead params")
    for i, slow in sb["lookahead"]["slow"].items():
        _assert_close(sa["lookahead"]["slow"][i], slow, torch.float32, "slow weights")


def test_check_layout_after_surgery_the_cheap_signs_cannot_see() -> None:
    """A parameter leaves the flat buffer while another view of the buffer appears: the use
    count is unchanged. opt.check_layout() finds it (the docs say to call it after surgery)."""
    model, twin = _twin_models()
    x = torch.randn(8, 3)
    opt = O.Adam(model.parameters(), lr=0.01, impl="compiled")
    ref = O.Adam(twin.parameters(), lr=0.01)
    held = []
    for it in range(5):
        for m, o in ((model, opt), (twin, ref)):
            o.zero_grad()
            if it == 2:
                first, second = list(m.parameters())[:2]
                held.append(first.detach())  # one more view of the flat parameters...
                second.data = second.data.clone()  # ...and one parameter fewer in them
                o.check_layout()
            m(x).pow(2).mean().backward()
            o.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        _assert_close(a.detach(), b.detach(), torch.float32, "after check_layout()")
    assert opt.engine.rebuilds == 2


def test_direct_call_switch(direct_call: bool) -> None:
    """Switched off, no flat group calls its compiled graph directly; the results are the
    same either way (the other tests of this module run in both modes)."""
    _, opt = _run("adam", {"lr": 0.01}, "compiled", torch.float32)
    (fg,) = opt.engine.groups
    assert (fg.direct is not None) == direct_call


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({"RAVINE_COMPILED_DIRECT": "0"}, False), ({"RAVINE_COMPILED_DIRECT": "1"}, True), ({}, True)],
    ids=["0", "1", "unset"],
)
def test_direct_call_environment_variable(environ: dict[str, str], expected: bool) -> None:
    assert compiled.direct_call_from(environ) is expected
