"""Conformance: float64 agreement with torch.optim or a transcription of the paper, option by
option; the impls agree; a resumed run continues bit-identically; a cosine schedule gives the
same trajectory in every impl; reduced precision keeps its dtype; the non-finite guard; CUDA
runs the same checks.

Every impl is a column of this matrix, as each spec declares (``Spec.impls``). Ids read like
the case: ``adam-amsgrad-compiled``. impl="compiled" compiles one kernel per hyperparameter
structure (a few seconds each on 2 cores, shared by every test of the process): the default
suite runs its column on one setting per optimizer (``spec.configs[0]``, or the torch setting
equal to it, else the first), every other setting under ``-m slow``.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch

import ravine
from optim_harness import batches, make_model, max_rel_diff, params_of, ravine_factory, train
from optim_specs import ELEMENTWISE_SPECS, IMPLS, SPECS, SPECS_BY_NAME, Spec, impl_cases
from ravine.optim.base import NonFiniteGradientError
from reference import classic as ref

STEPS = 100
FREEZE_AT = 50
COMPILED_STEPS = 60  # see test_matches_torch_optim
# Paper transcriptions whose compiled column runs in the default suite (the others: -m slow):
# RAdam branches on the rectification term, AdaBound clips by bounds that move with t.
FAST_COMPILED_REFERENCES = ("radam", "adabound")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _cases(
    spec: Spec, settings: list[tuple[Any, ...]], fast: int | None, impls: tuple[str, ...] = IMPLS
) -> Iterator[Any]:
    """One case per (setting, declared impl); the compiled column is slow except ``fast``."""
    for i, setting in enumerate(settings):
        for impl in impl_cases(spec, impls):
            marks = [pytest.mark.slow] if impl == "compiled" and i != fast else []
            yield pytest.param(spec, *setting, impl, id=spec.case_id(setting[0], impl), marks=marks)


def _spec_cases(specs: list[Spec], fast: str | None = None) -> Iterator[Any]:
    """(spec, impl) per declared impl; with ``fast``, only that spec's compiled case is not slow
    (the others compile a kernel per dtype)."""
    for spec in specs:
        for impl in impl_cases(spec):
            slow = impl == "compiled" and fast is not None and spec.name != fast
            marks = [pytest.mark.slow] if slow else []
            yield pytest.param(spec, impl, id=f"{spec.name}-{impl}", marks=marks)


def _fast_torch_index(spec: Spec) -> int:
    """The torch setting equal to ``spec.configs[0]`` (its kernel is shared), else the first."""
    ours = [hp for hp, _ in spec.torch_configs]
    return ours.index(spec.configs[0]) if spec.configs[0] in ours else 0


def _torch_cases() -> Iterator[Any]:
    for spec in SPECS:
        yield from _cases(spec, spec.torch_configs, _fast_torch_index(spec))


def _reference_cases() -> Iterator[Any]:
    for spec in SPECS:
        fast = 0 if spec.name in FAST_COMPILED_REFERENCES else None
        yield from _cases(spec, spec.reference_configs, fast)


def _config_cases(impls: tuple[str, ...] = IMPLS) -> Iterator[Any]:
    for spec in SPECS:
        yield from _cases(spec, [(hp,) for hp in spec.configs], 0, impls)


@contextlib.contextmanager
def _compiled_for_real() -> Iterator[None]:
    """A compile failure (the silent fallback to foreach) fails the test instead."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "impl='compiled': could not compile", RuntimeWarning)
        yield


