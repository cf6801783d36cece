"""Search spaces and trial lists: pre-registered, a pure function of (version, optimizer, seed)."""

from __future__ import annotations

import inspect

import pytest
import torch

from ravine.bench import problems, spaces
from ravine.optim import catalog, registry

SPACE_NAMES = list(spaces.SPACES[spaces.CURRENT_VERSION])


def test_trial_list_is_a_pure_function_of_version_and_seed() -> None:
    a = spaces.trials("adam", 16, seed=3)
    assert a == spaces.trials("adam", 16, seed=3)
    assert [t.hp for t in a] != [t.hp for t in spaces.trials("adam", 16, seed=4)]
    # a prefix: K trials are the first K of any longer list
    assert spaces.trials("adam", 5, seed=3) == a[:6]


def test_trial_zero_is_the_one_shot_default() -> None:
    first = spaces.trials("momentum", 4)[0]
    assert first.is_default and first.index == 0 and dict(first.hp) == {}


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_every_trial_is_inside_its_space_and_builds_its_optimizer(name: str) -> None:
    space = spaces.get(name)
    signature = inspect.signature(catalog.get(name).cls).parameters
    for knob in space.knobs:
        assert knob.name.split(".")[0] in signature, f"{name} takes no {knob.name}"
    lo_hi = {k.name: k.bounds() for k in space.knobs}
    for trial in spaces.trials(name, 12)[1:]:
        for knob_name, (lo, hi) in lo_hi.items():
            key, _, index = knob_name.partition(".")
            value = trial.hp[key][int(index)] if index else trial.hp[key]
            assert lo <= value <= hi
        registry.create(
            name, [torch.nn.Parameter(torch.zeros(2))], **trial.hp
        )  # the optimizer accepts every point


def test_same_number_of_trials_for_every_optimizer() -> None:
    from ravine.bench.runner import Sweep

    sweep = Sweep([problems.get("digits-mlp")], SPACE_NAMES, k=7, seeds=1)
    sizes = {o: len(t) for o, t in sweep.trial_lists().items()}
    assert set(sizes.values()) == {8}


def test_log_scale_spreads_over_decades() -> None:
    lrs = sorted(t.hp["lr"] for t in spaces.trials("sgd", 64)[1:])
    knob = spaces.get("sgd").knobs[0]
    # every decade of [1e-3, 10] holds about a quarter of the points
    for lo in (1e-3, 1e-2, 1e-1, 1.0):
        inside = sum(lo <= x < 10 * lo for x in lrs)
        assert 12 <= inside <= 20, (lo, inside)
    assert knob.bounds() == (1e-3, 10.0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: spaces.trials("adam", -1), "k must be an integer in"),
        (lambda: spaces.trials("adam", 2, seed=-1), "seed must be an integer >= 0"),
        (lambda: spaces.trials("lbfgs", 2), "has no search space in v1"),
        (lambda: spaces.get("adam", "v0"), "space version must be one of"),
        (lambda: spaces.Knob("lr", 1.0, 0.1), "need 0 < low < high"),
    ],
)
def test_bad_input_is_refused_with_the_value(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
