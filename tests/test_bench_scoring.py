"""The lab's scoring functions against hand-computed fixtures and brute-force enumeration."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ravine.bench import scoring

# --- expected best of k -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "k", "higher", "expected"),
    [
        # max of 2 draws from {1,2,3}: P = 1/9, 3/9, 5/9 -> 22/9
        ([1, 2, 3], 2, True, 22 / 9),
        # min of 2 draws from {1,2,3}: P(1) = 5/9, P(2) = 3/9, P(3) = 1/9 -> 14/9
        ([1, 2, 3], 2, False, 14 / 9),
        ([3, 1, 2], 1, True, 2.0),  # k = 1 is the mean
        ([0.5], 7, True, 0.5),
        ([0.0, 1.0], 3, True, 7 / 8),  # 1 - (1/2)^3
    ],
)
def test_expected_best_of_k_hand_computed(values, k, higher, expected):
    assert scoring.expected_best_of_k(values, k, higher_is_better=higher) == pytest.approx(expected)


def _brute_best_of_k(values, k, higher):
    pick = max if higher else min
    draws = list(itertools.product(values, repeat=k))
    return float(sum(Fraction(pick(d)).limit_denominator() for d in draws) / len(draws))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=1, max_size=5),
    st.integers(1, 4),
    st.booleans(),
)
def test_expected_best_of_k_equals_enumeration_of_all_draws(values, k, higher):
    got = scoring.expected_best_of_k(values, k, higher_is_better=higher)
    assert got == pytest.approx(_brute_best_of_k(values, k, higher), abs=1e-12)


def test_expected_best_is_monotone_in_k_and_tends_to_the_best():
    values = [0.2, 0.9, 0.5, 0.7]
    curve = [scoring.expected_best_of_k(values, k) for k in range(1, 60)]
    assert all(b >= a for a, b in itertools.pairwise(curve))
    assert curve[-1] == pytest.approx(0.9, abs=1e-6)


def test_failed_trials_need_an_explicit_value():
    with pytest.raises(ValueError, match="failed_value"):
        scoring.expected_best_of_k([0.5, float("nan")], 2)
    got = scoring.expected_best_of_k([0.5, float("nan")], 1, failed_value=0.1)
    assert got == pytest.approx(0.3)


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_k_must_be_a_positive_integer(k):
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        scoring.expected_best_of_k([1.0], k)


def test_expected_best_curve_mean_and_band():
    values = [0.1, 0.4, 0.35, 0.8, 0.6]
    curve = scoring.expected_best_curve(values, n_boot=500, seed=3)
    assert curve.ks.tolist() == [1, 2, 3, 4, 5]
    for k, mean in zip(curve.ks, curve.mean, strict=True):
        assert mean == pytest.approx(scoring.expected_best_of_k(values, int(k)))
    assert np.all(curve.lower <= curve.mean + 1e-12)
    assert np.all(curve.mean <= curve.upper + 1e-12)
    again = scoring.expected_best_curve(values, n_boot=500, seed=3)
    assert np.array_equal(again.lower, curve.lower)  # seeded: reproducible


def test_expected_best_curve_for_losses_keeps_lower_below_upper():
    curve = scoring.expected_best_curve([2.0, 1.0, 3.0], [1, 2], higher_is_better=False)
    assert curve.mean.tolist() == pytest.approx([2.0, 14 / 9])
    assert np.all(curve.lower <= curve.upper)


# --- time to target -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "metric", "target", "higher", "expected"),
    [
        ([1, 2, 3], [0.5, 0.9, 0.95], 0.9, True, 2.0),
        ([10, 20, 30], [3.0, 2.0, 1.0], 1.5, False, 30.0),
        ([1, 2, 3], [0.5, 0.6, 0.7], 0.9, True, math.inf),
        ([1, 2, 3], [float("nan"), 0.95, 0.99], 0.9, True, 2.0),  # NaN never reaches
        ([0.5, 1.25], [0.9, 0.1], 0.8, True, 0.5),
    ],
)
def test_time_to_target(times, metric, target, higher, expected):
    got = scoring.time_to_target(times, metric, target, higher_is_better=higher)
    assert got == expected


def test_time_to_target_refuses_unordered_times():
    with pytest.raises(ValueError, match="non-decreasing"):
        scoring.time_to_target([2, 1], [0.1, 0.2], 0.5)


def test_target_is_the_best_median_over_baselines():
    best = {"adam": [0.9, 0.8, 0.95], "sgd": [0.85, 0.86, 0.87]}
    assert scoring.target_from_baselines(best) == pytest.approx(0.9)
    losses = {"adam": [0.3, 0.2, 0.4], "sgd": [0.25, 0.26, 0.5]}
    assert scoring.target_from_baselines(losses, higher_is_better=False) == pytest.approx(0.26)


# --- performance profiles -----------------------------------------------------------------------

TIMES = {
    "a": {"p1": 10.0, "p2": 20.0},
    "b": {"p1": 20.0, "p2": 10.0},
    "c": {"p1": 40.0, "p2": math.inf},
}


def test_performance_profile_ratios_and_rho():
    profile = scoring.performance_profile(TIMES, tau_max=4.0, num_points=7)  # taus 1, 1.5, ... 4
    assert profile.problems == ["p1", "p2"]
    assert profile.ratios["a"].tolist() == [1.0, 2.0]
    assert profile.ratios["c"].tolist() == [4.0, math.inf]
    assert profile.rho["a"].tolist() == [0.5, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert profile.rho["c"].tolist() == [0, 0, 0, 0, 0, 0, 0.5]


def test_integrated_score_is_the_exact_area():
    scores = scoring.integrated_profile_score(scoring.performance_profile(TIMES, tau_max=4.0))
    assert scores == pytest.approx({"a": 5 / 6, "b": 5 / 6, "c": 0.0})


def test_integrated_score_matches_a_fine_grid():
    rng = np.random.default_rng(0)
    times = {n: {f"p{i}": float(rng.uniform(1, 5)) for i in range(6)} for n in "xyz"}
    profile = scoring.performance_profile(times, tau_max=4.0, num_points=200_001)
    dx = np.diff(profile.taus)
    grid = {n: float(((r[1:] + r[:-1]) / 2 * dx).sum() / 3.0) for n, r in profile.rho.items()}
    assert scoring.integrated_profile_score(profile) == pytest.approx(grid, abs=1e-4)


def test_a_problem_nobody_solved_counts_against_everyone():
    profile = scoring.performance_profile({"a": {"p": math.inf}, "b": {"p": math.inf}})
    assert profile.rho["a"].max() == 0.0


@pytest.mark.parametrize(("bad", "match"), [(-1.0, ">= 0"), (float("nan"), ">= 0")])
def test_profile_refuses_bad_times(bad, match):
    with pytest.raises(ValueError, match=match):
        scoring.performance_profile({"a": {"p": bad}})


# --- bootstrap comparisons ----------------------------------------------------------------------


def test_a_constant_paired_advantage_is_a_win():
    b = [0.1, 0.5, 0.3, 0.9]
    a = [x + 1.0 for x in b]
    result = scoring.compare(a, b, n_boot=200)
    assert (result.difference, result.lower, result.upper) == pytest.approx((1.0, 1.0, 1.0))
    assert result.winner == "a"
    # the same numbers as losses: a is worse
    assert scoring.compare(a, b, higher_is_better=False, n_boot=200).winner == "b"


def test_an_interval_holding_zero_is_a_tie():
    result = scoring.compare([1.0, -1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0], n_boot=2000)
    assert result.lower < 0 < result.upper
    assert result.winner == "tie"


def test_unpaired_bootstrap_and_length_check():
    mean, lo, hi = scoring.bootstrap_difference([1, 2, 3], [0, 1], paired=False, n_boot=500)
    assert mean == pytest.approx(1.5)
    assert lo <= mean <= hi
    with pytest.raises(ValueError, match="as many values"):
        scoring.bootstrap_difference([1, 2, 3], [0, 1])


# --- win probability ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trials", "k", "expected"),
    [
        ({"a": [1.0], "b": [0.0]}, 1, {"a": 1.0, "b": 0.0}),
        ({"a": [1.0], "b": [1.0]}, 3, {"a": 0.5, "b": 0.5}),
        ({"a": [0.0, 2.0], "b": [1.0]}, 1, {"a": 0.5, "b": 0.5}),
        ({"a": [0.0, 2.0], "b": [1.0]}, 2, {"a": 0.75, "b": 0.25}),
    ],
)
def test_win_probability_hand_computed(trials, k, expected):
    assert scoring.win_probability(trials, k) == pytest.approx(expected)


def _brute_win(trials, k):
    names = list(trials)
    wins = dict.fromkeys(names, 0.0)
    per = [list(itertools.product(trials[n], repeat=k)) for n in names]
    total = 0
    for combo in itertools.product(*per):
        bests = [max(draw) for draw in combo]
        top = max(bests)
        winners = [n for n, b in zip(names, bests, strict=True) if b == top]
        for n in winners:
            wins[n] += 1 / len(winners)
        total += 1
    return {n: w / total for n, w in wins.items()}


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from("abc"), st.lists(st.integers(0, 3), min_size=1, max_size=3), min_size=1
    ),
    st.integers(1, 2),
)
def test_win_probability_equals_enumeration(trials, k):
    got = scoring.win_probability(trials, k)
    assert got == pytest.approx(_brute_win(trials, k), abs=1e-12)
    assert sum(got.values()) == pytest.approx(1.0)


def test_win_probability_for_losses_prefers_the_lower():
    got = scoring.win_probability({"a": [0.1], "b": [0.2]}, 1, higher_is_better=False)
    assert got == pytest.approx({"a": 1.0, "b": 0.0})


@pytest.mark.parametrize(
    "values, higher, level",
    [([0.9, 0.8, 0.95], True, 0.9), ([0.93, 0.92], True, 0.92), ([0.9], True, 0.9),
     ([0.93, 0.92, 0.91, 0.5], True, 0.91), ([0.3, 0.2], False, 0.3),
     ([0.3, 0.2, 0.4], False, 0.3)],
)  # fmt: skip
def test_majority_level_is_reached_by_most_runs(values, higher, level) -> None:
    assert scoring.majority_level(values, higher_is_better=higher) == pytest.approx(level)
    reached = [v >= level if higher else v <= level for v in values]
    assert sum(reached) > len(values) / 2


def test_the_baseline_a_target_comes_from_reaches_it_by_majority_time() -> None:
    # two seeds: a target at their mean (0.925) is reached by one seed only, and the median of
    # (t, inf) is inf: the best baseline would "never" reach its own target
    best = {"adam": [0.93, 0.92], "sgd": [0.90, 0.91]}
    target = scoring.target_from_baselines(best)
    assert target == pytest.approx(0.92)
    times = [scoring.time_to_target([1, 2, 3], [0.5, 0.92, 0.93], target),
             scoring.time_to_target([1, 2, 3], [0.5, 0.6, 0.92], target)]  # fmt: skip
    assert times == [2, 3] and scoring.majority_time(times) == 3
    assert scoring.majority_time([5.0, 6.0, math.inf]) == 6.0
    assert scoring.majority_time([5.0, math.inf, math.inf]) == math.inf
    with pytest.raises(ValueError, match="empty"):
        scoring.majority_time([])
