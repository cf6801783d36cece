"""The later optimizers beyond the spec table: exact reductions, where the paper and the peer
implementations part ways, Lookahead around any optimizer, annealed gradient noise, and
delay-tolerant AdaGrad told the delay of each gradient."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import ravine
from optim_harness import batches, make_model, max_rel_diff, params_of, ravine_factory, train
from ravine.optim import DelayTolerantAdagrad, GradientNoise, Lookahead, RAdam, Ranger
from ravine.optim.radam import radam_rectification
from ravine.optim.wrappers import TransformGradients
from reference import later

STEPS = 100
FREEZE_AT = 50


def _equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def _moved(model: nn.Module) -> float:
    return max_rel_diff(params_of(model), params_of(make_model()))


# -- exact reductions ------------------------------------------------------------------------------
def test_qhm_with_nu_zero_is_sgd_bit_for_bit() -> None:
    ours, _ = train(ravine_factory("qhm", lr=0.05, momentum=0.9, nu=0.0), STEPS, freeze_at=50)
    sgd, _ = train(ravine_factory("sgd", lr=0.05), STEPS, freeze_at=50)
    assert _equal(params_of(ours), params_of(sgd))
    assert _moved(sgd) > 1e-3


def test_qhm_with_nu_one_is_momentum_at_lr_times_one_minus_beta() -> None:
    """QHM's buffer is an EMA (1 - beta) sum_k beta^k g: momentum SGD at lr (1 - beta)."""
    ours, _ = train(ravine_factory("qhm", lr=0.5, momentum=0.9, nu=1.0), STEPS, freeze_at=50)
    mom, _ = train(
        ravine_factory("momentum", lr=0.5 * (1 - 0.9), momentum=0.9), STEPS, freeze_at=50
    )
    assert max_rel_diff(params_of(ours), params_of(mom)) <= 1e-12
    assert _moved(mom) > 1e-3


@pytest.mark.parametrize(
    "hp",
    [{}, {"weight_decay": 0.1, "decoupled_weight_decay": True}, {"betas": (0.5, 0.9)}],
    ids=["plain", "adamw", "betas"],
)
def test_qhadam_with_nus_one_is_adam(hp: dict[str, Any]) -> None:
    betas = hp.pop("betas", (0.9, 0.999))
    ours, _ = train(
        ravine_factory("qhadam", lr=0.01, betas=betas, nus=(1.0, 1.0), **hp), STEPS, freeze_at=50
    )
    adam, _ = train(ravine_factory("adam", lr=0.01, betas=betas, **hp), STEPS, freeze_at=50)
    assert max_rel_diff(params_of(ours), params_of(adam)) <= 1e-12
    assert _moved(adam) > 1e-3


def test_aggmo_with_one_beta_is_momentum_bit_for_bit() -> None:
    ours, _ = train(ravine_factory("aggmo", lr=0.05, betas=(0.9,)), STEPS, freeze_at=50)
    mom, _ = train(ravine_factory("momentum", lr=0.05, momentum=0.9), STEPS, freeze_at=50)
    assert _equal(params_of(ours), params_of(mom))


def test_aggmo_keeps_no_buffer_for_a_zero_beta() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    opt = ravine.optim.AggMo([p], lr=0.1)  # betas (0, 0.9, 0.99)
    p.grad = torch.full((3,), 2.0)
    opt.step()
    assert sorted(opt.state[p]) == ["momentum_buffer_1", "momentum_buffer_2", "step"]
    # b^(0) = g, b^(1) = b^(2) = g after one step: theta = 1 - 0.1 / 3 * 3 * 2
    assert torch.allclose(p.detach(), torch.full((3,), 1 - 0.2))


def test_aggmo_exponential_form_and_default_damping_vector() -> None:
    p = [nn.Parameter(torch.zeros(2))]
    assert ravine.optim.get("aggmo").defaults["betas"] == (0.0, 0.9, 0.99)
    opt = ravine.optim.AggMo.from_exp_form(p, lr=0.1, a=0.1, k=3)
    assert opt.param_groups[0]["betas"] == pytest.approx((0.0, 0.9, 0.99))
    assert len(opt.state_names_for(opt.param_groups[0])) == 2  # beta = 0 keeps no buffer
    with pytest.raises(ValueError, match=r"Invalid a: 1\.5"):
        ravine.optim.AggMo.from_exp_form(p, a=1.5)


