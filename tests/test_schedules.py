"""Each schedule's learning rates over steps equal its closed form."""

from __future__ import annotations

import math

import pytest
import torch

from ravine import schedules

ETA0 = 0.3
STEPS = 40


def _opt(lr: float = ETA0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _run(sched, opt, steps: int = STEPS) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def _piecewise(t: int) -> float:
    return ETA0 * (1.0 if t < 5 else 0.5 if t < 12 else 0.05)


def _warmup(t: int) -> float:
    return ETA0 * (0.1 + 0.9 * min(t, 8) / 8)


def _cosine(t: int) -> float:
    return 0.01 + (ETA0 - 0.01) * (1 + math.cos(math.pi * t / 25)) / 2


CASES = [
    ("piecewise", {"milestones": [5, 12], "factors": [1.0, 0.5, 0.05]}, _piecewise),
    ("exponential", {"r": 7.0}, lambda t: ETA0 * math.exp(-t / 7.0)),
    ("inverse_time", {"r": 4.0, "c": 1.0}, lambda t: ETA0 * (1 + t / 4.0) ** -1.0),
    ("inverse_time", {"r": 2.0, "c": 0.5}, lambda t: ETA0 * (1 + t / 2.0) ** -0.5),
    ("warmup", {"warmup_steps": 8, "start_factor": 0.1}, _warmup),
    ("cosine", {"t_max": 25, "eta_min": 0.01}, _cosine),
]


@pytest.mark.parametrize(("name", "kwargs", "closed_form"), CASES)
def test_schedule_matches_closed_form(name, kwargs, closed_form):
    opt = _opt()
    lrs = _run(schedules.create(name, opt, **kwargs), opt, 25 if name == "cosine" else STEPS)
    expected = [closed_form(t) for t in range(len(lrs))]
    assert lrs == pytest.approx(expected, rel=1e-10, abs=1e-14)


def test_lambda_schedules_survive_state_dict_round_trip():
    opt = _opt()
    sched = schedules.inverse_time(opt, r=3.0, c=2.0)
    _run(sched, opt, 5)
    opt2 = _opt()
    sched2 = schedules.inverse_time(opt2, r=99.0, c=9.0)
    # a checkpoint restores both: the optimizer holds the current lr, the scheduler r, c and t
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    expected = [ETA0 * (1 + t / 3.0) ** -2.0 for t in (5, 6, 7)]
    assert _run(sched2, opt2, 3) == pytest.approx(expected)


def test_performance_schedule_halves_only_after_patience_then_every_epoch():
    opt = _opt(1.0)
    sched = schedules.performance(opt, patience=2)
    # improves twice, then 3 bad epochs: the third exceeds patience=2 and starts the decay;
    # from then on the rate halves every epoch, even if the metric improves again.
    metrics = [1.0, 0.9, 0.9, 0.95, 0.9, 0.5, 0.1, 0.05]
    lrs = []
    for m in metrics:
        sched.step(m)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125, 0.0625]


def test_performance_schedule_min_delta_counts_small_gains_as_no_improvement():
    opt = _opt(1.0)
    sched = schedules.performance(opt, patience=1, min_delta=0.1)
    for m in [1.0, 0.95, 0.92]:  # gains below 0.1 are not improvements
        sched.step(m)
    assert opt.param_groups[0]["lr"] == 0.5


def test_performance_schedule_state_dict_keeps_decay_phase():
    opt = _opt(1.0)
    sched = schedules.performance(opt, patience=0)
    sched.step(1.0)
    sched.step(2.0)
    assert opt.param_groups[0]["lr"] == 0.5
    opt2 = _opt(0.5)
    sched2 = schedules.performance(opt2, patience=0)
    sched2.load_state_dict(sched.state_dict())
    sched2.step(0.0)  # an improvement, but the decay phase has begun
    assert opt2.param_groups[0]["lr"] == 0.25


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("exponential", {"r": 0.0}, "r must be"),
        ("exponential", {"r": float("nan")}, "r must be"),
        ("inverse_time", {"r": 1.0, "c": -1.0}, "c must be"),
        ("piecewise", {"milestones": [3, 2], "factors": [1, 1, 1]}, "milestones"),
        ("piecewise", {"milestones": [3], "factors": [1.0]}, "factors must have"),
        ("warmup", {"warmup_steps": 0}, "warmup_steps"),
        ("warmup", {"warmup_steps": 3, "start_factor": 0.0}, "start_factor"),
        ("cosine", {"t_max": 0}, "t_max"),
        ("performance", {"factor": 1.5}, "factor"),
        ("performance", {"patience": -1}, "patience"),
        ("nope", {}, "schedule must be one of"),
    ],
)
def test_bad_arguments_raise_value_error(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        schedules.create(name, _opt(), **kwargs)


def test_schedules_work_with_any_optimizer():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1)
    sched = schedules.exponential(opt, r=1.0)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * math.exp(-1))
