"""Every constructor default of every registered optimizer, pinned against its source.

The table below is written from the papers and torch.optim, independently of ravine's code (and of
src/ravine/optim/catalog.py, which reads the defaults from the signatures): a changed default
fails here until the table (and the source it cites) changes too. Each default is checked in the
class signature, in what the constructed optimizer holds (``defaults``, ``param_groups`` or an
attribute) and, where the source is torch.optim, in torch's own signature.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import ravine
from ravine.learned import L2L, LearnedMLP
from ravine.optim import registry


@dataclass(frozen=True)
class D:
    """A default: its value, where it comes from, and the torch.optim class that shares it."""

    value: Any
    source: str
    torch: str | None = None  # torch.optim class whose default this is (cross-checked)
    built: Any = inspect.Parameter.empty  # what construction stores, when it differs from value


def T(value: Any, cls: str) -> D:
    """A default taken from torch.optim.<cls>."""
    return D(value, f"torch.optim.{cls}", torch=cls)


@dataclass(frozen=True)
class Row:
    cls: type
    defaults: dict[str, D]
    # Group entries the class sets itself (not constructor arguments), e.g. AdamW's decoupling.
    fixed: dict[str, Any]


ADAM_PAPER = "Kingma & Ba 2015, Algorithm 1"
SURVEY = "Ruder 2016 (the survey)"

ROWS: dict[str, Row] = {
    "sgd": Row(
        ravine.SGD,
        {
            "lr": T(1e-3, "SGD"),
            "momentum": T(0.0, "SGD"),
            "dampening": T(0.0, "SGD"),
            "weight_decay": T(0.0, "SGD"),
            "nesterov": T(False, "SGD"),
        },
        {},
    ),
    "momentum": Row(
        ravine.Momentum,
        {
            "lr": T(1e-3, "SGD"),
            "momentum": D(0.9, f"{SURVEY}, section 4.1: gamma usually 0.9"),
            "dampening": T(0.0, "SGD"),
            "weight_decay": T(0.0, "SGD"),
        },
        {"nesterov": False},
    ),
    "nag": Row(
        ravine.NAG,
        {
            "lr": T(1e-3, "SGD"),
            "momentum": D(0.9, f"{SURVEY}, section 4.2: gamma around 0.9"),
            "weight_decay": T(0.0, "SGD"),
            "form": D("lookahead", "ravine: torch's nesterov=True form, needs no closure"),
        },
        {"nesterov": True, "dampening": 0.0},
    ),
    "adagrad": Row(
        ravine.Adagrad,
        {
            "lr": T(1e-2, "Adagrad"),
            "lr_decay": T(0.0, "Adagrad"),
            "weight_decay": T(0.0, "Adagrad"),
            "initial_accumulator_value": T(0.0, "Adagrad"),
            "eps": T(1e-10, "Adagrad"),
        },
        {},
    ),
    "adadelta": Row(
        ravine.Adadelta,
        {
            "lr": D(
                1.0, "Zeiler 2012, Algorithm 1 has no learning rate; = torch", torch="Adadelta"
            ),
            "rho": D(0.9, f"{SURVEY} and torch (Zeiler used 0.95)", torch="Adadelta"),
            "eps": D(1e-6, "Zeiler 2012, section 4.1; = torch", torch="Adadelta"),
            "weight_decay": T(0.0, "Adadelta"),
        },
        {},
    ),
    "rmsprop": Row(
        ravine.RMSprop,
        {
            "lr": D(1e-3, f"Hinton 2012, lecture 6e, as {SURVEY} section 4.5 quotes (torch: 1e-2)"),
            "alpha": D(0.9, "Hinton 2012, lecture 6e (torch: 0.99)"),
            "eps": T(1e-8, "RMSprop"),
            "weight_decay": T(0.0, "RMSprop"),
            "momentum": T(0.0, "RMSprop"),
            "centered": T(False, "RMSprop"),
        },
        {},
    ),
    "rprop": Row(
        ravine.Rprop,
        {
            "lr": D(0.1, "Riedmiller & Braun 1993: Delta_0 = 0.1 (torch: 0.01)"),
            "etas": D((0.5, 1.2), "Riedmiller & Braun 1993: eta-, eta+", torch="Rprop"),
            "step_sizes": D((1e-6, 50.0), "Riedmiller & Braun 1993: Delta_min, max", torch="Rprop"),
        },
        {},
    ),
    "adam": Row(
        ravine.Adam,
        {
            "lr": D(1e-3, ADAM_PAPER, torch="Adam"),
            "betas": D((0.9, 0.999), ADAM_PAPER, torch="Adam"),
            "eps": D(1e-8, ADAM_PAPER, torch="Adam"),
            "weight_decay": T(0.0, "Adam"),
            "amsgrad": T(False, "Adam"),
            "decoupled_weight_decay": T(False, "Adam"),
        },
        {},
    ),
    "amsgrad": Row(
        ravine.AMSGrad,
        {
            "lr": D(1e-3, f"Reddi et al. 2018 use Adam's; {ADAM_PAPER}"),
            "betas": D((0.9, 0.999), f"Reddi et al. 2018 use Adam's; {ADAM_PAPER}"),
            "eps": D(1e-8, f"{SURVEY}'s AMSGrad; {ADAM_PAPER}"),
            "weight_decay": T(0.0, "Adam"),
            "debias": D(False, "Reddi et al. 2018, Algorithm 2: no bias correction"),
        },
        {},
    ),
    "adamw": Row(
        ravine.AdamW,
        {
            "lr": D(1e-3, ADAM_PAPER, torch="AdamW"),
            "betas": D((0.9, 0.999), ADAM_PAPER, torch="AdamW"),
            "eps": D(1e-8, ADAM_PAPER, torch="AdamW"),
            "weight_decay": T(1e-2, "AdamW"),
            "amsgrad": T(False, "AdamW"),
        },
        {"decoupled_weight_decay": True},
    ),
    "adamax": Row(
        ravine.AdaMax,
        {
            "lr": D(2e-3, "Kingma & Ba 2015, section 7.1", torch="Adamax"),
            "betas": D((0.9, 0.999), "Kingma & Ba 2015, section 7.1", torch="Adamax"),
            "eps": T(1e-8, "Adamax"),
            "weight_decay": T(0.0, "Adamax"),
        },
        {},
    ),
    "nadam": Row(
        ravine.NAdam,
        {
            "lr": D(2e-3, "Dozat 2016 (lr 0.002); = torch", torch="NAdam"),
            "betas": T((0.9, 0.999), "NAdam"),
            "eps": T(1e-8, "NAdam"),
            "weight_decay": T(0.0, "NAdam"),
            "momentum_decay": D(None, f"{SURVEY}'s form, no momentum schedule (torch: 4e-3)"),
            "decoupled_weight_decay": T(False, "NAdam"),
        },
        {},
    ),
    "qhm": Row(
        ravine.QHM,
        {
            "lr": D(1e-2, "ravine: Momentum's effective step, 1e-3 / (1 - 0.9)"),
            "momentum": D(0.999, "Ma & Yarats 2019, rule of thumb beta = 0.999"),
            "nu": D(0.7, "Ma & Yarats 2019, rule of thumb nu = 0.7"),
            "weight_decay": D(0.0, "ravine: no decay (the paper's QHM has none)"),
        },
        {},
    ),
    "qhadam": Row(
        ravine.QHAdam,
        {
            "lr": D(1e-3, f"as Adam, {ADAM_PAPER}"),
            "betas": D((0.995, 0.999), "Ma & Yarats 2019, recommended"),
            "nus": D((0.7, 1.0), "Ma & Yarats 2019, recommended"),
            "eps": D(1e-8, f"as Adam, {ADAM_PAPER}"),
            "weight_decay": D(0.0, "ravine: no decay"),
            "decoupled_weight_decay": D(False, "qhoptim's decouple_weight_decay default"),
        },
        {},
    ),
    "aggmo": Row(
        ravine.AggMo,
        {
            "lr": D(1e-3, "ravine: as Momentum (the paper tunes it per task)"),
            "betas": D((0.0, 0.9, 0.99), "Lucas et al. 2019, recommended damping vector K=3"),
            "weight_decay": D(0.0, "ravine: no decay"),
        },
        {},
    ),
    "adabound": Row(
        ravine.AdaBound,
        {
            "lr": D(1e-3, "Luo et al. 2019 (Adam's)"),
            "betas": D((0.9, 0.999), "Luo et al. 2019 (Adam's)"),
            "final_lr": D(0.1, "Luo et al. 2019, experiments; authors' code"),
            "gamma": D(1e-3, "Luo et al. 2019, bound functions: 1 - beta2"),
            "eps": D(1e-8, "authors' code (github.com/Luolc/AdaBound)"),
            "weight_decay": D(0.0, "authors' code"),
            "amsbound": D(False, "Luo et al. 2019, Algorithm 2 (AdaBound)"),
            "sqrt_t_decay": D(True, "Luo et al. 2019, Algorithm 2: eta_t / sqrt(t)"),
            "debias": D(False, "Luo et al. 2019, Algorithm 2: no bias correction"),
        },
        {},
    ),
    "amsbound": Row(
        ravine.AMSBound,
        {
            "lr": D(1e-3, "Luo et al. 2019 (Adam's)"),
            "betas": D((0.9, 0.999), "Luo et al. 2019 (Adam's)"),
            "final_lr": D(0.1, "Luo et al. 2019, experiments; authors' code"),
            "gamma": D(1e-3, "Luo et al. 2019, bound functions: 1 - beta2"),
            "eps": D(1e-8, "authors' code"),
            "weight_decay": D(0.0, "authors' code"),
            "sqrt_t_decay": D(True, "Luo et al. 2019, Algorithm 3: eta_t / sqrt(t)"),
            "debias": D(False, "Luo et al. 2019, Algorithm 3: no bias correction"),
        },
        {"amsbound": True},
    ),
    "radam": Row(
        ravine.RAdam,
        {
            "lr": D(1e-3, "Liu et al. 2020; = torch", torch="RAdam"),
            "betas": D((0.9, 0.999), "Liu et al. 2020; = torch", torch="RAdam"),
            "eps": D(1e-8, "Liu et al. 2020 (code); = torch", torch="RAdam"),
            "weight_decay": T(0.0, "RAdam"),
            "rho_threshold": D(4.0, "Liu et al. 2020, Algorithm 2: rho_t > 4 (torch: 5)"),
            "decoupled_weight_decay": T(False, "RAdam"),
        },
        {},
    ),
    "lookahead": Row(
        ravine.Lookahead,
        {
            "k": D(5, "Zhang et al. 2019, experiments: k = 5"),
            "alpha": D(0.5, "Zhang et al. 2019, experiments: alpha = 0.5"),
            "inner": D("adam", "ravine: Adam as the inner optimizer"),
        },
        {},
    ),
    "ranger": Row(
        ravine.Ranger,
        {
            "lr": D(1e-3, "Wright 2019, Ranger code"),
            "betas": D((0.95, 0.999), "Wright 2019, Ranger code"),
            "eps": D(1e-5, "Wright 2019, Ranger code"),
            "weight_decay": D(0.0, "Wright 2019, Ranger code"),
            "rho_threshold": D(5.0, "Wright 2019 and the RAdam authors' code: rho_t > 5"),
            "k": D(6, "Wright 2019, Ranger code"),
            "alpha": D(0.5, "Wright 2019, Ranger code"),
        },
        {"decoupled_weight_decay": False},
    ),
    "delay_tolerant_adagrad": Row(
        ravine.DelayTolerantAdagrad,
        {
            "lr": T(1e-2, "Adagrad"),
            "eps": T(1e-10, "Adagrad"),
            "initial_accumulator_value": T(0.0, "Adagrad"),
            "weight_decay": T(0.0, "Adagrad"),
            "max_delay": D(0, "ravine: no stale sums kept, plain Adagrad"),
        },
        {},
    ),
    "lbfgs": Row(
        ravine.LBFGS,
        {
            "lr": T(1.0, "LBFGS"),
            "max_iter": T(20, "LBFGS"),
            "max_eval": D(None, "torch.optim.LBFGS: max_iter * 5 // 4", "LBFGS", built=25),
            "tolerance_grad": T(1e-7, "LBFGS"),
            "tolerance_change": T(1e-9, "LBFGS"),
            "history_size": T(100, "LBFGS"),
            "line_search_fn": T(None, "LBFGS"),
            "impl": D("foreach", "ravine: the other optimizers' default impl"),
        },
        {},
    ),
    "l2l": Row(
        L2L,
        {
            "lr": D(1.0, "ravine: the step the network was meta-trained to take"),
            "weight_decay": D(0.0, "ravine: none"),
            "weights": D("quadratic", "ravine: the bundled weights (Andrychowicz et al. 3.1)"),
        },
        {},
    ),
    "learned_mlp": Row(
        LearnedMLP,
        {
            "lr": D(1.0, "ravine: the step the network was meta-trained to take"),
            "weight_decay": D(0.0, "ravine: none"),
            "weights": D("digits", "ravine: the bundled weights"),
        },
        {},
    ),
}

# Keyword options every ravine.Optimizer takes (ravine's choices, README "Options").
BASE_OPTIONS: dict[str, Any] = {
    "maximize": False,
    "impl": "foreach",
    "foreach": None,
    "nonfinite": "raise",
    "grad_transforms": (),
    "grad_noise": None,
}
# Annealed gradient noise (Neelakantan et al. 2015, section 2).
NOISE: dict[str, D] = {
    "eta": D(0.01, "Neelakantan et al. 2015, section 2: smallest of {0.01, 0.3, 1.0}"),
    "gamma": D(0.55, "Neelakantan et al. 2015, section 2"),
    "seed": D(None, "ravine: torch.initial_seed()"),
}


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type, element by element (4 and 4.0 differ)."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _signature_defaults(fn: Any) -> dict[str, Any]:
    return {
        n: p.default
        for n, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _build(name: str) -> torch.optim.Optimizer:
    return registry.create(name, [torch.nn.Parameter(torch.zeros(3))])


def test_every_registered_optimizer_has_a_row() -> None:
    assert sorted(ROWS) == sorted(registry.names())


@pytest.mark.parametrize("name", ROWS)
def test_signature_defaults(name: str) -> None:
    row = ROWS[name]
    assert registry.get(name).factory is row.cls
    got = _signature_defaults(row.cls)
    assert set(got) == set(row.defaults), "a default without a row here (or a row too many)"
    for hp, d in row.defaults.items():
        assert _same(got[hp], d.value), (
            f"{name}.{hp}: {got[hp]!r}, expected {d.value!r} ({d.source})"
        )


@pytest.mark.parametrize("name", ROWS)
def test_constructed_optimizer_holds_the_defaults(name: str) -> None:
    row = ROWS[name]
    opt = _build(name)
    expected, attributes = {}, {}
    for hp, d in row.defaults.items():
        value = d.value if d.built is inspect.Parameter.empty else d.built
        (expected if hp in opt.defaults else attributes)[hp] = value
    if not isinstance(opt, torch.optim.LBFGS):  # torch's LBFGS has no maximize
        expected["maximize"] = False
    expected.update(row.fixed)
    if name == "lookahead":  # the inner optimizer is Adam at its own defaults
        assert type(opt.optimizer) is ravine.Adam
        attributes.pop("inner")
        expected.update({hp: d.value for hp, d in ROWS["adam"].defaults.items()})
    group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    for where, held in (("defaults", opt.defaults), ("param_groups[0]", group)):
        assert set(held) == set(expected), f"{name}.{where} keys"
        for hp, value in expected.items():
            assert _same(held[hp], value), f"{name}.{where}[{hp!r}]: {held[hp]!r} != {value!r}"
    for hp, value in attributes.items():
        assert _same(getattr(opt, hp), value), f"{name}.{hp}: {getattr(opt, hp)!r} != {value!r}"


TORCH_SHARED = [
    (name, hp, d.torch) for name, row in ROWS.items() for hp, d in row.defaults.items() if d.torch
]


@pytest.mark.parametrize(
    ("name", "hp", "torch_cls"), TORCH_SHARED, ids=[f"{n}-{h}" for n, h, _ in TORCH_SHARED]
)
def test_defaults_said_to_be_torchs_are_torchs(name: str, hp: str, torch_cls: str) -> None:
    torch_default = _signature_defaults(getattr(torch.optim, torch_cls))[hp]
    assert torch_default == ROWS[name].defaults[hp].value, f"torch.optim.{torch_cls}.{hp}"


def test_base_options() -> None:
    got = {
        n: p.default
        for n, p in inspect.signature(ravine.Optimizer.__init__).parameters.items()
        if p.kind is p.KEYWORD_ONLY
    }
    assert set(got) == set(BASE_OPTIONS)
    for n, value in BASE_OPTIONS.items():
        assert _same(got[n], value), n
    opt = _build("adam")
    assert (opt.impl, opt.nonfinite, list(opt.grad_transforms)) == ("foreach", "raise", [])
    assert opt.defaults["maximize"] is False


def test_gradient_noise_defaults() -> None:
    got = _signature_defaults(ravine.GradientNoise)
    assert set(got) == set(NOISE)
    for n, d in NOISE.items():
        assert _same(got[n], d.value), f"GradientNoise.{n} ({d.source})"
    noise = ravine.GradientNoise()
    assert (noise.eta, noise.gamma, noise.seed) == (0.01, 0.55, torch.initial_seed())
    # grad_noise=<float> is eta, with the paper's gamma.
    opt = ravine.Adam([torch.nn.Parameter(torch.zeros(1))], grad_noise=0.3)
    (transform,) = opt.grad_transforms
    assert (transform.eta, transform.gamma) == (0.3, 0.55)