# -- AdaBound: wide bounds are Adam-like, tight bounds are SGD at final_lr -----------------------
@pytest.mark.usefixtures("float64_default")
def test_adabound_with_wide_bounds_tracks_adam() -> None:
    """In the authors' form (bias corrections inside the clip, no 1/sqrt(t)) and with bounds
    (~0, ~inf), AdaBound is Adam; eps sits on sqrt(v) instead of sqrt(v_hat), so a negligible
    eps makes the two the same rule."""
    wide = {"final_lr": 1.0, "gamma": 1e-14, "eps": 1e-16}
    ours, _ = train(
        ravine_factory("adabound", lr=0.01, sqrt_t_decay=False, debias=True, **wide),
        STEPS,
        freeze_at=FREEZE_AT,
    )
    adam, _ = train(lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-16), STEPS, freeze_at=FREEZE_AT)
    assert max_rel_diff(params_of(ours), params_of(adam)) <= 1e-9
    # The paper's Algorithm 2 with the same wide bounds is Adam without bias correction at
    # lr / sqrt(t): a different rule, which is why the authors' form is a flag and not the default.
    paper, _ = train(ravine_factory("adabound", lr=0.01, **wide), STEPS, freeze_at=FREEZE_AT)
    assert max_rel_diff(params_of(paper), params_of(adam)) > 1e-3
    transcription, _ = train(
        lambda p: later.Reference(p, later.adabound, lr=0.01, **wide), STEPS, freeze_at=FREEZE_AT
    )
    assert max_rel_diff(params_of(paper), params_of(transcription)) <= 1e-10


@pytest.mark.parametrize("sqrt_t_decay", [False, True])
def test_adabound_late_in_training_tracks_sgd_with_final_lr(sqrt_t_decay: bool) -> None:
    """With gamma = 1 the bounds are within 0.4% of final_lr after 300 steps: from there
    AdaBound is SGD with the EMA momentum buffer (dampening = momentum = b1) at final_lr (times
    1/sqrt(t) in the paper's form)."""
    final_lr, beta1, start, extra = 0.05, 0.9, 300, 50
    hp = dict(lr=0.01, final_lr=final_lr, gamma=1.0, sqrt_t_decay=sqrt_t_decay)
    data = batches(start + extra)
    model, opt = train(ravine_factory("adabound", **hp), start, data=data)
    begin = params_of(model)

    twin = copy.deepcopy(model)
    sgd = torch.optim.SGD(twin.parameters(), lr=final_lr, momentum=beta1, dampening=beta1)
    for p, q in zip(model.parameters(), twin.parameters()):
        if p in opt.state:
            sgd.state[q]["momentum_buffer"] = opt.state[p]["m"].clone()
    adam_twin = copy.deepcopy(model)
    adam = torch.optim.Adam(adam_twin.parameters(), lr=0.01)

    for i in range(start, start + extra):
        x, y = data[i]
        for net, o in ((model, opt), (twin, sgd), (adam_twin, adam)):
            if o is sgd and sqrt_t_decay:
                sgd.param_groups[0]["lr"] = final_lr / math.sqrt(i + 1)
            o.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            o.step()

    def displacement(net: nn.Module) -> torch.Tensor:
        return torch.cat([(a - b).flatten() for a, b in zip(params_of(net), begin)])

    d_ours, d_sgd, d_adam = displacement(model), displacement(twin), displacement(adam_twin)
    assert (d_ours - d_sgd).norm() <= 0.01 * d_sgd.norm()
    assert (d_adam - d_sgd).norm() > 0.2 * d_sgd.norm()  # the comparison can tell rules apart


