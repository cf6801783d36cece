"""Conformance: float64 agreement with torch.optim or a transcription of the paper, option by
option; loop and foreach agree; reduced precision keeps its dtype; CUDA runs the same checks."""

from __future__ import annotations

import pytest
import torch

import ravine
from optim_harness import batches, make_model, max_rel_diff, params_of, ravine_factory, train
from optim_specs import ELEMENTWISE_SPECS, SPECS, Spec
from reference import classic as ref

STEPS = 100
FREEZE_AT = 50

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def float64_default():
    # torch.optim keeps scalar state (step, mu_product) in the default dtype: float64 here, so
    # the comparison is not limited by torch's float32 scalars.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _torch_cases():
    for spec in SPECS:
        for i, (hp, torch_hp) in enumerate(spec.torch_configs):
            yield pytest.param(spec, hp, torch_hp, id=f"{spec.name}-{i}")


def _reference_cases():
    for spec in SPECS:
        for i, (hp, factory) in enumerate(spec.reference_configs):
            yield pytest.param(spec, hp, factory, id=f"{spec.name}-{i}")


def _config_cases():
    for spec in SPECS:
        for i, hp in enumerate(spec.configs):
            yield pytest.param(spec, hp, id=f"{spec.name}-{i}")


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["foreach", "loop"])
@pytest.mark.parametrize(("spec", "hp", "torch_hp"), list(_torch_cases()))
def test_matches_torch_optim(spec: Spec, hp: dict, torch_hp: dict, impl: str, device: str) -> None:
    assert spec.torch_cls is not None
    ours, _ = train(
        ravine_factory(spec.name, impl=impl, **hp), STEPS, freeze_at=FREEZE_AT, device=device
    )
    theirs, _ = train(
        lambda p: spec.torch_cls(p, **torch_hp), STEPS, freeze_at=FREEZE_AT, device=device
    )
    assert max_rel_diff(params_of(ours), params_of(theirs)) <= 1e-10
    # The run really moved the parameters (a comparison of two no-ops proves nothing).
    assert max_rel_diff(params_of(theirs), params_of(make_model())) > 1e-3


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize(("spec", "hp", "factory"), list(_reference_cases()))
def test_matches_paper_transcription(spec: Spec, hp: dict, factory) -> None:
    ours, _ = train(ravine_factory(spec.name, **hp), STEPS, freeze_at=FREEZE_AT)
    theirs, _ = train(factory, STEPS, freeze_at=FREEZE_AT)
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
@pytest.mark.parametrize(("spec", "hp"), list(_config_cases()))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_loop_and_foreach_agree(spec: Spec, hp: dict, dtype: torch.dtype, device: str) -> None:
    kw = {"dtype": dtype, "freeze_at": 30, "device": device}
    loop, _ = train(ravine_factory(spec.name, impl="loop", **hp), 60, **kw)
    fe, _ = train(ravine_factory(spec.name, impl="foreach", **hp), 60, **kw)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert max_rel_diff(params_of(loop), params_of(fe)) <= tol


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("spec", ELEMENTWISE_SPECS, ids=str)
def test_reduced_precision_keeps_dtype(spec: Spec, dtype: torch.dtype, device: str) -> None:
    hp = dict(spec.configs[0])
    if dtype == torch.float16 and "eps" in ravine.optim.get(spec.name).defaults:
        hp["eps"] = 1e-4  # 1e-8 rounds to 0 in float16 and 0/0 is NaN (in torch.optim too)
    model, opt = train(ravine_factory(spec.name, **hp), 10, dtype=dtype, device=device)
    for p in model.parameters():
        assert p.dtype == dtype
        assert torch.isfinite(p).all()
        for key, value in opt.state[p].items():
            if isinstance(value, torch.Tensor):
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


@pytest.mark.parametrize("spec", ELEMENTWISE_SPECS, ids=str)
def test_mixed_dtypes_in_one_group(spec: Spec) -> None:
    """Parameters of different dtypes in one group are updated in separate (device, dtype) calls
    and each matches the run where it is alone."""
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(7, dtype=torch.float32))
    a2, b2 = (torch.nn.Parameter(x.detach().clone()) for x in (a, b))
    hp = spec.configs[0]
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


@pytest.mark.parametrize("spec", ELEMENTWISE_SPECS, ids=str)
def test_complex_parameters_update_as_pairs_of_reals(spec: Spec) -> None:
    torch.manual_seed(0)
    z = torch.nn.Parameter(torch.randn(6, dtype=torch.complex128))
    r = torch.nn.Parameter(torch.view_as_real(z.detach()).clone())
    hp = spec.configs[0]
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