def _zero_to_none(impl: str) -> bool:
    # impl="compiled" zeroes gradients in place (see optim_harness.train): its column is
    # compared with runs that do the same, so the frozen parameter behaves alike in both.
    return impl != "compiled"


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_declared_impls_are_the_accepted_ones(spec: Spec) -> None:
    """A spec's ``impls`` is what the optimizer takes: the matrix skips nothing it could run."""
    params = [torch.zeros(2, requires_grad=True)]
    for impl in IMPLS:
        if impl in spec.impls:
            ravine.create(spec.name, params, impl=impl, **spec.configs[0])
        else:
            with pytest.raises(ValueError, match="impl"):
                ravine.create(spec.name, params, impl=impl, **spec.configs[0])


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("spec", "hp", "torch_hp", "impl"), list(_torch_cases()))
def test_matches_torch_optim(spec: Spec, hp: dict, torch_hp: dict, impl: str, device: str) -> None:
    assert spec.torch_cls is not None
    # The compiled kernel rounds each fused step differently from torch's op-by-op one (an ulp
    # or so), and a trajectory that passes a max() or sign() tie amplifies that: Adamax with
    # betas (0.5, 0.9) and weight decay goes from 2e-14 at step 60 to 1e-8 at step 100. Its
    # column compares 60 steps.
    steps = STEPS if impl != "compiled" else COMPILED_STEPS
    kw = {"freeze_at": steps // 2, "device": device, "set_to_none": _zero_to_none(impl)}
    with _compiled_for_real():
        ours, _ = train(ravine_factory(spec.name, impl=impl, **hp), steps, **kw)
    theirs, _ = train(lambda p: spec.torch_cls(p, **torch_hp), steps, **kw)
    assert max_rel_diff(params_of(ours), params_of(theirs)) <= 1e-10
    # The run really moved the parameters (a comparison of two no-ops proves nothing).
    assert max_rel_diff(params_of(theirs), params_of(make_model())) > 1e-3


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize(("spec", "hp", "factory", "impl"), list(_reference_cases()))
def test_matches_paper_transcription(spec: Spec, hp: dict, factory, impl: str) -> None:
    # The transcriptions skip a parameter whose .grad is None and set every .grad to None: the
    # compiled column, whose frozen parameter keeps a zero gradient, runs without the freeze.
    kw = {"freeze_at": FREEZE_AT if impl != "compiled" else None}
    with _compiled_for_real():
        ours, _ = train(ravine_factory(spec.name, impl=impl, **hp), STEPS, **kw)
    theirs, _ = train(factory, STEPS, **kw)
    assert max_rel_diff(params_of(ours), params_of(theirs)) <= 1e-10


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize(
    ("name", "hp", "torch_cls", "torch_hp"),
    [
        ("amsgrad", {"lr": 0.01}, torch.optim.Adam, {"lr": 0.01, "amsgrad": True}),
        ("nadam", {"lr": 0.01}, torch.optim.NAdam, {"lr": 0.01}),
        ("rmsprop", {}, torch.optim.RMSprop, {}),
    ],
)
def test_paper_defaults_differ_from_torch_on_purpose(name, hp, torch_cls, torch_hp) -> None:
    """Where ravine's default follows the paper, the difference from torch is real (and the
    paper form is checked against its transcription above)."""
    ours, _ = train(ravine_factory(name, **hp), STEPS)
    theirs, _ = train(lambda p: torch_cls(p, **torch_hp), STEPS)
    assert max_rel_diff(params_of(ours), params_of(theirs)) > 1e-6


def test_momentum_matches_survey_form_at_constant_lr() -> None:
    """torch's b = mu b + g; theta -= lr b equals the survey's v = gamma v + eta g; theta -= v."""
    ours, _ = train(ravine_factory("momentum", lr=0.05, momentum=0.9), STEPS)
    theirs, _ = train(
        lambda p: ref.Reference(p, ref.sgd_momentum_survey, lr=0.05, gamma=0.9), STEPS
    )
    assert max_rel_diff(params_of(ours), params_of(theirs)) <= 1e-10


def test_nag_sutskever_and_lookahead_forms_agree() -> None:
    """x_t = theta_t - lr mu b_t: the look-ahead form's parameters are the Sutskever form's
    look-ahead points."""
    lr, mu = 0.05, 0.9
    look, _ = train(ravine_factory("nag", lr=lr, momentum=mu), STEPS)
    suts, opt = train(ravine_factory("nag", lr=lr, momentum=mu, form="sutskever"), STEPS)
    shifted = [
        p.detach() - lr * mu * opt.state[p]["momentum_buffer"] if p in opt.state else p.detach()
        for p in suts.parameters()
    ]
    assert max_rel_diff(shifted, params_of(look)) <= 1e-10
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("spec", "hp", "impl"), list(_config_cases(("loop", "compiled"))))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_impls_agree_with_foreach(
    spec: Spec, hp: dict, impl: str, dtype: torch.dtype, device: str
) -> None:
    kw = {"dtype": dtype, "freeze_at": 30, "device": device, "set_to_none": _zero_to_none(impl)}
    with _compiled_for_real():
        ours, _ = train(ravine_factory(spec.name, impl=impl, **hp), 60, **kw)
    fe, _ = train(ravine_factory(spec.name, impl="foreach", **hp), 60, **kw)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert max_rel_diff(params_of(ours), params_of(fe)) <= tol


