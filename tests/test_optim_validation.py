"""Validation before anything changes, for every registered optimizer: hyperparameter kinds and
ranges (constructor, add_param_group, load_state_dict alike), parameters (dtype, listed twice),
and whole-dict checks of load_state_dict (issue 10, defects 2, 3, 5, 6 and 12)."""

from __future__ import annotations

import copy
import math
import re
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import ravine
from optim_specs import SPECS_BY_NAME
from ravine.optim import registry
from ravine.optim.hyperparameters import Interval, Kind, OrNone, Reals
from ravine.optim.wrappers import LBFGS, LBFGS_KINDS, Lookahead

NAMES = registry.names()
INF, NAN = math.inf, math.nan


def _param(*shape: int, value: float = 0.5, dtype: torch.dtype = torch.float64) -> nn.Parameter:
    return nn.Parameter(torch.full(shape, value, dtype=dtype))


def _rule(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer that holds the groups' hyperparameters (a wrapper's inner one)."""
    return opt.optimizer if isinstance(opt, Lookahead) else opt


def _kinds(opt: torch.optim.Optimizer) -> dict[str, Kind]:
    rule = _rule(opt)
    return LBFGS_KINDS if isinstance(rule, LBFGS) else type(rule).kinds()


def _hyperparameters(group: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in group.items() if k != "params"}


# -- defect 2: add_param_group validates before it adds ---------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_rejected_group_leaves_param_groups_unchanged_and_a_corrected_retry_works(
    name: str,
) -> None:
    p, q = _param(3), _param(2)
    opt = ravine.create(name, [p])
    before = [_hyperparameters(g) for g in opt.param_groups]
    with pytest.raises(ValueError, match=r"Invalid lr: -1\b"):
        opt.add_param_group({"params": [q], "lr": -1.0})
    assert [_hyperparameters(g) for g in opt.param_groups] == before
    assert [len(g["params"]) for g in opt.param_groups] == [1]
    if isinstance(opt, LBFGS):  # one group only: the retry is refused for that, not as a repeat
        with pytest.raises(ValueError, match="one parameter group"):
            opt.add_param_group({"params": [q], "lr": 0.5})
        return
    opt.add_param_group({"params": [q], "lr": 0.5})
    assert opt.param_groups[1]["params"] == [q] and opt.param_groups[1]["lr"] == 0.5


def test_rejected_group_is_not_stepped() -> None:
    """Before the fix the refused group stayed: with lr=-1 the next step ascended."""
    p, q = _param(3), _param(2)
    opt = ravine.SGD([p], lr=0.1)
    with pytest.raises(ValueError):
        opt.add_param_group({"params": [q], "lr": -1.0})
    q.grad = torch.ones_like(q)
    p.grad = torch.ones_like(p)
    opt.step()
    assert torch.equal(q.detach(), torch.full((2,), 0.5, dtype=torch.float64))


# -- defects 5 and 6: every hyperparameter is type- and range-checked --------------------------
def _every_hyperparameter() -> list[Any]:
    cases = []
    for name in NAMES:
        opt = ravine.create(name, [_param(2)])
        for key, kind in _kinds(opt).items():
            if key in _rule(opt).defaults:
                cases.append(pytest.param(name, key, kind, id=f"{name}-{key}"))
    return cases


EVERY_HYPERPARAMETER = _every_hyperparameter()


@pytest.mark.parametrize("name", NAMES)
def test_every_hyperparameter_has_a_kind(name: str) -> None:
    opt = ravine.create(name, [_param(2)])
    assert set(_rule(opt).defaults) <= set(_kinds(opt))


def _add_group(name: str, **hp: Any) -> None:
    opt = ravine.create(name, [_param(2)])
    opt.add_param_group({"params": [_param(3)], **hp})


@pytest.mark.parametrize(("name", "key", "kind"), EVERY_HYPERPARAMETER)
@pytest.mark.parametrize("value", ["x", []], ids=["str", "list"])
def test_every_hyperparameter_refuses_a_value_of_the_wrong_type(
    name: str, key: str, kind: Kind, value: Any
) -> None:
    with pytest.raises(ValueError, match=re.escape(f"Invalid {key}: {value!r} (expected ")):
        _add_group(name, **{key: value})


def _real_kinds() -> list[Any]:
    cases = []
    for case in EVERY_HYPERPARAMETER:
        name, key, kind = case.values
        element = kind.interval if isinstance(kind, Reals) else kind
        element = element.kind if isinstance(element, OrNone) else element
        if isinstance(element, Interval):
            field = f"{key}[0]" if isinstance(kind, Reals) else key
            cases.append(pytest.param(name, key, kind, element, field, id=case.id))
    return cases


def _with(kind: Kind, value: Any) -> Any:
    """``value`` in the place of a real of ``kind`` (the first element of a tuple)."""
    if isinstance(kind, Reals):
        return (value,) + (0.5,) * ((kind.arity or 1) - 1)
    return value


@pytest.mark.parametrize(("name", "key", "kind", "element", "field"), _real_kinds())
@pytest.mark.parametrize("value", [NAN, INF, -INF], ids=["nan", "inf", "-inf"])
def test_every_real_hyperparameter_refuses_nan_and_inf(
    name: str, key: str, kind: Kind, element: Interval, field: str, value: float
) -> None:
    if element.allow_inf and value == INF:
        pytest.skip(f"{name}'s {key} takes inf on purpose")
    with pytest.raises(ValueError, match=re.escape(f"Invalid {field}: {value!r}")):
        _add_group(name, **{key: _with(kind, value)})


INVALID = [
    # name, hyperparameters, text the error must contain
    ("adam", {"lr": (0.1, 0.2)}, "Invalid lr: (0.1, 0.2) (expected a real number in [0, inf))"),
    ("adam", {"eps": []}, "Invalid eps: [] (expected a real number in (0, inf))"),
    ("adam", {"betas": (0.9,)}, "Invalid betas: (0.9,) (expected a tuple of 2 real numbers"),
    ("adam", {"betas": (0.9, 0.99, 0.5)}, "Invalid betas: (0.9, 0.99, 0.5) (expected a tuple"),
    ("adam", {"betas": 0.9}, "Invalid betas: 0.9 (expected a tuple of 2 real numbers"),
    ("adam", {"betas": (0.9, "0.999")}, "Invalid betas[1]: '0.999' (expected a real number"),
    ("qhadam", {"nus": (0.7,)}, "Invalid nus: (0.7,)"),
    ("rprop", {"etas": (0.5, 1.2, 2.0)}, "Invalid etas: (0.5, 1.2, 2.0)"),
    ("aggmo", {"betas": 0.9}, "Invalid betas: 0.9 (expected a tuple of one or more real numbers"),
    ("sgd", {"maximize": "no"}, "Invalid maximize: 'no' (expected True or False)"),
    ("sgd", {"maximize": 0}, "Invalid maximize: 0 (expected True or False)"),
    ("sgd", {"momentum": 0.9, "nesterov": "yes"}, "Invalid nesterov: 'yes'"),
    ("adam", {"amsgrad": 1}, "Invalid amsgrad: 1 (expected True or False)"),
    ("adam", {"decoupled_weight_decay": "false"}, "Invalid decoupled_weight_decay: 'false'"),
    ("rmsprop", {"centered": None}, "Invalid centered: None"),
    ("amsgrad", {"debias": "True"}, "Invalid debias: 'True'"),
    ("adabound", {"amsbound": 1.0}, "Invalid amsbound: 1.0"),
    ("adabound", {"sqrt_t_decay": "no"}, "Invalid sqrt_t_decay: 'no'"),
    ("radam", {"decoupled_weight_decay": "no"}, "Invalid decoupled_weight_decay: 'no'"),
    ("sgd", {"lr": INF}, "Invalid lr: inf (expected a real number in [0, inf))"),
    ("adam", {"weight_decay": INF}, "Invalid weight_decay: inf"),
    ("adam", {"eps": NAN}, "Invalid eps: nan"),
    ("adam", {"betas": (NAN, 0.999)}, "Invalid betas[0]: nan"),
    ("nadam", {"momentum_decay": INF}, "Invalid momentum_decay: inf"),
    ("radam", {"rho_threshold": INF}, "Invalid rho_threshold: inf"),
    ("rprop", {"step_sizes": (INF, INF)}, "Invalid step_sizes: (inf, inf)"),
    ("delay_tolerant_adagrad", {"max_delay": 2.0}, "Invalid max_delay: 2.0 (expected an integer"),
    ("lbfgs", {"max_iter": 2.5}, "Invalid max_iter: 2.5 (expected an integer in [1, inf))"),
    ("lbfgs", {"history_size": True}, "Invalid history_size: True"),
    ("lbfgs", {"tolerance_grad": INF}, "Invalid tolerance_grad: inf"),
    ("lookahead", {"k": 2.0}, "Invalid k: 2.0 (expected an integer in [1, inf))"),
    ("lookahead", {"alpha": NAN}, "Invalid alpha: nan"),
    ("ranger", {"k": True}, "Invalid k: True"),
    ("adam", {"lr": torch.tensor([0.1, 0.2])}, "Invalid lr: tensor([0.1000, 0.2000])"),
    ("adam", {"lr": torch.tensor(0.1j)}, "Invalid lr:"),
    ("adam", {"lr": np.float32(-1e-3)}, "Invalid lr:"),
]


@pytest.mark.parametrize(
    ("name", "hp", "text"), [pytest.param(*c, id=f"{c[0]}-{c[2][:40]}") for c in INVALID]
)
def test_invalid_hyperparameter_is_refused_naming_it(name: str, hp: dict, text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(text)):
        ravine.create(name, [_param(2)], **hp)


def test_a_value_of_the_wrong_type_is_also_a_type_error() -> None:
    with pytest.raises(TypeError, match="maximize"):
        ravine.SGD([_param(2)], maximize="no")


def test_rprop_takes_no_weight_decay_in_an_added_group_either() -> None:
    opt = ravine.Rprop([_param(2)])
    with pytest.raises(ValueError, match=re.escape("Invalid weight_decay: 0.1")):
        opt.add_param_group({"params": [_param(3)], "weight_decay": 0.1})
    assert len(opt.param_groups) == 1


ACCEPTED = [
    # name, hyperparameters, key, the value the group holds
    ("adam", {"lr": np.float32(1e-3)}, "lr", float(np.float32(1e-3))),
    ("adam", {"lr": np.float64(1e-3)}, "lr", 1e-3),
    ("adam", {"betas": [0.8, np.float32(0.5)]}, "betas", (0.8, 0.5)),
    ("adam", {"amsgrad": np.bool_(True)}, "amsgrad", True),
    ("sgd", {"lr": 1}, "lr", 1),
    ("delay_tolerant_adagrad", {"max_delay": np.int64(2)}, "max_delay", 2),
    ("aggmo", {"betas": [0.0, 0.9]}, "betas", (0.0, 0.9)),
    ("rprop", {"step_sizes": (1e-6, INF)}, "step_sizes", (1e-6, INF)),  # inf: no upper clamp
    ("nadam", {"momentum_decay": None}, "momentum_decay", None),
    ("lbfgs", {"max_eval": np.int64(30)}, "max_eval", 30),
]


@pytest.mark.parametrize(
    ("name", "hp", "key", "stored"),
    [pytest.param(*c, id=f"{c[0]}-{c[2]}-{type(c[1][c[2]]).__name__}") for c in ACCEPTED],
)
def test_numpy_scalars_and_lists_are_accepted_as_python_values(
    name: str, hp: dict, key: str, stored: Any
) -> None:
    opt = ravine.create(name, [_param(2)], **hp)
    value = opt.param_groups[0][key]
    assert value == stored and type(value) is type(stored)
    q = _param(3)
    if not isinstance(opt, LBFGS):
        opt.add_param_group({"params": [q], **hp})
        assert opt.param_groups[1][key] == stored and type(opt.param_groups[1][key]) is type(stored)


@pytest.mark.parametrize("impl", ["foreach", "loop"])
def test_a_one_element_tensor_lr_is_kept_and_used(impl: str) -> None:
    """As torch.optim takes it: a scheduler may write the tensor in place."""
    p = _param(3)
    lr = torch.tensor(0.1, dtype=torch.float64)
    opt = ravine.SGD([p], lr=lr, impl=impl)
    assert opt.param_groups[0]["lr"] is lr
    p.grad = torch.ones_like(p)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3,), 0.4, dtype=torch.float64))


def test_client_code_may_still_set_group_entries_between_steps() -> None:
    """GradScaler, Lightning and schedulers write groups directly: no check per step."""
    p = _param(3)
    opt = ravine.SGD([p], lr=0.1)
    opt.param_groups[0]["lr"] = np.float32(0.25)
    p.grad = torch.ones_like(p)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3,), 0.25, dtype=torch.float64))


# -- defect 12: parameters -----------------------------------------------------------------------
IMPLS = ["foreach", "loop", "compiled"]


def _create(name: str, params: Any, impl: str) -> torch.optim.Optimizer:
    if impl not in SPECS_BY_NAME[name].impls:  # declared by the spec (L-BFGS, learned rules)
        pytest.skip(f"{name} has no impl={impl!r}")
    return ravine.create(name, params, impl=impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool], ids=str)
def test_integer_parameters_are_refused_naming_group_index_and_dtype(
    name: str, impl: str, dtype: torch.dtype
) -> None:
    bad = torch.zeros(3, dtype=dtype)
    text = f"Invalid parameter 1 of group 0: dtype {dtype}"
    with pytest.raises(ValueError, match=re.escape(text)):
        _create(name, [_param(2), bad], impl)
    opt = _create(name, [_param(2)], impl)
    if isinstance(opt, LBFGS):
        return
    with pytest.raises(
        ValueError, match=re.escape(f"Invalid parameter 0 of group 1: dtype {dtype}")
    ):
        opt.add_param_group({"params": [bad]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", NAMES)
def test_a_parameter_listed_twice_is_refused(name: str, impl: str) -> None:
    p, q = _param(2), _param(3)
    with pytest.raises(ValueError, match="parameter 2 of group 0: it is parameter 0 of group 0"):
        _create(name, [p, q, p], impl)
    if name == "lbfgs":
        return
    with pytest.raises(ValueError, match="parameter 0 of group 1: it is parameter 1 of group 0"):
        _create(name, [{"params": [p, q]}, {"params": [q]}], impl)
    opt = _create(name, [p], impl)
    with pytest.raises(ValueError, match="parameter 1 of group 1: it is parameter 0 of group 0"):
        opt.add_param_group({"params": [q, p]})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [q]})  # the corrected retry


def test_a_parameter_listed_twice_around_a_torch_optimizer_is_refused() -> None:
    p, q = _param(2), _param(3)
    text = "parameter 1 of group 0: it is parameter 0 of group 0"
    # torch.optim's own warning, then ravine refuses
    with pytest.raises(ValueError, match=text), pytest.warns(UserWarning):
        Lookahead(torch.optim.SGD([p, p], lr=0.1))
    opt = Lookahead(torch.optim.SGD([p], lr=0.1))
    with pytest.raises(ValueError, match=re.escape("dtype torch.int64")):
        opt.add_param_group({"params": [q, torch.zeros(2, dtype=torch.int64)]})
    assert len(opt.param_groups) == 1


def test_complex_parameters_are_still_accepted() -> None:
    z = nn.Parameter(torch.ones(3, dtype=torch.complex128))
    opt = ravine.Adam([z], lr=0.1)
    z.grad = torch.ones_like(z)
    opt.step()
    assert opt.state[z]["m"].is_complex()


# -- defect 3: load_state_dict checks the whole dict first --------------------------------------
def _trained(name: str, steps: int = 3, **hp: Any) -> tuple[list[nn.Parameter], Any]:
    torch.manual_seed(0)
    params = [_param(2, 3), _param(4), _param(3)]
    opt = ravine.create(name, params, **hp)
    for _ in range(steps):

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = sum((p * p).sum() for p in params[:2])  # params[2] never gets a gradient
            loss.backward()
            return loss

        opt.step(closure)
    return params, opt


def _inner(sd: dict[str, Any]) -> dict[str, Any]:
    return sd.get("inner", sd)


def _set_lr(sd: dict[str, Any], value: Any) -> None:
    _inner(sd)["param_groups"][0]["lr"] = value


def _set_state(name_of: str, make: Any):
    def corrupt(sd: dict[str, Any]) -> None:
        state = _inner(sd)["state"]
        key = next(iter(state))
        name = next(n for n in state[key] if n != "step") if name_of == "first" else name_of
        state[key][name] = make(state[key].get(name))

    return corrupt


def _drop_group_param(sd: dict[str, Any]) -> None:
    _inner(sd)["param_groups"][0]["params"].pop()


def _extra_group(sd: dict[str, Any]) -> None:
    inner = _inner(sd)
    inner["param_groups"].append({**inner["param_groups"][0], "params": [99]})


def _drop_first_state_tensor(sd: dict[str, Any]) -> None:
    state = _inner(sd)["state"]
    entry = state[next(iter(state))]
    del entry[next(n for n in entry if n != "step")]


CORRUPTIONS = [
    # id, corruption, text the ValueError must contain
    ("lr-negative", lambda sd: _set_lr(sd, -5.0), "group 0 of the state_dict: Invalid lr: -5.0"),
    ("lr-tuple", lambda sd: _set_lr(sd, (0.1, 0.2)), "Invalid lr: (0.1, 0.2)"),
    ("lr-inf", lambda sd: _set_lr(sd, INF), "Invalid lr: inf"),
    ("group-count", _extra_group, "has 2 parameter groups"),
    ("group-size", _drop_group_param, "group 0 of the state_dict has 2 parameters"),
    (
        "shape-broadcastable",
        _set_state("first", lambda v: v.reshape(-1)[:1].clone()),
        "shape (1,) (expected the parameter's shape (2, 3))",
    ),
    ("dtype-integer", _set_state("first", lambda v: v.long()), "dtype torch.int64"),
    ("not-a-tensor", _set_state("first", lambda v: v.tolist()), "(expected a tensor)"),
    ("nan-in-state", _set_state("first", lambda v: v * NAN), "holds NaN or Inf"),
    ("step-negative", _set_state("step", lambda v: -1), "Invalid state 'step' of parameter 0"),
    ("step-float", _set_state("step", lambda v: 2.5), "Invalid state 'step' of parameter 0"),
    ("step-str", _set_state("step", lambda v: "3"), "Invalid state 'step' of parameter 0"),
    ("unexpected-state", _set_state("exp_avg", lambda v: torch.zeros(2, 3)), "'exp_avg'"),
    ("missing-state", _drop_first_state_tensor, "missing state"),
]

# Optimizers whose state has a tensor after three steps on the two parameters with gradients.
STATEFUL = [n for n in NAMES if n not in ("sgd", "lbfgs")]


def _load_cases() -> list[Any]:
    cases = []
    for name in STATEFUL:
        for cid, corrupt, text in CORRUPTIONS:
            cases.append(pytest.param(name, corrupt, text, id=f"{name}-{cid}"))
    return cases


@pytest.mark.parametrize(("name", "corrupt", "text"), _load_cases())
def test_load_state_dict_refuses_a_corrupt_dict_and_changes_nothing(
    name: str, corrupt: Any, text: str
) -> None:
    _, source = _trained(name)
    saved = copy.deepcopy(source.state_dict())
    corrupt(saved)
    _, opt = _trained(name, steps=2)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=re.escape(text)):
        opt.load_state_dict(saved)
    _assert_same(opt.state_dict(), before)


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("name", NAMES)
def test_a_valid_state_dict_still_round_trips(name: str) -> None:
    _, source = _trained(name)
    saved = source.state_dict()
    _, opt = _trained(name, steps=1)
    opt.load_state_dict(copy.deepcopy(saved))
    _assert_same(opt.state_dict(), saved)
    # Again into the same optimizer: torch's loader adds "differentiable" to its defaults.
    opt.load_state_dict(copy.deepcopy(saved))
    _assert_same(opt.state_dict(), saved)


def test_torch_adams_state_dict_loads_with_its_state_renamed() -> None:
    """torch.optim's names map to ravine's (tests/test_torch_format.py checks every rule)."""
    params = [_param(2, 3)]
    theirs = torch.optim.Adam(params, lr=0.1)
    params[0].grad = torch.ones(2, 3, dtype=torch.float64)
    theirs.step()
    opt = ravine.Adam(params, lr=0.1)
    opt.load_state_dict(theirs.state_dict())
    assert set(opt.state[params[0]]) == {"step", "m", "v"}
    # in a ravine-format dict (it has the "ravine" record) torch's names are refused
    mixed = {**opt.state_dict(), "state": theirs.state_dict()["state"]}
    text = "unexpected state 'exp_avg' for parameter 0 of group 0; ravine.Adam keeps m, v"
    with pytest.raises(ValueError, match=re.escape(text)):
        opt.load_state_dict(mixed)


def test_a_pre_hook_can_adapt_a_dict_before_the_check() -> None:
    """torch.optim's load_state_dict pre-hooks still run first, once: here one renames torch
    Adam's state so that ravine.Adam accepts it."""
    params = [_param(2, 3)]
    theirs = torch.optim.Adam(params, lr=0.1)
    params[0].grad = torch.ones(2, 3, dtype=torch.float64)
    theirs.step()
    opt = ravine.Adam(params, lr=0.1)
    calls = []

    def rename(optimizer: Any, sd: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        names = {"exp_avg": "m", "exp_avg_sq": "v", "step": "step"}
        state = {k: {names[n]: v for n, v in s.items()} for k, s in sd["state"].items()}
        return {**sd, "state": state}

    opt.register_load_state_dict_pre_hook(rename)
    opt.load_state_dict(theirs.state_dict())
    assert calls == [1]
    assert opt.state[params[0]]["step"] == 1  # torch's 0-d tensor step, as an int
    assert torch.equal(opt.state[params[0]]["m"], theirs.state[params[0]]["exp_avg"])


@pytest.mark.parametrize(
    ("saved_name", "name", "text"),
    [
        ("adamw", "adam", "state_dict was saved from ravine.AdamW, not ravine.Adam"),
        ("adam", "nadam", "saved from ravine.Adam, not ravine.NAdam"),
        ("lookahead", "ranger", "saved from ravine.Lookahead, not ravine.Ranger"),
        ("adam", "lbfgs", "saved from ravine.Adam, not ravine.LBFGS"),
    ],
)
def test_another_optimizers_state_dict_is_refused(saved_name: str, name: str, text: str) -> None:
    _, source = _trained(saved_name)
    _, opt = _trained(name, steps=1)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=re.escape(text)):
        opt.load_state_dict(source.state_dict())
    _assert_same(opt.state_dict(), before)


