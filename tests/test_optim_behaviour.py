"""Behaviour every optimizer must have, driven by the spec table: resume from state_dict,
convergence, hyperparameter validation, schedulers, param groups, the non-finite guard."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import ravine
from optim_harness import batches, make_model, params_of, ravine_factory, train
from optim_specs import ELEMENTWISE_SPECS, SPECS, Convergence, Spec
from ravine.optim import NonFiniteGradientError

DTYPE = torch.float64


def _closure_opt(spec: Spec, params, **hp):
    return ravine.create(spec.name, params, **hp)


@pytest.mark.parametrize("impl", ["foreach", "loop"])
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_resume_from_state_dict_is_bit_identical(spec: Spec, impl: str, tmp_path) -> None:
    """Interrupted at step 37, saved with torch.save, reloaded into a fresh optimizer and model,
    continued to step 80: bitwise equal to the run that was never interrupted."""
    hp = dict(spec.configs[0], impl=impl)
    data = batches(80)
    full, _ = train(ravine_factory(spec.name, **hp), 80, data=data, freeze_at=60)

    first, opt = train(ravine_factory(spec.name, **hp), 37, data=data)
    torch.save({"model": first.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    del first, opt

    saved = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    model = make_model(seed=123)  # different init: everything must come from the checkpoint
    model.load_state_dict(saved["model"])
    opt = ravine.create(spec.name, model.parameters(), **hp)
    opt.load_state_dict(saved["opt"])
    resumed, _ = train(None, 80, data=data, model=model, opt=opt, start=37, freeze_at=60)

    for a, b in zip(params_of(full), params_of(resumed)):
        assert torch.equal(a, b)


def _rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


# Ill-conditioned quadratic: curvatures 1 ... 100 (condition number 100) in 10 dimensions.
_CURVATURES = torch.logspace(0, 2, 10, dtype=DTYPE)


def _quadratic(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (_CURVATURES * x * x).sum()


PROBLEMS = {
    "quadratic": (
        _quadratic,
        lambda: torch.full((10,), 3.0, dtype=DTYPE),
        torch.zeros(10, dtype=DTYPE),
    ),
    "rosenbrock": (
        _rosenbrock,
        lambda: torch.tensor([-1.5, 2.0], dtype=DTYPE),
        torch.ones(2, dtype=DTYPE),
    ),
}


def _convergence_cases():
    for spec in SPECS:
        for problem in PROBLEMS:
            conv = getattr(spec, problem)
            if conv is not None:
                yield pytest.param(spec, problem, conv, id=f"{spec.name}-{problem}")


@pytest.mark.parametrize(("spec", "problem", "conv"), list(_convergence_cases()))
def test_converges(spec: Spec, problem: str, conv: Convergence) -> None:
    f, start, minimizer = PROBLEMS[problem]
    x = torch.nn.Parameter(start())
    opt = ravine.create(spec.name, [x], **conv.hp)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, conv.lr_gamma) if conv.lr_gamma else None

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = f(x)
        loss.backward()
        return loss

    initial = (x.detach() - minimizer).norm().item()
    for _ in range(conv.steps):
        opt.step(closure)
        if sched is not None:
            sched.step()
    final = (x.detach() - minimizer).norm().item()
    assert final <= conv.tol, f"distance {final:.3g} from {initial:.3g} after {conv.steps} steps"


def test_every_spec_has_both_convergence_problems() -> None:
    missing = [s.name for s in SPECS if s.quadratic is None or s.rosenbrock is None]
    assert not missing


def _invalid_cases():
    for spec in SPECS:
        for hp, text in spec.invalid:
            yield pytest.param(spec, hp, text, id=f"{spec.name}-{text}")


@pytest.mark.parametrize(("spec", "hp", "text"), list(_invalid_cases()))
def test_invalid_hyperparameter_raises_naming_it(spec: Spec, hp: dict, text: str) -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match=_escape(text)):
        ravine.create(spec.name, [p], **hp)


@pytest.mark.parametrize(("spec", "hp", "text"), list(_invalid_cases()))
def test_invalid_hyperparameter_in_added_group_raises(spec: Spec, hp: dict, text: str) -> None:
    opt = ravine.create(spec.name, [torch.nn.Parameter(torch.zeros(3))])
    if not set(hp) <= set(opt.defaults):
        pytest.skip(f"{sorted(set(hp) - set(opt.defaults))} is a constructor option, not per group")
    with pytest.raises(ValueError, match=_escape(text)):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], **hp})


def _escape(text: str) -> str:
    import re

    return re.escape(text)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_every_optimizer_checks_lr(spec: Spec) -> None:
    assert any("lr" in hp for hp, _ in spec.invalid)


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [({"impl": "fused"}, "impl: 'fused'"), ({"nonfinite": "warn"}, "nonfinite: 'warn'")],
)
def test_invalid_common_options(kwargs: dict, text: str) -> None:
    with pytest.raises(ValueError, match=_escape(text)):
        ravine.Adam([torch.nn.Parameter(torch.zeros(1))], **kwargs)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.sparse], ids=str)
def test_sparse_gradients_match_dense(spec: Spec) -> None:
    """Rules defined for sparse gradients (SGD family, Adagrad) update an embedding exactly as
    they would with the same gradient in dense form."""
    torch.manual_seed(0)
    dense_emb = torch.nn.Embedding(20, 4, dtype=DTYPE)
    sparse_emb = torch.nn.Embedding(20, 4, sparse=True, dtype=DTYPE)
    sparse_emb.load_state_dict(dense_emb.state_dict())
    hp = dict(spec.configs[0])
    opt_d = ravine.create(spec.name, dense_emb.parameters(), **hp)
    opt_s = ravine.create(spec.name, sparse_emb.parameters(), **hp)
    gen = torch.Generator().manual_seed(0)
    for _ in range(15):
        idx = torch.randint(0, 20, (6,), generator=gen)
        for emb, opt in ((dense_emb, opt_d), (sparse_emb, opt_s)):
            opt.zero_grad()
            emb(idx).pow(2).sum().backward()
            opt.step()
    assert sparse_emb.weight.grad.is_sparse
    torch.testing.assert_close(sparse_emb.weight, dense_emb.weight, rtol=1e-12, atol=1e-14)


def test_sparse_adagrad_matches_torch() -> None:
    torch.manual_seed(0)
    a = torch.nn.Embedding(30, 3, sparse=True, dtype=DTYPE)
    b = torch.nn.Embedding(30, 3, sparse=True, dtype=DTYPE)
    b.load_state_dict(a.state_dict())
    ours = ravine.Adagrad(a.parameters(), lr=0.1, lr_decay=0.01)
    theirs = torch.optim.Adagrad(b.parameters(), lr=0.1, lr_decay=0.01)
    for i in range(10):
        idx = torch.tensor([i % 30, (3 * i) % 30, 7])
        for emb, opt in ((a, ours), (b, theirs)):
            opt.zero_grad()
            (emb(idx) ** 2).sum().backward()
            opt.step()
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("spec", [s for s in SPECS if not s.sparse], ids=str)
def test_sparse_gradients_rejected_with_clear_error(spec: Spec) -> None:
    emb = torch.nn.Embedding(5, 2, sparse=True)
    opt = ravine.create(spec.name, emb.parameters(), **spec.configs[0])
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_nonfinite_gradient_raises_before_writing(spec: Spec) -> None:
    model = make_model()
    opt = ravine.create(spec.name, model.parameters(), **spec.configs[0])
    train(None, 3, model=model, opt=opt)
    before = params_of(model)
    state_before = {
        k: v.clone() for k, v in opt.state[model.head.weight].items() if isinstance(v, torch.Tensor)
    }
    opt.zero_grad()
    (model(batches(1)[0][0]).sum() * float("nan")).backward()
    with pytest.raises(
        NonFiniteGradientError, match=r"parameter group 0, parameter \d+ .* at step 4"
    ):
        opt.step()
    for a, b in zip(before, params_of(model)):
        assert torch.equal(a, b)
    for k, v in state_before.items():
        assert torch.equal(v, opt.state[model.head.weight][k])


def test_nonfinite_skip_skips_and_counts() -> None:
    p = torch.nn.Parameter(torch.ones(3, dtype=DTYPE))
    opt = ravine.Adam([p], lr=0.1, nonfinite="skip")
    p.grad = torch.tensor([1.0, math.inf, 0.0], dtype=DTYPE)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3, dtype=DTYPE))
    assert opt.skipped_steps == 1
    p.grad = torch.ones(3, dtype=DTYPE)
    opt.step()
    assert opt.state[p]["step"] == 1
    assert opt.state_dict()["ravine"]["skipped_steps"] == 1


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_works_with_torch_lr_schedulers(spec: Spec) -> None:
    model = make_model()
    opt = ravine.create(spec.name, model.parameters(), **spec.configs[0])
    lr0 = opt.param_groups[0]["lr"]
    step_lr = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.1)
    for i, (x, y) in enumerate(batches(4)):

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)
        step_lr.step()
        plateau.step(1.0)  # a flat metric: reduce every epoch after the first
        assert not math.isnan(opt.param_groups[0]["lr"]), i
    assert opt.param_groups[0]["lr"] == pytest.approx(lr0 * 0.25 * 0.1**3)


@pytest.mark.parametrize("spec", ELEMENTWISE_SPECS, ids=str)
def test_add_param_group_gets_defaults_and_own_lr(spec: Spec) -> None:
    a = torch.nn.Parameter(torch.ones(3, dtype=DTYPE))
    b = torch.nn.Parameter(torch.ones(3, dtype=DTYPE))
    opt = ravine.create(spec.name, [a], **spec.configs[0])
    lr = opt.param_groups[0]["lr"]
    opt.add_param_group({"params": [b], "lr": lr / 10})
    assert opt.param_groups[1]["lr"] == lr / 10
    for key, value in opt.param_groups[0].items():
        if key not in ("params", "lr"):
            assert opt.param_groups[1][key] == value
    for _ in range(3):
        opt.zero_grad()
        (a.sum() + b.sum()).backward()
        opt.step()
    assert not torch.equal(b.detach(), torch.ones(3, dtype=DTYPE))
    assert not torch.equal(a.detach(), b.detach())  # the groups really use their own lr


def test_closure_returns_loss_and_grads_without_closure_work() -> None:
    p = torch.nn.Parameter(torch.tensor([2.0], dtype=DTYPE))
    opt = ravine.SGD([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(4.0)
    assert p.item() == pytest.approx(2.0 - 0.1 * 4.0)


@pytest.mark.parametrize("name", ["adam", "delay_tolerant_adagrad", "lookahead"])
def test_step_hooks_and_zero_grad_come_from_torch(name: str) -> None:
    # once per step: delay_tolerant_adagrad overrides step() and calls super().step(), and
    # Lookahead wraps an optimizer with hooks of its own
    p = torch.nn.Parameter(torch.ones(2))
    opt = ravine.create(name, [p])
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    p.grad = torch.ones(2)
    opt.step()
    opt.step()
    opt.zero_grad()
    assert calls == ["pre", "post", "pre", "post"]
    assert p.grad is None


def test_impl_picks_an_engine_behind_one_interface() -> None:
    from ravine.optim.compiled import FlatEngine
    from ravine.optim.engines import EagerEngine, Engine

    p = torch.nn.Parameter(torch.ones(3))
    for impl, kind, foreach in [
        ("foreach", EagerEngine, True),
        ("loop", EagerEngine, False),
        ("compiled", FlatEngine, True),
    ]:
        opt = ravine.Adam([p], impl=impl)
        engine = opt.engine
        assert type(engine) is kind and getattr(engine, "foreach", True) is foreach
        for name in ("step", "zero_grad", "state_dict", "check_layout", "layout"):
            assert callable(getattr(engine, name)), (impl, name)
        assert engine.layout() == ()  # the compiled one flattens on the first step
        p.grad = torch.ones(3)
        opt.step()
        layout = engine.layout()
        assert len(layout) == (impl == "compiled")
        for flat in layout:  # the public view Lookahead reads
            assert len(flat.params) == 1 and flat.params[0] is p and flat.buffer.numel() >= 3
            assert torch.equal(flat.views(flat.buffer)[0], p.detach())
        assert engine.layout() is layout
        assert isinstance(opt.state_dict()["state"][0]["step"], int)
    opt.impl = "foreach"  # DelayTolerantAdagrad's fallback sets impl: the engine follows
    assert type(opt.engine) is EagerEngine and Engine is not None


def test_a_user_subclass_overriding_step_runs_hooks_once_and_is_wrapped_once() -> None:
    # Optimizer.__init_subclass__ wraps a step the subclass defines (no decorator to forget);
    # a step already wrapped, or an inherited one, is not wrapped again
    seen: list[bool] = []

    class Counted(ravine.Adam):
        def step(self, closure=None):
            seen.append(torch.is_grad_enabled())
            return super().step(closure)

    class Inherits(Counted):
        pass

    class Lookahead2(ravine.Lookahead):
        def step(self, closure=None):
            seen.append(torch.is_grad_enabled())
            return super().step(closure)

    assert Counted.step.hooked and Inherits.step is Counted.step
    assert Counted.step.__wrapped__.__qualname__.endswith("Counted.step")  # one layer
    assert not hasattr(Counted.step.__wrapped__, "hooked")
    rewrapped = type("Again", (Counted,), {"step": Counted.step})
    assert rewrapped.step is Counted.step
    for make in (
        lambda p: Counted([p]),
        lambda p: Inherits([p]),
        lambda p: Lookahead2(ravine.Adam([p])),
    ):
        seen.clear()
        p = torch.nn.Parameter(torch.ones(2))
        opt = make(p)
        calls: list[str] = []
        opt.register_step_pre_hook(lambda o, a, k, calls=calls: calls.append("pre"))
        opt.register_step_post_hook(lambda o, a, k, calls=calls: calls.append("post"))
        p.grad = torch.ones(2)
        opt.step()
        opt.step()
        assert calls == ["pre", "post", "pre", "post"] and seen == [False, False]
        assert torch.is_grad_enabled()


@pytest.mark.parametrize("impl", ["foreach", "compiled"])
def test_step_runs_without_grad_and_shows_in_the_profiler(impl: str) -> None:
    # step() skips torch's record_function when nobody profiles (see base._step_wrapper)
    p = torch.nn.Parameter(torch.ones(2))
    opt = ravine.Adam([p], impl=impl)
    p.grad = torch.ones(2)
    global_calls = []
    handle = register_optimizer_step_pre_hook(lambda o, a, k: global_calls.append(type(o).__name__))
    try:
        opt.step()
    finally:
        handle.remove()
    assert global_calls == ["Adam"] and torch.is_grad_enabled()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    assert "Optimizer.step#Adam.step" in {e.name for e in prof.events()}
    opt.step()
    assert torch.is_grad_enabled()


def test_no_grad_means_no_state_and_no_change() -> None:
    p = torch.nn.Parameter(torch.ones(2))
    opt = ravine.Adam([p])
    opt.step()
    assert len(opt.state) == 0
    assert torch.equal(p.detach(), torch.ones(2))


class _ScaleGrads:
    """A gradient transform with state: scales every gradient and counts its calls."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.calls = 0

    def __call__(self, params, grads):
        self.calls += 1
        return [g * self.factor for g in grads]

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = state["calls"]


def test_gradient_transforms_see_every_gradient_once_per_step() -> None:
    a = torch.nn.Parameter(torch.ones(3, dtype=DTYPE))
    b = torch.nn.Parameter(torch.ones(3, dtype=DTYPE))
    scale = _ScaleGrads(2.0)
    opt = ravine.SGD([a], lr=0.1, grad_transforms=[scale])
    plain = ravine.SGD([b], lr=0.2)
    for _ in range(3):
        for p, o in ((a, opt), (b, plain)):
            o.zero_grad()
            (p**2).sum().backward()
            o.step()
    assert torch.equal(a, b)
    # .grad holds the unscaled gradient at the previous point (p_prev = p / 0.6): untouched.
    torch.testing.assert_close(a.grad, 2 * a.detach() / 0.6)
    assert scale.calls == 3

    state = opt.state_dict()
    assert state["ravine"]["grad_transforms"] == [{"calls": 3}]
    fresh = _ScaleGrads(2.0)
    again = ravine.SGD([a], lr=0.1, grad_transforms=[fresh])
    again.load_state_dict(state)
    assert fresh.calls == 3
    with pytest.raises(ValueError, match="1 gradient transforms but this optimizer has 0"):
        ravine.SGD([a], lr=0.1).load_state_dict(state)