@pytest.mark.parametrize(("spec", "hp", "impl"), list(_config_cases()))
def test_resume_mid_run_is_bit_identical(spec: Spec, hp: dict, impl: str) -> None:
    """Interrupted after 13 steps, saved, loaded into a fresh model and optimizer: the next
    17 steps give the very bits of the uninterrupted run (the freeze at 20 included)."""
    steps, cut = 30, 13
    factory = ravine_factory(spec.name, impl=impl, **hp)
    kw = {"freeze_at": 20, "set_to_none": _zero_to_none(impl)}
    with _compiled_for_real():
        straight, _ = train(factory, steps, **kw)
        first, opt = train(factory, cut, **kw)
        saved = copy.deepcopy((first.state_dict(), opt.state_dict()))
        model = make_model()
        model.load_state_dict(saved[0])
        opt = factory(list(model.parameters()))
        opt.load_state_dict(saved[1])
        resumed, _ = train(factory, steps, model=model, opt=opt, start=cut, **kw)
    for a, b in zip(params_of(resumed), params_of(straight)):
        assert torch.equal(a, b)


def _assert_same_tree(a: Any, b: Any, path: str = "state_dict") -> None:
    """Nested dicts/lists of tensors and plain values, equal bit for bit."""
    if isinstance(b, dict):
        assert isinstance(a, dict) and a.keys() == b.keys(), path
        for key in b:
            _assert_same_tree(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(b, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tree(x, y, f"{path}[{i}]")
    elif isinstance(b, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


def _cosine_trajectory(spec: Spec, hp: dict, impl: str, steps: int) -> list[list[torch.Tensor]]:
    """Parameters after every step under CosineAnnealingLR (lr from its value to 0)."""
    scheduler: list[Any] = []
    trajectory: list[list[torch.Tensor]] = []

    def make(params: list[torch.nn.Parameter]) -> Any:
        opt = ravine.create(spec.name, params, impl=impl, **hp)
        scheduler.append(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps))
        return opt

    def record(i: int, model: torch.nn.Module, opt: Any) -> None:
        scheduler[0].step()
        trajectory.append(params_of(model))

    with _compiled_for_real():
        train(make, steps, set_to_none=_zero_to_none(impl), on_step=record)
    return trajectory


def _check_trajectory(spec: Spec, hp: dict, impl: str, steps: int = 20) -> None:
    ours = _cosine_trajectory(spec, hp, impl, steps)
    # foreach zeroing like the impl under test (see _zero_to_none); nothing is frozen here.
    theirs = _cosine_trajectory(spec, hp, "foreach", steps)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert max_rel_diff(a, b) <= 1e-12, f"step {i}"


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize(("spec", "hp", "impl"), list(_config_cases(("loop", "compiled"))))
def test_cosine_schedule_trajectory_matches_foreach(spec: Spec, hp: dict, impl: str) -> None:
    """Every step of a run whose lr follows a cosine schedule: an impl that kept a stale lr
    (a cached scalar) leaves the foreach trajectory at the first step after a change."""
    _check_trajectory(spec, hp, impl)


@pytest.mark.usefixtures("float64_default")
def test_trajectory_check_catches_a_stale_lr(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above fails for an impl that does not see the schedule's lr: here the
    compiled kernel's scalars are reused because lr is hidden from its cache key, and the
    first step after the schedule's first change (step 1) leaves the trajectory."""
    keys = tuple(k for k in ravine.Adam._config_keys() if k != "lr")
    monkeypatch.setattr(ravine.Adam, "_cached_config_keys", keys)
    with pytest.raises(AssertionError, match="step 1"):
        _check_trajectory(SPECS_BY_NAME["adam"], {"lr": 0.01}, "compiled")


@pytest.mark.parametrize(("spec", "hp", "impl"), list(_config_cases()))
def test_nonfinite_gradient_refused_in_every_impl(spec: Spec, hp: dict, impl: str) -> None:
    """A NaN gradient after three steps: raised before any write (parameters and state
    bit-identical), and with nonfinite="skip" skipped and counted, in every impl."""
    with _compiled_for_real():
        model, opt = train(ravine_factory(spec.name, impl=impl, **hp), 3)
    before = params_of(model)
    state = copy.deepcopy(opt.state_dict())
    x, _ = batches(1)[0]

    def nan_closure() -> torch.Tensor:
        opt.zero_grad()
        loss = model(x).sum() * float("nan")
        loss.backward()
        return loss

    with pytest.raises(NonFiniteGradientError):
        opt.step(nan_closure)
    assert all(torch.equal(a, b) for a, b in zip(before, params_of(model)))
    _assert_same_tree(opt.state_dict(), state)
    if spec.needs_closure:
        return  # L-BFGS has no skip policy of its own (torch.optim.LBFGS)
    core = getattr(opt, "optimizer", opt)  # Lookahead and Ranger: the inner optimizer's policy
    core.nonfinite = "skip"
    opt.step(nan_closure)
    assert all(torch.equal(a, b) for a, b in zip(before, params_of(model)))
    assert core.skipped_steps == 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("spec", "impl"), list(_spec_cases(ELEMENTWISE_SPECS, "adam")))
def test_reduced_precision_keeps_dtype(
    spec: Spec, impl: str, dtype: torch.dtype, device: str
) -> None:
    hp = dict(spec.configs[0])
    if dtype == torch.float16 and "eps" in ravine.optim.get(spec.name).defaults:
        hp["eps"] = 1e-4  # 1e-8 rounds to 0 in float16 and 0/0 is NaN (in torch.optim too)
    with _compiled_for_real():
        model, opt = train(
            ravine_factory(spec.name, impl=impl, **hp), 10, dtype=dtype, device=device
        )
    for p in model.parameters():
        assert p.dtype == dtype
        assert torch.isfinite(p).all()
        for key, value in opt.state[p].items():
            # (the step count is an int64 tensor in impl="compiled", see compiled.py)
            if isinstance(value, torch.Tensor) and key != "step":
                assert value.dtype == dtype, key
    # The same steps in float64, from the same (rounded) start, move the parameters the same way.
    ref_model = make_model(dtype).double()
    start = torch.cat([p.detach().flatten() for p in ref_model.parameters()])
    ref_model, _ = train(ravine_factory(spec.name, **hp), 10, model=ref_model)
    low = torch.cat([p.detach().double().flatten() for p in model.parameters()]) - start
    high = torch.cat([p.detach().double().flatten() for p in ref_model.parameters()]) - start
    if dtype == torch.float32:
        assert (low - high).abs().max() <= 1e-5 * high.abs().max()
    elif dtype == torch.bfloat16:
        # 8-bit mantissa: steps below 2^-8 of a weight round away (e.g. ``scale`` near 1.0).
        assert torch.nn.functional.cosine_similarity(low, high, dim=0) > 0.75
    # float16 is only checked for dtype and finiteness: (1 - b2) g^2 underflows its range for
    # ordinary gradients, which is why mixed precision keeps float32 master weights.


@pytest.mark.parametrize(("spec", "impl"), list(_spec_cases(ELEMENTWISE_SPECS, "adam")))
def test_mixed_dtypes_in_one_group(spec: Spec, impl: str) -> None:
    """Parameters of different dtypes in one group are updated in separate (device, dtype) calls
    and each matches the run where it is alone."""
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(7, dtype=torch.float32))
    a2, b2 = (torch.nn.Parameter(x.detach().clone()) for x in (a, b))
    hp = {**spec.configs[0], "impl": impl}
    both = ravine.create(spec.name, [a, b], **hp)
    alone_a = ravine.create(spec.name, [a2], **hp)
    alone_b = ravine.create(spec.name, [b2], **hp)
    data = batches(5)
    for x, _ in data:
        for opt, params in ((both, (a, b)), (alone_a, (a2,)), (alone_b, (b2,))):
            opt.zero_grad()
            loss = sum(((p - x[0, 0].to(p.dtype)) ** 2).sum() for p in params)
            loss.backward()
            opt.step()
    assert torch.equal(a, a2)
    assert torch.equal(b, b2)


@pytest.mark.parametrize(("spec", "impl"), list(_spec_cases([s for s in SPECS if s.complex])))
def test_complex_parameters_update_as_pairs_of_reals(spec: Spec, impl: str) -> None:
    torch.manual_seed(0)
    z = torch.nn.Parameter(torch.randn(6, dtype=torch.complex128))
    r = torch.nn.Parameter(torch.view_as_real(z.detach()).clone())
    hp = {**spec.configs[0], "impl": impl}
    opt_z = ravine.create(spec.name, [z], **hp)
    opt_r = ravine.create(spec.name, [r], **hp)
    target = torch.randn(6, dtype=torch.complex128)
    for _ in range(20):
        opt_z.zero_grad()
        (z - target).abs().pow(2).sum().backward()
        opt_z.step()
        opt_r.zero_grad()
        (r - torch.view_as_real(target)).pow(2).sum().backward()
        opt_r.step()
    assert torch.allclose(torch.view_as_real(z.detach()), r.detach(), rtol=1e-12, atol=1e-14)