@pytest.mark.parametrize(
    ("name", "hp", "text"),
    [
        ("adam", {"betas": (1.5, 0.999)}, "group 0 of the state_dict: Invalid betas[0]: 1.5"),
        ("adam", {"amsgrad": "no"}, "Invalid amsgrad: 'no'"),
        ("sgd", {"nesterov": True, "momentum": 0.0}, "Invalid nesterov=True"),
        ("aggmo", {"betas": ()}, "Invalid betas: ()"),
        ("rprop", {"etas": (1.5, 1.2)}, "Invalid etas"),
        ("delay_tolerant_adagrad", {"max_delay": -1}, "Invalid max_delay: -1"),
        ("lbfgs", {"lr": -5.0}, "group 0 of the state_dict: Invalid lr: -5.0"),
        ("lbfgs", {"line_search_fn": "armijo"}, "Invalid line_search_fn: 'armijo'"),
    ],
)
def test_load_state_dict_checks_hyperparameters_as_the_constructor(
    name: str, hp: dict, text: str
) -> None:
    _, source = _trained(name)
    saved = copy.deepcopy(source.state_dict())
    saved["param_groups"][0].update(hp)
    _, opt = _trained(name, steps=1)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=re.escape(text)):
        opt.load_state_dict(saved)
    _assert_same(opt.state_dict(), before)


