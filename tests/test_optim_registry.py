"""The registry: every optimizer by name, with its paper and close-match errors (the defaults are
pinned in tests/test_optim_defaults.py)."""

from __future__ import annotations

import pytest
import torch

import ravine
from optim_specs import SPECS_BY_NAME
from ravine.optim import registry


def test_every_registered_optimizer_has_a_spec_and_a_paper() -> None:
    for name in registry.names():
        assert name in SPECS_BY_NAME, f"{name} has no spec in tests/optim_specs.py"
        assert registry.get(name).paper, f"{name} has no paper reference"


def test_create_passes_hyperparameters() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    opt = ravine.create("adam", [p], lr=0.5, betas=(0.8, 0.9))
    assert isinstance(opt, ravine.Adam)
    assert opt.param_groups[0]["lr"] == 0.5
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(ValueError, match=r"Unknown optimizer 'adamm'.*did you mean 'adam'"):
        ravine.create("adamm", [torch.nn.Parameter(torch.zeros(1))])


def test_lookup_is_case_insensitive() -> None:
    assert registry.get("AdaGrad").name == "adagrad"


def test_duplicate_registration_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register("adam", ravine.Adam)


def test_unknown_hyperparameter_is_named_with_a_hint() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(
        ValueError, match=r"Unknown hyperparameter 'bettas' \(did you mean 'betas'\?\)"
    ):
        ravine.create("adam", [p], bettas=(0.9, 0.99))
    with pytest.raises(ValueError, match=r"'foo' for optimizer 'sgd'"):
        ravine.create("sgd", [p], foo=1)


def test_base_options_pass_through_the_registry() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = ravine.create("adam", [p], impl="loop", nonfinite="skip", maximize=True, grad_noise=0.1)
    assert opt.impl == "loop" and opt.nonfinite == "skip" and opt.defaults["maximize"]
    # Wrappers that forward their keywords to an inner optimizer are not second-guessed.
    ravine.create("lookahead", [p], inner="sgd", lr=0.1, momentum=0.9)
