"""The bench lab's scoring: pure functions of measured numbers, no store, no plotting.

Every function takes plain sequences (one value per trial, per seed or per problem), says which
direction is better with ``higher_is_better``, and is deterministic (bootstraps take a ``seed``).

- :func:`expected_best_of_k` / :func:`expected_best_curve`: the expected best validation value
  after k random trials (Dodge et al. 2019, "Show Your Work", arXiv:1909.03004; used for
  optimizers by Sivaprasad et al. 2020, arXiv:1910.11758), with a bootstrap band over the trials.
- :func:`time_to_target` and :func:`target_from_baselines`: AlgoPerf-style time to a validation
  target (Dahl et al. 2023, arXiv:2306.07179); :func:`majority_level` / :func:`majority_time`
  summarise seeds so that the baseline a target comes from always reaches it.
- :func:`performance_profile` / :func:`integrated_profile_score`: Dolan & Moré (2002,
  arXiv:cs/0102001) performance profiles over tau in [1, tau_max], and their normalised area as
  AlgoPerf scores them; ravine integrates the step function exactly instead of on a grid.
- :func:`bootstrap_difference` / :func:`compare`: "A beats B" only when a bootstrap interval of the
  mean difference over seeds excludes zero; otherwise a tie.
- :func:`win_probability`: the exact probability that each optimizer's best of k random trials is
  the best of all, ties shared equally.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "BestOfK",
    "Comparison",
    "Profile",
    "bootstrap_difference",
    "bootstrap_interval",
    "compare",
    "expected_best_curve",
    "expected_best_of_k",
    "integrated_profile_score",
    "majority_level",
    "majority_time",
    "performance_profile",
    "target_from_baselines",
    "time_to_target",
    "win_probability",
]


def _values(name: str, values: Sequence[float], failed_value: float | None) -> np.ndarray:
    """``values`` as a 1-d float array; NaN (a failed or diverged trial) -> ``failed_value``."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-d sequence of numbers, got shape {array.shape}"
        )
    bad = ~np.isfinite(array)
    if bad.any():
        if failed_value is None:
            raise ValueError(
                f"{name} holds {int(bad.sum())} non-finite value(s) (failed or diverged trials): "
                "pass failed_value= (e.g. chance accuracy, or the loss at initialisation) to count "
                "them as that value"
            )
        array = np.where(bad, failed_value, array)
    return array