def test_a_missing_hyperparameter_is_named() -> None:
    _, source = _trained("adam")
    saved = copy.deepcopy(source.state_dict())
    del saved["param_groups"][0]["eps"]
    _, opt = _trained("adam", steps=1)
    with pytest.raises(ValueError, match=r"group 0 of the state_dict lacks hyperparameter.* eps"):
        opt.load_state_dict(saved)


def test_a_scheduler_entry_in_a_group_round_trips() -> None:
    _, opt = _trained("adam")
    torch.optim.lr_scheduler.StepLR(opt, step_size=2)  # adds initial_lr to every group
    saved = copy.deepcopy(opt.state_dict())
    _, fresh = _trained("adam", steps=1)
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["initial_lr"] == saved["param_groups"][0]["initial_lr"]


# -- wrappers -------------------------------------------------------------------------------------
def _slow(sd: dict[str, Any]) -> dict[int, torch.Tensor]:
    return sd["lookahead"]["slow"]


WRAPPER_CORRUPTIONS = [
    ("lookahead", lambda sd: sd["lookahead"].update(k=0), "Invalid k: 0"),
    ("lookahead", lambda sd: sd["lookahead"].update(alpha=NAN), "Invalid alpha: nan"),
    ("lookahead", lambda sd: sd["lookahead"].update(steps=-2), "Invalid lookahead steps: -2"),
    (
        "lookahead",
        lambda sd: _slow(sd).update({0: torch.zeros(3)}),
        "slow weights of parameter 0 of group 0: shape (3,)",
    ),
    ("lookahead", lambda sd: _slow(sd).update({7: torch.zeros(3)}), "slow weights for parameter 7"),
    ("lookahead", lambda sd: _set_lr(sd, -5.0), "Invalid lr: -5.0"),
    ("ranger", lambda sd: _inner(sd)["param_groups"][0].update(betas=(1.5, 0.9)), "betas[0]: 1.5"),
    (
        "ranger",
        _set_state("first", lambda v: v.reshape(-1)[:1].clone()),
        "shape (1,) (expected the parameter's shape (2, 3))",
    ),
    ("lbfgs", lambda sd: sd["state"][0].update(d=torch.zeros(1)), "state 'd' of parameter 0"),
    ("lbfgs", lambda sd: sd["state"][0].update(exp_avg=torch.zeros(1)), "unexpected state"),
    ("lbfgs", lambda sd: sd["state"][0].update(n_iter=-1), "Invalid state 'n_iter'"),
    ("lbfgs", lambda sd: sd["state"][0]["old_dirs"].append(torch.zeros(2)), "old_dirs"),
]