# -- RAdam: the paper's threshold against torch's ------------------------------------------------
def test_radam_rectification_term_matches_the_paper() -> None:
    beta2, rho_inf = 0.999, 2 / (1 - 0.999) - 1
    for t in range(1, 40):
        rho_t = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
        on, r = radam_rectification(beta2, t, 4.0)
        assert on == (1.0 if rho_t > 4 else 0.0)
        if rho_t > 4:
            expected = math.sqrt(
                (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            )
            assert r == pytest.approx(expected, rel=1e-14)
        else:
            assert r == 0.0
    # beta2 = 0.6 puts rho_inf at 4: never rectified, and no division by zero.
    assert radam_rectification(0.6, 10, 4.0) == (0.0, 0.0)


@pytest.mark.usefixtures("float64_default")
def test_radam_paper_and_torch_differ_only_from_the_step_where_4_lt_rho_t_le_5() -> None:
    """rho_5 = 4.99 for b2 = 0.999: the paper (rho_t > 4) takes a small rectified step there,
    torch.optim.RAdam (rho_t > 5) one more un-adapted step. Identical before, different after;
    rho_threshold=5 is torch's rule."""
    beta2, rho_inf = 0.999, 2 / (1 - 0.999) - 1
    rho = [rho_inf - 2 * t * beta2**t / (1 - beta2**t) for t in range(1, 10)]
    t_star = next(t for t, r in enumerate(rho, start=1) if 4 < r <= 5)
    assert t_star == 5
    for steps, same in ((t_star - 1, True), (t_star, False)):
        paper, _ = train(ravine_factory("radam", lr=0.01), steps)
        theirs, _ = train(lambda p: torch.optim.RAdam(p, lr=0.01), steps)
        as_torch, _ = train(ravine_factory("radam", lr=0.01, rho_threshold=5.0), steps)
        diff = max_rel_diff(params_of(paper), params_of(theirs))
        assert (diff <= 1e-12) if same else (diff > 1e-6)
        assert max_rel_diff(params_of(as_torch), params_of(theirs)) <= 1e-12


# -- Lookahead ---------------------------------------------------------------------------------
INNERS: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
    "ravine-adam": lambda p: ravine.Adam(p, lr=0.01),
    "torch-adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "torch-sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
}


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize("inner", INNERS, ids=str)
def test_lookahead_with_k1_alpha1_is_its_inner_optimizer_bit_for_bit(inner: str) -> None:
    make = INNERS[inner]
    ours, _ = train(lambda p: Lookahead(make(p), k=1, alpha=1.0), STEPS, freeze_at=FREEZE_AT)
    plain, _ = train(make, STEPS, freeze_at=FREEZE_AT)
    assert _equal(params_of(ours), params_of(plain))


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize(("k", "alpha"), [(5, 0.5), (3, 0.8), (7, 0.2)])
def test_lookahead_around_a_torch_optimizer_matches_algorithm_1(k: int, alpha: float) -> None:
    def inner(p):
        return torch.optim.RMSprop(p, lr=0.01, momentum=0.5)

    ours, _ = train(lambda p: Lookahead(inner(p), k, alpha), STEPS, freeze_at=FREEZE_AT)
    ref, _ = train(
        lambda p: later.LookaheadReference(p, inner(p), k, alpha), STEPS, freeze_at=FREEZE_AT
    )
    assert max_rel_diff(params_of(ours), params_of(ref)) <= 1e-10
    plain, _ = train(inner, STEPS, freeze_at=FREEZE_AT)
    assert max_rel_diff(params_of(ours), params_of(plain)) > 1e-3


def test_lookahead_slow_weights_start_at_the_initial_parameters() -> None:
    """phi_0 = theta_0: after the first k steps of SGD on a constant gradient the parameters are
    theta_0 - alpha k lr g. (torch_optimizer's Lookahead takes phi from the fast weights after
    the first inner step instead, and syncs at steps 1, k + 1, ...: not Algorithm 1.)"""
    p = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = Lookahead(torch.optim.SGD([p], lr=0.1), k=4, alpha=0.5)
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    for i in range(4):
        p.grad = g.clone()
        opt.step()
        if i < 3:
            assert torch.allclose(p.detach(), 1 - 0.1 * (i + 1) * g)
    assert torch.allclose(p.detach(), 1 - 0.5 * 4 * 0.1 * g)
    assert torch.equal(opt.state[p]["slow_param"], p.detach())


