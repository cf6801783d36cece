"""torch.optim checkpoints both ways: a run switched from torch.optim to ravine mid-way (or back)
continues as the run it left would have, in float64; what has no counterpart is refused with
the reason, before anything changes."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import ravine
from optim_harness import batches, max_rel_diff, params_of, train
from ravine.optim.catalog import ROWS
from ravine.optim.torch_format import counterpart_of, is_torch_state_dict

STEPS = 6  # steps before the switch, and after it
FREEZE_AT = 3  # the head's bias stops receiving gradients: per-parameter step counts differ

# (ravine name, ravine hyperparameters, torch.optim class, torch hyperparameters): the same rule.
CASES: list[tuple[str, dict[str, Any], type[torch.optim.Optimizer], dict[str, Any]]] = [
    ("sgd", {"lr": 0.05}, torch.optim.SGD, {"lr": 0.05}),
    (
        "sgd",
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01},
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01},
    ),
    (
        "sgd",
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    ),
    ("momentum", {"lr": 0.05}, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    (
        "nag",
        {"lr": 0.05, "momentum": 0.8},
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.8, "nesterov": True},
    ),
    ("adam", {"lr": 0.01}, torch.optim.Adam, {"lr": 0.01}),
    (
        "adam",
        {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01, "maximize": True},
        torch.optim.Adam,
        {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01, "maximize": True},
    ),
    (
        "adam",
        {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
        torch.optim.AdamW,
        {"lr": 0.01, "weight_decay": 0.1},
    ),
    ("adamw", {"lr": 0.01, "amsgrad": True}, torch.optim.AdamW, {"lr": 0.01, "amsgrad": True}),
    ("amsgrad", {"lr": 0.01, "debias": True}, torch.optim.Adam, {"lr": 0.01, "amsgrad": True}),
    (
        "adamax",
        {"lr": 0.01, "weight_decay": 0.01},
        torch.optim.Adamax,
        {"lr": 0.01, "weight_decay": 0.01},
    ),
    ("nadam", {"lr": 0.01, "momentum_decay": 4e-3}, torch.optim.NAdam, {"lr": 0.01}),
    (
        "nadam",
        {"lr": 0.01, "momentum_decay": 0.1, "weight_decay": 0.1, "decoupled_weight_decay": True},
        torch.optim.NAdam,
        {"lr": 0.01, "momentum_decay": 0.1, "weight_decay": 0.1, "decoupled_weight_decay": True},
    ),
    ("radam", {"lr": 0.01, "rho_threshold": 5.0}, torch.optim.RAdam, {"lr": 0.01}),
    (
        "adagrad",
        {"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
        torch.optim.Adagrad,
        {"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
    ),
    ("adadelta", {"lr": 1.0, "rho": 0.95}, torch.optim.Adadelta, {"lr": 1.0, "rho": 0.95}),
    ("rmsprop", {"lr": 0.01, "alpha": 0.99}, torch.optim.RMSprop, {"lr": 0.01}),
    (
        "rmsprop",
        {"lr": 0.01, "alpha": 0.99, "centered": True, "momentum": 0.5},
        torch.optim.RMSprop,
        {"lr": 0.01, "centered": True, "momentum": 0.5},
    ),
    ("rprop", {"lr": 0.01}, torch.optim.Rprop, {"lr": 0.01}),
    ("lbfgs", {"lr": 0.5, "max_iter": 3}, torch.optim.LBFGS, {"lr": 0.5, "max_iter": 3}),
]


def _params() -> Iterator[Any]:
    for name, hp, torch_cls, torch_hp in CASES:
        for impl in ("foreach", "loop", "compiled"):
            if name == "lbfgs" and impl == "compiled":
                continue  # torch.optim.LBFGS itself: one flat vector already
            # impl="compiled" compiles a kernel per configuration: Adam's in the quick suite.
            slow = impl == "compiled" and (name, hp) != ("adam", {"lr": 0.01})
            marks = [pytest.mark.slow] if slow else []
            case = f"{name}-{'-'.join(f'{k}={v}' for k, v in hp.items() if k != 'lr')}"
            yield pytest.param(
                name, hp, torch_cls, torch_hp, impl, marks=marks, id=f"{case}-{impl}"
            )


@pytest.fixture(autouse=True)
def float64_scalars() -> Iterator[None]:
    """torch.optim keeps its step counts (and NAdam's mu_product) in the default dtype: float64
    makes torch's own scalar arithmetic as exact as ravine's, so the runs can be compared
    tightly."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _factories(
    name: str, hp: dict[str, Any], torch_cls: type, torch_hp: dict[str, Any], impl: str
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    options = {} if name == "lbfgs" else {"impl": impl}
    return (
        lambda params: ravine.create(name, params, **hp, **options),
        lambda params: torch_cls(params, **torch_hp),
    )


def _switched_run(
    first: Callable[..., Any],
    second: Callable[..., Any],
    impl: str,
    export: Callable[[Any], dict[str, Any]],
) -> list[torch.Tensor]:
    """STEPS steps with ``first``, its state exported and loaded into ``second``, STEPS more."""
    # impl="compiled" zeroes its flat gradients in place: the frozen parameter keeps taking
    # zero-gradient steps, as torch's with set_to_none=False, which every run then uses.
    set_to_none = impl != "compiled"
    data = batches(2 * STEPS)
    model, opt = train(first, STEPS, data=data, freeze_at=FREEZE_AT, set_to_none=set_to_none)
    resumed = second(list(model.parameters()))
    resumed.load_state_dict(export(opt))
    train(
        None,
        2 * STEPS,
        model=model,
        opt=resumed,
        start=STEPS,
        data=data,
        freeze_at=FREEZE_AT,
        set_to_none=set_to_none,
    )
    return params_of(model)


def _reference(make: Callable[..., Any], impl: str) -> list[torch.Tensor]:
    model, _ = train(
        make,
        2 * STEPS,
        data=batches(2 * STEPS),
        freeze_at=FREEZE_AT,
        set_to_none=impl != "compiled",
    )
    return params_of(model)


@pytest.mark.parametrize(("name", "hp", "torch_cls", "torch_hp", "impl"), list(_params()))
def test_a_torch_run_continues_in_ravine_as_torch_would(
    name: str, hp: dict[str, Any], torch_cls: type, torch_hp: dict[str, Any], impl: str
) -> None:
    ours, theirs = _factories(name, hp, torch_cls, torch_hp, impl)
    switched = _switched_run(theirs, ours, impl, lambda opt: opt.state_dict())
    assert max_rel_diff(switched, _reference(theirs, impl)) < 1e-13


@pytest.mark.parametrize(("name", "hp", "torch_cls", "torch_hp", "impl"), list(_params()))
def test_a_ravine_run_continues_in_torch_as_ravine_would(
    name: str, hp: dict[str, Any], torch_cls: type, torch_hp: dict[str, Any], impl: str
) -> None:
    ours, theirs = _factories(name, hp, torch_cls, torch_hp, impl)
    switched = _switched_run(ours, theirs, impl, lambda opt: opt.state_dict(format="torch"))
    assert max_rel_diff(switched, _reference(ours, impl)) < 1e-13


def _stepped(opt: Any, params: list[torch.Tensor], steps: int = 2) -> Any:
    def closure() -> None:  # NAG(form="sutskever") evaluates the gradient through it
        for p in params:
            p.grad = torch.linspace(-1.0, 1.0, p.numel()).reshape(p.shape).to(p.dtype)

    for _ in range(steps):
        closure()
        opt.step(closure)
    return opt


def _two_params() -> list[torch.Tensor]:
    return [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]


def test_the_formats_side_by_side() -> None:
    params = _two_params()
    opt = _stepped(ravine.Adam(params, lr=0.01), params)
    native = opt.state_dict()
    assert native["ravine"]["optimizer"] == "Adam"
    assert set(native["state"][0]) == {"step", "m", "v"} and native["state"][0]["step"] == 2
    exported = ravine.optim.to_torch_state_dict(opt)
    assert "ravine" not in exported and is_torch_state_dict(exported)
    assert set(exported["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert (
        exported["state"][0]["step"].dtype == torch.float64
        and float(exported["state"][0]["step"]) == 2
    )
    assert exported["param_groups"][0]["amsgrad"] is False
    assert exported["param_groups"][0]["foreach"] is None
    assert not is_torch_state_dict(native)
    reference = torch.optim.Adam(_two_params(), lr=0.01).state_dict()["param_groups"][0]
    assert set(exported["param_groups"][0]) == set(reference)
    # a torch.optim optimizer's own state dict, unchanged
    theirs = torch.optim.SGD(params, lr=0.1)
    assert ravine.optim.to_torch_state_dict(theirs) == theirs.state_dict()


def test_a_scheduler_key_and_user_keys_travel_both_ways() -> None:
    params = _two_params()
    theirs = torch.optim.Adam([{"params": params, "name": "all"}], lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(theirs, step_size=1, gamma=0.5)
    _stepped(theirs, params)
    scheduler.step()
    ours = ravine.Adam(params)
    ours.load_state_dict(theirs.state_dict())
    group = ours.param_groups[0]
    assert group["lr"] == 0.005 and group["initial_lr"] == 0.01 and group["name"] == "all"
    assert "foreach" not in group and "fused" not in group
    back = ours.state_dict(format="torch")["param_groups"][0]
    assert back["initial_lr"] == 0.01 and back["name"] == "all" and back["fused"] is None


def test_sgd_without_a_step_count_loads_as_one_step_taken() -> None:
    params = _two_params()
    theirs = _stepped(torch.optim.SGD(params, lr=0.1, momentum=0.9, dampening=0.5), params, 1)
    ours = ravine.SGD(params, lr=0.1, momentum=0.9, dampening=0.5)
    ours.load_state_dict(theirs.state_dict())
    assert ours.state[params[0]]["step"] == 1  # so the next step is damped, as torch's
    plain = _stepped(torch.optim.SGD(params, lr=0.1), params, 1)
    ravine.SGD(params, lr=0.1).load_state_dict(plain.state_dict())  # torch keeps no state


def _snapshot(opt: Any) -> Any:
    return copy.deepcopy(opt.state_dict())


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


def _tampered(torch_opt: Any, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    state = copy.deepcopy(torch_opt.state_dict())
    change(state)
    return state


def _set_state(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda sd: sd["state"][0].__setitem__(name, value)


# (case id, ravine optimizer(params), torch optimizer(params), change to its state dict,
# text the ValueError must hold)
REFUSED: list[tuple[str, Callable[..., Any], Callable[..., Any], Any, str]] = [
    (
        "another-class",
        lambda p: ravine.Adam(p),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        None,
        "torch.optim.SGD's",
    ),
    (
        "another-class-suggests",
        lambda p: ravine.Adamax(p),
        lambda p: torch.optim.Adam(p),
        None,
        "load it into ravine.Adam",
    ),
    (
        "radam-is-not-adam",
        lambda p: ravine.RAdam(p),
        lambda p: torch.optim.Adam(p),
        None,
        "torch.optim.Adam's",
    ),
    (
        "no-counterpart",
        lambda p: ravine.QHM(p),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        None,
        "ravine.QHM has no torch.optim counterpart",
    ),
    (
        "coupled-decay-into-adamw",
        lambda p: ravine.AdamW(p),
        lambda p: torch.optim.Adam(p, weight_decay=0.1),
        None,
        "Invalid decoupled_weight_decay: False",
    ),
    (
        "amsgrad-off",
        lambda p: ravine.AMSGrad(p),
        lambda p: torch.optim.Adam(p),
        None,
        "Invalid amsgrad: False",
    ),
    (
        "differentiable",
        lambda p: ravine.Adam(p),
        lambda p: torch.optim.Adam(p),
        lambda sd: sd["param_groups"][0].__setitem__("differentiable", True),
        "Invalid differentiable: True",
    ),
    (
        "sutskever-nag",
        lambda p: ravine.NAG(p, form="sutskever"),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
        None,
        "form='sutskever'",
    ),
    (
        "nag-without-nesterov",
        lambda p: ravine.NAG(p),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        None,
        "ravine.Momentum",
    ),
    (
        "mu-product-differs",
        lambda p: ravine.NAdam(p, momentum_decay=4e-3),
        lambda p: torch.optim.NAdam(p),
        _set_state("mu_product", torch.tensor(0.5)),
        "Invalid state 'mu_product' of parameter 0 of group 0: 0.5",
    ),
    (
        "state-name",
        lambda p: ravine.Adam(p),
        lambda p: torch.optim.Adam(p),
        _set_state("exp_inf", torch.zeros(3, 2)),
        "unexpected state 'exp_inf'",
    ),
    (
        "missing-state",
        lambda p: ravine.Adam(p),
        lambda p: torch.optim.Adam(p, amsgrad=True),
        lambda sd: sd["state"][0].pop("max_exp_avg_sq"),
        "missing state 'max_exp_avg_sq'",
    ),
    (
        "fractional-step",
        lambda p: ravine.Adam(p),
        lambda p: torch.optim.Adam(p),
        _set_state("step", torch.tensor(1.5)),
        "state 'step' of parameter 0 of group 0: 1.5",
    ),
    (
        "shape",
        lambda p: ravine.Adam(p),
        lambda p: torch.optim.Adam(p),
        _set_state("exp_avg", torch.zeros(2, 3)),
        "shape (2, 3)",
    ),
    (
        "nan",
        lambda p: ravine.Adam(p),
        lambda p: torch.optim.Adam(p),
        _set_state("exp_avg_sq", torch.full((3, 2), float("nan"))),
        "NaN",
    ),
    (
        "hyperparameter",
        lambda p: ravine.Adam(p),
        lambda p: torch.optim.Adam(p),
        lambda sd: sd["param_groups"][0].__setitem__("betas", (1.5, 0.9)),
        "betas[0]: 1.5",
    ),
    (
        "groups",
        lambda p: ravine.Adam(p),
        lambda p: torch.optim.Adam([{"params": p[:1]}, {"params": p[1:]}]),
        None,
        "2 parameter groups",
    ),
]


@pytest.mark.parametrize(
    ("ours", "theirs", "change", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in REFUSED],
)
def test_what_torch_cannot_mean_for_ravine_is_refused_before_anything_changes(
    ours: Callable[..., Any], theirs: Callable[..., Any], change: Any, message: str
) -> None:
    params = _two_params()
    opt = _stepped(ours(params), params)
    torch_opt = _stepped(theirs(params), params)
    state = _tampered(torch_opt, change) if change else torch_opt.state_dict()
    before = _snapshot(opt)
    with pytest.raises(ValueError, match=None) as info:
        opt.load_state_dict(state)
    assert message in str(info.value)
    assert _same(_snapshot(opt), before)
    with pytest.raises(ValueError):
        opt.validate_state_dict(state)


# (case id, ravine optimizer(params), text the ValueError of state_dict(format="torch") holds)
NOT_EXPORTED: list[tuple[str, Callable[..., Any], str]] = [
    ("no-counterpart", lambda p: ravine.QHAdam(p), "ravine.QHAdam has no torch.optim counterpart"),
    ("lookahead", lambda p: ravine.Lookahead(ravine.Adam(p)), "torch.optim has no Lookahead"),
    ("ranger", lambda p: ravine.Ranger(p), "torch.optim has no Ranger"),
    ("radam-threshold", lambda p: ravine.RAdam(p), "rho_threshold=4.0"),
    ("nadam-survey-form", lambda p: ravine.NAdam(p), "momentum_decay=None"),
    ("amsgrad-paper-form", lambda p: ravine.AMSGrad(p), "debias=False"),
    ("sutskever-nag", lambda p: ravine.NAG(p, form="sutskever"), "form='sutskever'"),
    ("transforms", lambda p: ravine.Adam(p, grad_noise=0.01), "gradient transforms"),
    ("format", lambda p: ravine.Adam(p), "Invalid format: 'onnx'"),
]


@pytest.mark.parametrize(
    ("make", "message"), [pytest.param(*case[1:], id=case[0]) for case in NOT_EXPORTED]
)
def test_what_torch_optim_cannot_express_is_not_exported(
    make: Callable[..., Any], message: str
) -> None:
    params = _two_params()
    opt = make(params)
    fmt = "onnx" if "format" in message else "torch"
    if not isinstance(opt, ravine.Lookahead):
        _stepped(opt, params)
    with pytest.raises(ValueError) as info:
        opt.state_dict(format=fmt)
    assert message in str(info.value)
    assert "ravine" in opt.state_dict() or "lookahead" in opt.state_dict()  # the default stays


def test_lbfgs_exports_torchs_own_state() -> None:
    params = [torch.nn.Parameter(torch.randn(5))]
    opt = ravine.LBFGS(params, max_iter=2)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (params[0] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    exported = opt.state_dict(format="torch")
    assert "ravine" not in exported and "ravine_steps" not in exported["state"][0]
    torch.optim.LBFGS(params, max_iter=2).load_state_dict(exported)


def test_every_catalog_torch_rule_is_a_counterpart() -> None:
    """The catalog's torch_rule column and the classes' counterparts say the same thing."""
    for row in ROWS:
        counterpart = counterpart_of(row.cls)
        if row.torch_rule is None or row.name == "lbfgs":  # LBFGS is torch's class itself
            continue
        assert counterpart is not None and row.torch_rule in counterpart.torch_classes, row.name


def test_a_subclass_with_its_own_rule_has_no_counterpart() -> None:
    class Halved(ravine.Adam):
        def update(self, p, g, *states, **kw):  # type: ignore[no-untyped-def]
            super().update(p, g.mul(0.5), *states, **kw)

    class Renamed(ravine.Adam):
        pass

    assert counterpart_of(Halved) is None
    assert counterpart_of(Renamed) is ravine.Adam.torch_counterpart
    params = _two_params()
    with pytest.raises(ValueError, match=r"Halved has no torch\.optim counterpart"):
        Halved(params).load_state_dict(_stepped(torch.optim.Adam(params), params).state_dict())


@pytest.mark.parametrize("page", ["checkpoints.md", "nonfinite.md"])
def test_the_docs_examples_run(page: str) -> None:
    """The pages' Python blocks run as written."""
    text = (Path(__file__).parent.parent / "docs" / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, f"docs/{page}", "exec"), {})