def _oriented(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Values in a direction where larger is better, so one maximisation serves both."""
    return values if higher_is_better else -values


def _check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _max_of_k_weights(n: int, k: int) -> np.ndarray:
    """P(the best of k draws with replacement is the i-th smallest of n): (i/n)^k - ((i-1)/n)^k."""
    cdf = (np.arange(n + 1, dtype=np.float64) / n) ** k
    return np.diff(cdf)


def expected_best_of_k(
    values: Sequence[float],
    k: int,
    *,
    higher_is_better: bool = True,
    failed_value: float | None = None,
) -> float:
    """E[best of k trials drawn with replacement from the n observed ``values``].

    With v_(1) <= ... <= v_(n) sorted so that larger is better,
    E[max_k] = sum_i v_(i) [(i/n)^k - ((i-1)/n)^k] (Dodge et al. 2019, eq. 1). k = 1 is the
    mean; k -> infinity tends to the best observed value. k may exceed n (draws repeat).
    """
    k = _check_positive_int("k", k)
    v = np.sort(_oriented(_values("values", values, failed_value), higher_is_better))
    best = float(np.dot(_max_of_k_weights(v.size, k), v))
    return best if higher_is_better else -best


@dataclass(frozen=True)
class BestOfK:
    """Expected best value after k = ks[j] trials: mean[j] with a bootstrap band [lower, upper]."""

    ks: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    confidence: float


def expected_best_curve(
    values: Sequence[float],
    ks: Sequence[int] | None = None,
    *,
    higher_is_better: bool = True,
    failed_value: float | None = None,
    confidence: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
) -> BestOfK:
    """:func:`expected_best_of_k` for k in ``ks`` (default 1..n) with a percentile bootstrap band.

    The band resamples the n trials with replacement ``n_boot`` times and recomputes the curve:
    it shows how much the estimate would move with another draw of the same number of trials
    (Tang et al. 2020 show the point estimate alone is over-confident for small n).
    """
    v = np.sort(_oriented(_values("values", values, failed_value), higher_is_better))
    n = v.size
    ks_array = np.arange(1, n + 1) if ks is None else np.asarray(ks)
    for k in ks_array.tolist():
        _check_positive_int("every k in ks", k)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    n_boot = _check_positive_int("n_boot", n_boot)
    weights = np.stack([_max_of_k_weights(n, int(k)) for k in ks_array])  # (len(ks), n)
    mean = weights @ v
    rng = np.random.default_rng(seed)
    samples = np.sort(v[rng.integers(0, n, size=(n_boot, n))], axis=1)  # (n_boot, n)
    boot = samples @ weights.T  # (n_boot, len(ks))
    alpha = (1.0 - confidence) / 2.0
    lower, upper = np.quantile(boot, [alpha, 1.0 - alpha], axis=0)
    if not higher_is_better:
        mean, lower, upper = -mean, -upper, -lower
    return BestOfK(ks_array, mean, lower, upper, confidence)


def time_to_target(
    times: Sequence[float],
    metric: Sequence[float],
    target: float,
    *,
    higher_is_better: bool = True,
) -> float:
    """The first of ``times`` (steps, epochs or seconds, increasing) at which ``metric`` reaches
    ``target`` (>= when higher is better, <= otherwise); ``math.inf`` when it never does.

    NaN metric values (a diverged evaluation) never reach the target.
    """
    t = np.asarray(times, dtype=np.float64)
    m = np.asarray(metric, dtype=np.float64)
    if t.shape != m.shape or t.ndim != 1:
        raise ValueError(f"times and metric must be 1-d of one length, got {t.shape} and {m.shape}")
    if t.size > 1 and np.any(np.diff(t) < 0):
        raise ValueError("times must be non-decreasing (they are the x axis of one run)")
    with np.errstate(invalid="ignore"):
        reached = m >= target if higher_is_better else m <= target
    hits = np.flatnonzero(reached)
    return float(t[hits[0]]) if hits.size else math.inf


def majority_level(values: Sequence[float], *, higher_is_better: bool = True) -> float:
    """The best level that a strict majority of the runs reach: the (n // 2 + 1)-th best value.

    The median for odd n. For even n the lower middle value rather than the mean of the two:
    with 2 seeds a target at their mean is reached by one seed, and a median time to it is
    then never.
    """
    ordered = np.sort(_oriented(_values("values", values, None), higher_is_better))[::-1]
    level = float(ordered[ordered.size // 2])
    return level if higher_is_better else -level


def majority_time(times: Sequence[float]) -> float:
    """The time by which a strict majority of the runs had reached a target: the
    (n // 2 + 1)-th smallest time, inf where no majority ever did. The median for odd n; the
    pair of :func:`majority_level`, so the baseline a target comes from always reaches it."""
    ordered = np.sort(np.asarray(times, dtype=float))
    if ordered.size == 0:
        raise ValueError("times is empty")
    return float(ordered[ordered.size // 2])


def target_from_baselines(
    best_by_optimizer: Mapping[str, Sequence[float]],
    *,
    higher_is_better: bool = True,
) -> float:
    """A problem's target: the best, over the tuned baselines, of the level that a majority of
    each baseline's seeds reach with their best validation value (:func:`majority_level`).

    A level typical runs reach rather than one lucky seed's, as AlgoPerf sets its targets from
    the baselines' repeated runs.
    """
    if not best_by_optimizer:
        raise ValueError("best_by_optimizer is empty: a target needs at least one baseline")
    levels = [
        majority_level(
            _values(f"best_by_optimizer[{name!r}]", seeds, None), higher_is_better=higher_is_better
        )
        for name, seeds in best_by_optimizer.items()
    ]
    return max(levels) if higher_is_better else min(levels)


@dataclass(frozen=True)
class Profile:
    """``rho[name][j]``: the fraction of problems on which ``name`` is within ``taus[j]`` of the
    best.

    ``ratios[name][p]`` is the time ratio on ``problems[p]`` (inf where the target was never
    reached).
    """

    taus: np.ndarray
    rho: dict[str, np.ndarray]
    ratios: dict[str, np.ndarray]
    problems: list[str]
    tau_max: float


def _ratio_table(
    times: Mapping[str, Mapping[str, float]],
) -> tuple[list[str], list[str], np.ndarray]:
    names = list(times)
    if not names:
        raise ValueError("times is empty: a performance profile needs at least one optimizer")
    problems = sorted({p for per in times.values() for p in per})
    if not problems:
        raise ValueError("times holds no problems")
    table = np.full((len(names), len(problems)), math.inf)
    for i, name in enumerate(names):
        for j, problem in enumerate(problems):
            value = float(times[name].get(problem, math.inf))
            if math.isnan(value) or value < 0:
                raise ValueError(
                    f"times[{name!r}][{problem!r}] = {value!r}: a time must be >= 0 or inf "
                    "(target never reached)"
                )
            table[i, j] = value
    best = table.min(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = table / best
    # A problem no optimizer solved says nothing about any of them: every ratio is inf.
    ratios[:, ~np.isfinite(best)] = math.inf
    ratios[:, best == 0] = np.where(table[:, best == 0] == 0, 1.0, math.inf)
    return names, problems, ratios


def performance_profile(
    times: Mapping[str, Mapping[str, float]],
    *,
    tau_max: float = 4.0,
    num_points: int = 301,
) -> Profile:
    """Dolan & Moré performance profiles: rho_s(tau) = |{p : t_ps <= tau min_s' t_ps'}| / |P|.

    ``times[optimizer][problem]`` is a time to target (inf, or absent, when never reached). The
    ratio is taken to the best optimizer on each problem; taus span [1, tau_max] as in AlgoPerf.
    """
    if not (math.isfinite(tau_max) and tau_max > 1.0):
        raise ValueError(f"tau_max must be a finite number > 1, got {tau_max!r}")
    num_points = _check_positive_int("num_points", num_points)
    names, problems, ratios = _ratio_table(times)
    taus = np.linspace(1.0, tau_max, num_points)
    rho = {name: (ratios[i][None, :] <= taus[:, None]).mean(axis=1) for i, name in enumerate(names)}
    return Profile(taus, rho, {n: ratios[i] for i, n in enumerate(names)}, problems, tau_max)


def integrated_profile_score(profile: Profile) -> dict[str, float]:
    """The area under each rho over [1, tau_max], divided by (tau_max - 1): 1 means best on
    every problem, 0 never within tau_max of the best.

    rho is a step function, so the area is exact: each problem solved at ratio r <= tau_max adds
    (tau_max - r) / (|P| (tau_max - 1)).
    """
    span = profile.tau_max - 1.0
    scores = {}
    for name, ratios in profile.ratios.items():
        inside = ratios[ratios <= profile.tau_max]
        scores[name] = float((profile.tau_max - inside).sum() / (len(profile.problems) * span))
    return scores


@dataclass(frozen=True)
class Comparison:
    """mean(a - b), its bootstrap interval, and ``winner``: "a", "b" or "tie" (holds 0)."""

    difference: float
    lower: float
    upper: float
    confidence: float
    winner: Literal["a", "b", "tie"]


def bootstrap_interval(
    values: Sequence[float],
    *,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """mean(values) and its percentile bootstrap interval (resampling the values)."""
    x = _values("values", values, None)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    n_boot = _check_positive_int("n_boot", n_boot)
    rng = np.random.default_rng(seed)
    boot = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lower, upper = np.quantile(boot, [alpha, 1.0 - alpha])
    return float(x.mean()), float(lower), float(upper)


def bootstrap_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    paired: bool = True,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its percentile bootstrap interval.

    paired=True resamples seeds jointly (a[i] and b[i] ran with the same seed, data order and
    initialisation, as the lab runs them), which removes the seed-to-seed variance both share.
    """
    x = _values("a", a, None)
    y = _values("b", b, None)
    if paired and x.size != y.size:
        raise ValueError(
            f"paired comparison needs as many values in a as in b: {x.size} != {y.size}"
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    n_boot = _check_positive_int("n_boot", n_boot)
    if paired:
        return bootstrap_interval(x - y, confidence=confidence, n_boot=n_boot, seed=seed)
    rng = np.random.default_rng(seed)
    bx = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    by = y[rng.integers(0, y.size, size=(n_boot, y.size))].mean(axis=1)
    boot = bx - by
    mean = float(x.mean() - y.mean())
    alpha = (1.0 - confidence) / 2.0
    lower, upper = np.quantile(boot, [alpha, 1.0 - alpha])
    return mean, float(lower), float(upper)


def compare(
    a: Sequence[float],
    b: Sequence[float],
    *,
    higher_is_better: bool = True,
    paired: bool = True,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> Comparison:
    """Whether a beats b over seeds: only when the bootstrap interval of the mean difference
    excludes zero; an interval that holds zero is a tie, whatever the point estimate."""
    mean, lower, upper = bootstrap_difference(
        a, b, paired=paired, confidence=confidence, n_boot=n_boot, seed=seed
    )
    if lower > 0 or upper < 0:
        a_better = (lower > 0) == higher_is_better
        winner: Literal["a", "b", "tie"] = "a" if a_better else "b"
    else:
        winner = "tie"
    return Comparison(mean, lower, upper, confidence, winner)


def win_probability(
    trials: Mapping[str, Sequence[float]],
    k: int,
    *,
    higher_is_better: bool = True,
    failed_value: float | None = None,
) -> dict[str, float]:
    """P(each optimizer's best of k random trials is the best of all), exact; ties shared.

    Each optimizer draws k of its own observed trials with replacement (its tuning budget is k).
    For optimizer A and each of its values v: P(best_A = v) times the probability that every
    other optimizer's best is below v, or equal to it and sharing the win: with a_B = P(best_B <
    v) and b_B = P(best_B = v), the coefficients c_j of prod_B (a_B + b_B x) give
    P(j others tie at v), each sharing 1 / (1 + j).
    """
    k = _check_positive_int("k", k)
    if not trials:
        raise ValueError("trials is empty")
    oriented = {
        name: np.sort(_oriented(_values(f"trials[{name!r}]", v, failed_value), higher_is_better))
        for name, v in trials.items()
    }

    names = list(oriented)
    levels = np.unique(np.concatenate(list(oriented.values())))
    # below[name][j] = P(best of k < levels[j]); equal[name][j] = P(best of k == levels[j])
    below, equal = {}, {}
    for name, values in oriented.items():
        less = np.searchsorted(values, levels, side="left") / values.size
        at_most = np.searchsorted(values, levels, side="right") / values.size
        below[name] = less**k
        equal[name] = at_most**k - below[name]
    result = {}
    for name in names:
        poly = np.ones((levels.size, 1))  # coefficients of prod_B (a_B + b_B x), one row a level
        for other in names:
            if other == name:
                continue
            grown = np.zeros((levels.size, poly.shape[1] + 1))
            grown[:, :-1] += poly * below[other][:, None]
            grown[:, 1:] += poly * equal[other][:, None]
            poly = grown
        share = (poly / np.arange(1, poly.shape[1] + 1)).sum(axis=1)
        result[name] = float(np.dot(equal[name], share))
    return result