@pytest.mark.parametrize("inner", ["torch-adam", "ravine-adam"])
def test_lookahead_resume_mid_cycle_is_bit_identical(inner: str, tmp_path) -> None:
    """Saved at step 37 (two steps into a k = 5 cycle): slow weights, counter and the nested
    inner state come back; a fresh model with another init continues bit for bit."""
    make = INNERS[inner]
    data = batches(80)

    def factory(p):
        return Lookahead(make(p), k=5, alpha=0.5)

    full, _ = train(factory, 80, data=data, freeze_at=60)
    first, opt = train(factory, 37, data=data)
    saved = opt.state_dict()
    assert saved["lookahead"]["steps"] == 37 and len(saved["lookahead"]["slow"]) == 8
    torch.save({"model": first.state_dict(), "opt": saved}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    model = make_model(seed=123)
    model.load_state_dict(loaded["model"])
    opt = factory(list(model.parameters()))
    opt.load_state_dict(loaded["opt"])
    resumed, _ = train(None, 80, data=data, model=model, opt=opt, start=37, freeze_at=60)
    assert _equal(params_of(full), params_of(resumed))


def test_lookahead_param_groups_are_the_inner_optimizers() -> None:
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    inner = torch.optim.SGD([a], lr=0.1)
    opt = Lookahead(inner)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    a.grad = torch.ones(2)
    opt.step()
    sched.step()
    assert inner.param_groups[0]["lr"] == 0.05
    opt.add_param_group({"params": [b], "lr": 0.3})
    assert inner.param_groups[1]["params"] == [b]
    opt.load_state_dict(opt.state_dict())  # torch replaces the inner list of groups on load
    assert opt.param_groups is inner.param_groups
    assert "Lookahead(k=5, alpha=0.5" in repr(opt)
    twin = copy.deepcopy(opt)
    assert twin.k == 5 and twin.param_groups is twin.optimizer.param_groups
    assert twin.param_groups[0]["params"][0] is not a


def test_lookahead_does_not_count_steps_its_inner_optimizer_skipped() -> None:
    p = nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = Lookahead(ravine.SGD([p], lr=0.1, nonfinite="skip"), k=2, alpha=0.5)
    p.grad = torch.tensor([1.0, math.nan], dtype=torch.float64)
    opt.step()
    assert opt.lookahead_steps == 0 and opt.optimizer.skipped_steps == 1
    for _ in range(2):
        p.grad = torch.ones(2, dtype=torch.float64)
        opt.step()
    assert opt.lookahead_steps == 2
    assert torch.allclose(p.detach(), torch.full((2,), 1 - 0.5 * 2 * 0.1, dtype=torch.float64))


def test_ranger_is_lookahead_around_radam() -> None:
    ours, _ = train(ravine_factory("ranger", lr=0.01), STEPS, freeze_at=FREEZE_AT)
    composed, _ = train(
        lambda p: Lookahead(
            RAdam(p, lr=0.01, betas=(0.95, 0.999), eps=1e-5, rho_threshold=5.0), k=6, alpha=0.5
        ),
        STEPS,
        freeze_at=FREEZE_AT,
    )
    assert _equal(params_of(ours), params_of(composed))
    assert isinstance(ravine.optim.create("ranger", [nn.Parameter(torch.ones(1))]), Ranger)


def test_lookahead_argument_errors() -> None:
    p = [nn.Parameter(torch.ones(2))]
    for kwargs, text in (({"k": 0}, "k: 0"), ({"k": 2.5}, "k: 2.5"), ({"alpha": 1.5}, "alpha")):
        with pytest.raises(ValueError, match=text):
            Lookahead(torch.optim.SGD(p, lr=0.1), **kwargs)
    with pytest.raises(TypeError, match="hyperparameters"):
        Lookahead(torch.optim.SGD(p, lr=0.1), lr=0.5)
    with pytest.raises(ValueError, match="not a Lookahead state_dict"):
        Lookahead(torch.optim.SGD(p, lr=0.1)).load_state_dict({"state": {}})


# -- annealed gradient noise -------------------------------------------------------------------
def test_noise_with_eta_zero_changes_nothing() -> None:
    noisy, _ = train(lambda p: ravine.Adam(p, lr=0.01, grad_noise=0.0), 30)
    plain, _ = train(lambda p: ravine.Adam(p, lr=0.01), 30)
    assert _equal(params_of(noisy), params_of(plain))
    g = [torch.ones(3)]
    assert GradientNoise(0.0)([torch.zeros(3)], g)[0] is g[0]


def test_noise_variance_is_eta_over_one_plus_t_to_the_gamma() -> None:
    noise = GradientNoise(eta=0.3, gamma=0.55, seed=0)
    params = [torch.zeros(150_000, dtype=torch.float64), torch.zeros(100, 500)]
    grads = [torch.full_like(x, 2.0) for x in params]
    for t in range(5):
        out = noise(params, grads)
        assert torch.equal(grads[0], torch.full_like(params[0], 2.0))  # inputs untouched
        draws = torch.cat([(o - g).double().flatten() for o, g in zip(out, grads)])
        expected = later.annealed_noise_variance(t, eta=0.3, gamma=0.55)
        assert draws.var().item() == pytest.approx(expected, rel=0.02)
        assert abs(draws.mean().item()) < 5 * math.sqrt(expected / draws.numel())
        assert out[1].dtype == torch.float32
    assert noise.t == 5


def test_noise_is_reproducible_through_its_seed() -> None:
    def run(seed: int | None) -> list[torch.Tensor]:
        model, _ = train(
            lambda p: ravine.Adam(p, lr=0.01, grad_transforms=[GradientNoise(0.01, seed=seed)]), 20
        )
        return params_of(model)

    assert _equal(run(7), run(7))
    assert not _equal(run(7), run(8))
    torch.manual_seed(3)
    a, _ = train(lambda p: ravine.SGD(p, lr=0.05, grad_noise=0.01), 20)
    torch.manual_seed(3)
    b, _ = train(lambda p: ravine.SGD(p, lr=0.05, grad_noise=0.01), 20)
    assert _equal(params_of(a), params_of(b))
    plain, _ = train(lambda p: ravine.SGD(p, lr=0.05), 20)
    assert not _equal(params_of(a), params_of(plain))


def test_noise_leaves_the_users_gradients_alone() -> None:
    p = nn.Parameter(torch.ones(4))
    opt = ravine.SGD([p], lr=0.1, grad_noise=GradientNoise(1.0, seed=0))
    p.grad = torch.ones(4)
    opt.step()
    assert torch.equal(p.grad, torch.ones(4))
    assert not torch.allclose(p.detach(), torch.full((4,), 0.9))


@pytest.mark.parametrize("impl", ["foreach", "loop"])
def test_noise_generator_state_resumes_bit_identically(impl: str, tmp_path) -> None:
    data = batches(60)

    def factory(seed: int):
        return lambda p: ravine.Adam(
            p, lr=0.01, impl=impl, grad_noise=GradientNoise(0.05, 0.55, seed)
        )

    full, _ = train(factory(1), 60, data=data)
    first, opt = train(factory(1), 23, data=data)
    torch.save({"model": first.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    model = make_model(seed=5)
    model.load_state_dict(saved["model"])
    opt = factory(999)(list(model.parameters()))  # seed and draws come from the checkpoint
    opt.load_state_dict(saved["opt"])
    assert opt.grad_transforms[0].t == 23 and opt.grad_transforms[0].seed == 1
    resumed, _ = train(None, 60, data=data, model=model, opt=opt, start=23)
    assert _equal(params_of(full), params_of(resumed))


@pytest.mark.usefixtures("float64_default")
def test_noise_around_a_torch_optimizer_is_the_same_transform(tmp_path) -> None:
    ours, _ = train(
        lambda p: ravine.SGD(p, lr=0.05, grad_transforms=[GradientNoise(0.02, seed=4)]), 40
    )
    wrapped, opt = train(
        lambda p: TransformGradients(torch.optim.SGD(p, lr=0.05), GradientNoise(0.02, seed=4)), 40
    )
    assert max_rel_diff(params_of(ours), params_of(wrapped)) <= 1e-14
    state = opt.state_dict()
    assert state["grad_transforms"][0]["t"] == 40
    fresh = TransformGradients(
        torch.optim.SGD(list(wrapped.parameters()), lr=0.05), GradientNoise(0.02, seed=0)
    )
    fresh.load_state_dict(state)
    assert fresh.transforms[0].seed == 4
    with pytest.raises(TypeError, match="LBFGS"):
        TransformGradients(torch.optim.LBFGS(list(wrapped.parameters())), GradientNoise())


def test_noise_under_impl_compiled_draws_what_foreach_draws() -> None:
    """The compiled path hands the transform per-parameter views of its flat gradient, in
    parameter order: the same draws as the other impls."""
    import warnings

    def factory(impl: str):
        return lambda p: ravine.SGD(p, lr=0.05, impl=impl, grad_noise=GradientNoise(0.02, seed=3))

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a compile fallback fails the test
        compiled, _ = train(factory("compiled"), 20, dtype=torch.float32)
    eager, _ = train(factory("foreach"), 20, dtype=torch.float32)
    assert max_rel_diff(params_of(compiled), params_of(eager)) <= 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_noise_on_cuda_is_seeded_and_resumable() -> None:
    grads = [torch.zeros(1000, device="cuda"), torch.zeros(10)]
    params = [torch.zeros_like(g) for g in grads]
    a, b = GradientNoise(0.5, seed=1), GradientNoise(0.5, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a(params, grads), b(params, grads)))
    c = GradientNoise(0.5, seed=2)
    c.load_state_dict(a.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a(params, grads), c(params, grads)))


def test_noise_keeps_sparse_gradients_sparse_and_reaches_both_complex_parts() -> None:
    noise = GradientNoise(1.0, seed=0)
    sparse = torch.sparse_coo_tensor([[0, 3]], torch.zeros(2, 5), (6, 5), check_invariants=True)
    z = torch.zeros(1000, dtype=torch.complex128)
    out_sparse, out_z = noise([torch.zeros(6, 5), z], [sparse, z])
    assert out_sparse.is_sparse
    assert out_sparse.coalesce().indices().tolist() == [[0, 3]]
    assert (out_sparse.coalesce().values() != 0).all()
    assert out_z.real.std() > 0.5 and out_z.imag.std() > 0.5


def test_noise_invalid_arguments() -> None:
    for kwargs, text in (
        ({"eta": -1.0}, "eta: -1.0"),
        ({"gamma": -0.1}, "gamma: -0.1"),
        ({"seed": 1.5}, "seed: 1.5"),
    ):
        with pytest.raises(ValueError, match=text):
            GradientNoise(**kwargs)
    with pytest.raises(ValueError, match=r"eta: -0\.5"):
        ravine.Adam([nn.Parameter(torch.ones(1))], grad_noise=-0.5)


# -- delay-tolerant AdaGrad ----------------------------------------------------------------------
def _train_delayed(
    make_opt: Callable[[list[nn.Parameter]], Any],
    delays: list[int],
    *,
    model: nn.Module | None = None,
    opt: Any = None,
    start: int = 0,
    history: list[list[torch.Tensor]] | None = None,
) -> tuple[nn.Module, Any, list[list[torch.Tensor]]]:
    """Asynchronous training simulated in order: the gradient applied at step i is computed on
    the parameters as they were ``delays[i]`` steps before, and ``step`` is told that delay."""
    model = model if model is not None else make_model()
    opt = opt if opt is not None else make_opt(list(model.parameters()))
    history = history if history is not None else [params_of(model)]
    worker = copy.deepcopy(model)
    data = batches(len(delays))
    for i in range(start, len(delays)):
        d = delays[i]
        with torch.no_grad():
            for w, old in zip(worker.parameters(), history[max(len(history) - 1 - d, 0)]):
                w.copy_(old)
        worker.zero_grad()
        x, y = data[i]
        nn.functional.mse_loss(worker(x), y).backward()
        for p, w in zip(model.parameters(), worker.parameters()):
            p.grad = None if w.grad is None else w.grad.clone()
        opt.step(delay=d)
        history.append(params_of(model))
    return model, opt, history


DELAYS = {
    "random": [
        int(d) for d in torch.randint(0, 5, (120,), generator=torch.Generator().manual_seed(0))
    ],
    "constant": [3] * 120,
    "bursts": [0 if i % 10 < 5 else 4 for i in range(120)],
}


@pytest.mark.parametrize("schedule", DELAYS)
@pytest.mark.parametrize(
    "hp",
    [{"lr": 0.1}, {"lr": 0.05, "initial_accumulator_value": 0.1, "eps": 1e-8}],
    ids=["default", "accumulator"],
)
def test_delay_tolerant_adagrad_matches_adaptive_revision(hp: dict, schedule: str) -> None:
    delays = DELAYS[schedule]
    ours, _, _ = _train_delayed(lambda p: DelayTolerantAdagrad(p, max_delay=4, **hp), delays)
    ref, _, _ = _train_delayed(lambda p: later.AdaptiveRevisionReference(p, **hp), delays)
    assert max_rel_diff(params_of(ours), params_of(ref)) <= 1e-10
    # The revision matters: Adagrad applied to the same stale gradients ends elsewhere.
    plain, _, _ = _train_delayed(lambda p: _IgnoresDelay(ravine.Adagrad(p, **hp)), delays)
    assert max_rel_diff(params_of(ours), params_of(plain)) > 1e-4


class _IgnoresDelay:
    def __init__(self, opt: torch.optim.Optimizer) -> None:
        self.opt = opt

    def step(self, closure: Any = None, delay: int = 0) -> Any:
        return self.opt.step(closure)


@pytest.mark.parametrize("impl", ["foreach", "loop"])
def test_zero_delay_is_adagrad_bit_for_bit(impl: str) -> None:
    ours, _, _ = _train_delayed(
        lambda p: DelayTolerantAdagrad(p, lr=0.1, max_delay=3, impl=impl), [0] * STEPS
    )
    plain, _, _ = _train_delayed(lambda p: _IgnoresDelay(ravine.Adagrad(p, lr=0.1)), [0] * STEPS)
    assert _equal(params_of(ours), params_of(plain))


@pytest.mark.parametrize("impl", ["foreach", "loop"])
def test_delay_tolerant_adagrad_resumes_bit_identically_with_delays(impl: str, tmp_path) -> None:
    delays = DELAYS["random"][:80]

    def factory(p):
        return DelayTolerantAdagrad(p, lr=0.1, max_delay=4, impl=impl)

    full, _, _ = _train_delayed(factory, delays)
    first, opt, history = _train_delayed(factory, delays[:37])
    torch.save({"model": first.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    model = make_model(seed=9)
    model.load_state_dict(saved["model"])
    opt = factory(list(model.parameters()))
    opt.load_state_dict(saved["opt"])
    resumed, _, _ = _train_delayed(factory, delays, model=model, opt=opt, start=37, history=history)
    assert _equal(params_of(full), params_of(resumed))


def test_delay_arguments_are_checked() -> None:
    p = [nn.Parameter(torch.ones(2))]
    opt = DelayTolerantAdagrad(p, max_delay=2)
    p[0].grad = torch.ones(2)
    with pytest.raises(ValueError, match="Invalid delay: 3"):
        opt.step(delay=3)
    with pytest.raises(ValueError, match="Invalid delay: -1"):
        opt.step(delay=-1)
    assert not opt.state  # refused before anything was written
    with pytest.raises(ValueError, match="Invalid delay: 1"):
        DelayTolerantAdagrad(p).step(delay=1)  # max_delay = 0 keeps no history
    with pytest.warns(UserWarning, match="runs with impl='foreach'"):
        assert DelayTolerantAdagrad(p, max_delay=2, impl="compiled").impl == "foreach"
    opt.step(delay=2)  # a delay longer than the run so far reads the start
    assert opt.state[p[0]]["step"] == 1


# -- L-BFGS ----------------------------------------------------------------------------------------
def test_lbfgs_requires_a_closure_and_one_group() -> None:
    p = nn.Parameter(torch.ones(2))
    opt = ravine.optim.create("lbfgs", [p])
    assert isinstance(opt, torch.optim.LBFGS)
    p.grad = torch.ones(2)
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
    with pytest.raises(ValueError, match="one parameter group"):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(1))]})

    def closure():
        opt.zero_grad()
        loss = ((p - 3) ** 2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    assert torch.allclose(p.detach(), torch.full((2,), 3.0))