@pytest.mark.parametrize(
    ("name", "corrupt", "text"),
    [pytest.param(*c, id=f"{c[0]}-{c[2][:30]}") for c in WRAPPER_CORRUPTIONS],
)
def test_wrappers_refuse_a_corrupt_dict_and_change_nothing(
    name: str, corrupt: Any, text: str
) -> None:
    hp = {"inner": "adam", "k": 2} if name == "lookahead" else {}
    _, source = _trained(name, steps=3, **hp)
    saved = copy.deepcopy(source.state_dict())
    corrupt(saved)
    _, opt = _trained(name, steps=1, **hp)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=re.escape(text)):
        opt.load_state_dict(saved)
    _assert_same(opt.state_dict(), before)


def test_transform_gradients_checks_its_transforms_and_inner_state_first() -> None:
    from ravine.optim.wrappers import GradientNoise, TransformGradients

    p = _param(2, 3)
    opt = TransformGradients(ravine.Adam([p], lr=0.1), GradientNoise(0.01, seed=0))
    p.grad = torch.ones_like(p)
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    saved["inner"]["param_groups"][0]["lr"] = -5.0
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=re.escape("Invalid lr: -5.0")):
        opt.load_state_dict(saved)
    _assert_same(opt.state_dict(), before)
    saved = copy.deepcopy(before)
    saved["grad_transforms"][0]["t"] = -1
    with pytest.raises(ValueError, match="Invalid GradientNoise t: -1"):
        opt.load_state_dict(saved)


def test_gradient_noise_inside_an_optimizer_is_checked_before_anything_loads() -> None:
    p = _param(2, 3)
    opt = ravine.Adam([p], lr=0.1, grad_noise=0.01)
    p.grad = torch.ones_like(p)
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    saved["ravine"]["grad_transforms"][0]["eta"] = -1.0
    p.grad = torch.ones_like(p)
    opt.step()
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=re.escape("Invalid eta: -1.0")):
        opt.load_state_dict(saved)
    _assert_same(opt.state_dict(), before)


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"a": "0.1"}, "Invalid a: '0.1' (expected a real number in (0, 1))"),
        ({"a": NAN}, "Invalid a: nan"),
        ({"k": 2.0}, "Invalid k: 2.0 (expected an integer in [1, inf))"),
    ],
)
def test_aggmo_exponential_form_checks_its_arguments(kwargs: dict, text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(text)):
        ravine.AggMo.from_exp_form([_param(2)], **kwargs)


@pytest.mark.parametrize(
    "transform", [1, "noise", lambda params, grads: grads], ids=["int", "str", "bare-function"]
)
def test_a_gradient_transform_that_is_not_one_is_refused(transform):
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(TypeError, match=r"Invalid grad_transforms\[0\]"):
        ravine.Adam([p], grad_transforms=[transform])
