"""``ravine report``: what a store's sweeps measured, as Markdown and one self-contained HTML page.

The report reads a store through its read API (:class:`ravine.bench.store.Store`), computes every
figure and table with :mod:`ravine.bench.scoring`, and never chooses anything on test metrics:
the configuration it calls "tuned" is the one :func:`ravine.bench.runner.select` picked on
validation; test metrics appear only as reported outcomes of the final (re-seeded) runs.

Per problem: training curves of the finalists with seed bands; validation metric vs learning rate
over the tuning trials; the expected best validation after k trials (k = 1..K) with its bootstrap
band; one-shot default vs tuned; time to target; win probabilities at budgets 1, 4 and K; pairwise
"A beats B" claims from a paired bootstrap over seeds (an interval holding zero is a tie).
Across problems: performance profiles (tau in [1, 4]) of steps to target and their integrated
score. Fairness lint: best trials on the boundary of their space, failure rates, a general
optimizer losing to a special case it contains, step-time overhead against SGD.
"""

from __future__ import annotations

import base64
import html
import io
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ravine.bench import scoring, spaces
from ravine.bench.runner import TERMINAL, select
from ravine.bench.store import Store, open_store

__all__ = ["INCLUSIONS", "Report", "analyse", "write_report"]

# (general, special): the general optimizer contains the special one as a hyperparameter setting
# (Choi et al. 2019, arXiv:1910.05446, section 3), so with enough tuning it should not lose.
INCLUSIONS: tuple[tuple[str, str], ...] = (
    ("momentum", "sgd"),
    ("nag", "sgd"),
    ("rmsprop", "momentum"),
    ("adam", "momentum"),
    ("adam", "rmsprop"),
    ("nadam", "nag"),
    ("nadam", "adam"),
    ("adamw", "adam"),
    ("amsgrad", "adam"),
)
BOUNDARY = 0.05  # a best knob within 5% of its (log) range of an edge: the space may be too small
BUDGETS = (1, 4)  # win probabilities at these budgets and at K
N_BOOT = 2000
CONFIDENCE = 0.95  # of every bootstrap band and interval in the report


# --------------------------------------------------------------------------- the data


@dataclass
class Run:
    """One run with its epoch rows (sorted by epoch)."""

    row: dict[str, Any]
    epochs: list[dict[str, Any]]

    @property
    def finished(self) -> bool:
        return self.row["status"] == "finished" and bool(self.epochs)

    def last(self, column: str) -> float:
        """The last epoch's value; NaN when the run failed or never wrote it."""
        if not self.finished:
            return math.nan
        value = self.epochs[-1].get(column)
        return math.nan if value is None else float(value)

    def series(self, column: str) -> np.ndarray:
        return np.array(
            [math.nan if e.get(column) is None else float(e[column]) for e in self.epochs]
        )


@dataclass
class Group:
    """The runs of one (problem, optimizer): tuning trials and finals by trial index."""

    problem: str
    optimizer: str
    tune: dict[int, Run] = field(default_factory=dict)
    finals: dict[int, list[Run]] = field(default_factory=lambda: defaultdict(list))
    selected: int | None = None

    def tuning_ended(self, k: int) -> bool:
        """Every one of the K + 1 tuning runs finished or failed. Until then a sweep is in
        progress for this optimizer and its tuning statistics would compare unequal budgets."""
        return len(self.tune) >= k + 1 and all(
            r.row["status"] in TERMINAL for r in self.tune.values()
        )


def _load(store: Store, study: str) -> tuple[dict[str, Any], dict[tuple[str, str], Group]]:
    config = store.study_config(study)
    if config is None:
        names = [s["name"] for s in store.studies()]
        raise ValueError(f"no study {study!r} in {store.url} (studies: {names})")
    by_run: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in store.epochs(study):
        by_run[e["run_id"]].append(e)
    groups: dict[tuple[str, str], Group] = {}
    for row in store.runs(study):
        key = (row["problem"], row["optimizer"])
        group = groups.get(key) or groups.setdefault(key, Group(*key))
        run = Run(row, by_run.get(row["id"], []))
        if row["phase"] == "tune":
            group.tune[row["trial_index"]] = run
        else:
            group.finals[row["trial_index"]].append(run)
    return config, groups


# --------------------------------------------------------------------------- analysis


@dataclass
class ProblemResult:
    """Everything the report says about one problem (plain numbers, for tests and rendering)."""

    name: str
    metric: str  # the validation column the protocol optimises
    maximize: bool
    groups: dict[str, Group]
    one_shot_vs_tuned: list[dict[str, Any]]
    best_of_k: dict[str, scoring.BestOfK]
    target: float | None
    time_to_target: dict[str, dict[str, float]]
    win_probability: dict[int, dict[str, float]]
    pairwise: dict[tuple[str, str], scoring.Comparison]


@dataclass
class Report:
    study: str
    config: dict[str, Any]
    problems: list[ProblemResult]
    profile: scoring.Profile | None
    profile_score: dict[str, float]
    lint: list[str]
    counts: dict[str, int]
    environment: list[dict[str, Any]]


def _test_column(metric: str) -> str:
    return metric.replace("val_", "test_")


def _finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    ok = _finite(values)
    if not ok:
        return math.nan, math.nan, 0
    return statistics.fmean(ok), statistics.stdev(ok) if len(ok) > 1 else 0.0, len(ok)


def _select(group: Group, maximize: bool) -> int | None:
    rows = [
        {
            "trial_index": i,
            "status": "finished" if run.finished else run.row["status"],
            "val_accuracy": run.last("val_accuracy"),
            "val_loss": run.last("val_loss"),
        }
        for i, run in group.tune.items()
    ]
    return select(rows, maximize)


def _failed_value(groups: Iterable[Group], metric: str, maximize: bool) -> float:
    """What a failed trial counts as in best-of-k: chance-free zero accuracy, or the worst loss
    any run of the problem reached (a diverged run is at least that bad)."""
    if maximize:
        return 0.0
    seen = [run.last(metric) for g in groups for run in g.tune.values()]
    seen = _finite(seen)
    return max(seen) if seen else 0.0


def _seconds(run: Run) -> np.ndarray:
    return np.cumsum(np.nan_to_num(run.series("wall_time")))


def _analyse_problem(
    name: str, spec: dict[str, Any], groups: dict[str, Group], k: int
) -> ProblemResult:
    metric = spec.get("metric", "val_accuracy")
    maximize = metric == "val_accuracy"
    test = _test_column(metric)
    for group in groups.values():
        group.selected = _select(group, maximize) if group.tuning_ended(k) else None

    rows = []
    for o, g in groups.items():
        default = {r.row["seed"]: r.last(test) for r in g.finals.get(0, [])}
        tuned = {r.row["seed"]: r.last(test) for r in g.finals.get(g.selected, [])}
        seeds = sorted(s for s in set(default) & set(tuned) if math.isfinite(default[s] + tuned[s]))
        versus = None
        if g.selected not in (None, 0) and len(seeds) >= 2:
            versus = scoring.compare(
                [tuned[s] for s in seeds],
                [default[s] for s in seeds],
                higher_is_better=maximize,
                confidence=CONFIDENCE,
                n_boot=N_BOOT,
            )
        rows.append(
            {
                "optimizer": o,
                "default": _mean_sd(list(default.values())),
                "tuned": _mean_sd(list(tuned.values())),
                "hp": g.tune[g.selected].row["hp"] if g.selected is not None else None,
                "trial": g.selected,
                "tuning_ended": g.tuning_ended(k),
                "versus": versus,
            }
        )

    failed = _failed_value(groups.values(), metric, maximize)
    best_of_k = {}
    for o, g in groups.items():
        values = [g.tune[i].last(metric) for i in sorted(g.tune) if i > 0 or k == 0]
        if values and g.tuning_ended(k):
            best_of_k[o] = scoring.expected_best_curve(
                values,
                higher_is_better=maximize,
                failed_value=failed,
                confidence=CONFIDENCE,
                n_boot=N_BOOT,
            )

    # the target: the best level most of a tuned finalist's seeds reach (scoring.majority_level)
    best_values = {}
    for o, g in groups.items():
        runs = g.finals.get(g.selected, []) if g.selected is not None else []
        per_seed = []
        for r in runs:
            s = _finite(r.series(metric).tolist()) if r.finished else []
            if s:
                per_seed.append(max(s) if maximize else min(s))
        if per_seed:
            best_values[o] = per_seed
    target = (
        scoring.target_from_baselines(best_values, higher_is_better=maximize)
        if (best_values)
        else None
    )

    times: dict[str, dict[str, float]] = {}
    for o, g in groups.items():
        finals = g.finals.get(g.selected, []) if g.selected is not None else []  # 0: the default
        runs = [r for r in finals if r.finished]
        if target is None or not runs:
            continue
        per = {"steps": [], "epochs": [], "seconds": []}
        for r in runs:
            m = r.series(metric)
            axes = {
                "steps": r.series("steps"),
                "epochs": np.array([float(e["epoch"]) for e in r.epochs]),
                "seconds": _seconds(r),
            }
            for unit, x in axes.items():
                per[unit].append(scoring.time_to_target(x, m, target, higher_is_better=maximize))
        times[o] = {unit: scoring.majority_time(v) for unit, v in per.items()}

    wins: dict[int, dict[str, float]] = {}
    trial_values = {
        o: [g.tune[i].last(metric) for i in sorted(g.tune) if i > 0]
        for o, g in groups.items()
        if any(i > 0 for i in g.tune) and g.tuning_ended(k)
    }
    if trial_values:
        for budget in sorted({b for b in (*BUDGETS, k) if 1 <= b <= max(k, 1)}):
            wins[budget] = scoring.win_probability(
                trial_values, budget, higher_is_better=maximize, failed_value=failed
            )

    pairwise = {}
    tuned_test = {}
    for o, g in groups.items():
        if g.selected is None:
            continue
        by_seed = {r.row["seed"]: r.last(test) for r in g.finals.get(g.selected, [])}
        tuned_test[o] = by_seed
    names = sorted(tuned_test)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            seeds = sorted(
                s
                for s in set(tuned_test[a]) & set(tuned_test[b])
                if math.isfinite(tuned_test[a][s]) and math.isfinite(tuned_test[b][s])
            )
            if len(seeds) < 2:
                continue
            pairwise[(a, b)] = scoring.compare(
                [tuned_test[a][s] for s in seeds],
                [tuned_test[b][s] for s in seeds],
                higher_is_better=maximize,
                confidence=CONFIDENCE,
                n_boot=N_BOOT,
            )
    return ProblemResult(
        name, metric, maximize, groups, rows, best_of_k, target, times, wins, pairwise
    )


def _boundary_lint(result: ProblemResult, version: str) -> list[str]:
    out = []
    for o, g in result.groups.items():
        if g.selected is None or g.selected == 0:
            continue
        try:
            space = spaces.get(o, version)
        except ValueError:
            continue
        hp = g.tune[g.selected].row["hp"]
        for knob in space.knobs:
            name, _, index = knob.name.partition(".")
            if name not in hp:
                continue
            value = float(hp[name][int(index)] if index else hp[name])
            x = 1.0 - value if knob.scale == "one_minus_log" else value
            if x <= 0:
                continue
            u = (math.log(x) - math.log(knob.low)) / (math.log(knob.high) - math.log(knob.low))
            if u < BOUNDARY or u > 1 - BOUNDARY:
                out.append(
                    f"{result.name}: {o}'s best {knob.name} = {value:.3g} is on the boundary of "
                    f"its space [{knob.bounds()[0]:.3g}, {knob.bounds()[1]:.3g}] (widen it)"
                )
    return out


def _failure_lint(results: Sequence[ProblemResult]) -> list[str]:
    total: dict[str, int] = defaultdict(int)
    bad: dict[str, int] = defaultdict(int)
    for result in results:
        for o, g in result.groups.items():
            for run in g.tune.values():
                if run.row["status"] not in ("finished", "failed"):
                    continue
                total[o] += 1
                bad[o] += not math.isfinite(run.last(result.metric))
    return [
        f"{o}: {bad[o]} of {total[o]} tuning runs failed or diverged ({bad[o] / total[o]:.0%})"
        for o in sorted(total)
        if bad[o]
    ]


def _inclusion_lint(results: Sequence[ProblemResult]) -> list[str]:
    out = []
    for result in results:
        for general, special in INCLUSIONS:
            pair = (general, special) if general < special else (special, general)
            c = result.pairwise.get(pair)
            if c is None:
                continue
            winner = c.winner if pair[0] == general else {"a": "b", "b": "a"}.get(c.winner, "tie")
            if winner == "b":
                # the difference special - general, whichever way round the pair was compared
                sign = 1.0 if pair[0] == special else -1.0
                d = sign * c.difference
                lo, hi = sorted((sign * c.lower, sign * c.upper))
                out.append(
                    f"{result.name}: {general} (which contains {special}) loses to it beyond "
                    f"seed noise (test {special} - {general} = {d:+.4g}, {c.confidence:.0%} "
                    f"interval [{lo:+.4g}, {hi:+.4g}]): its search space or budget is too small "
                    "to find the special case"
                )
    return out


def _step_time(run: Run) -> float:
    if not run.finished:
        return math.nan
    steps = run.last("steps")
    seconds = float(np.nansum(run.series("wall_time")))
    return seconds / steps if steps and steps > 0 else math.nan


def _environment(run: Run) -> tuple[Any, ...]:
    return (run.row.get("host"), run.row.get("cpu"), run.row.get("threads"))


def _overhead_lint(results: Sequence[ProblemResult]) -> list[str]:
    """Median time per step against SGD's, compared only between runs of one environment
    (host, CPU, threads): a study resumed elsewhere, or with another thread count, would
    otherwise compare machines rather than optimizers."""
    ratios: dict[str, list[float]] = defaultdict(list)
    environments = set()
    for result in results:
        per: dict[tuple[Any, ...], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for o, g in result.groups.items():
            for r in g.tune.values():
                t = _step_time(r)
                if math.isfinite(t):
                    per[_environment(r)][o].append(t)
        environments.update(per)
        for times in per.values():
            base = times.get("sgd")
            if not base or statistics.median(base) <= 0:
                continue
            sgd = statistics.median(base)
            for o, v in times.items():
                if o != "sgd":
                    ratios[o].append(statistics.median(v) / sgd)
    if not ratios:
        return ["step-time overhead vs SGD: not measured (no SGD runs to compare with)"]
    lines = [
        f"{o}: median time per step {statistics.median(v):.2f}x SGD's"
        for o, v in sorted(ratios.items())
    ]
    if len(environments) > 1:
        lines.append(
            f"step times were compared within each of the study's {len(environments)} "
            "environments (host, CPU, threads) only; they also depend on the machine's load"
        )
    return lines


def analyse(store: Store, study: str | None = None) -> Report:
    """The report's numbers for ``study`` (default: the store's only or newest study)."""
    studies = store.studies()
    if not studies:
        raise ValueError(f"store {store.url} holds no study: run `ravine bench` first")
    if study is None:
        study = studies[-1]["name"]
    config, groups = _load(store, study)
    specs = {p["name"]: p for p in config["problems"]}
    k = int(config.get("k", 0))
    results = []
    for name in specs:
        per = {o: g for (p, o), g in groups.items() if p == name}
        if per:
            results.append(_analyse_problem(name, specs[name], per, k))

    times = {}
    for r in results:
        for o, t in r.time_to_target.items():
            times.setdefault(o, {})[r.name] = t["steps"]
    for r in results:  # an optimizer that never reached a problem's target is inf there
        for o in r.groups:
            times.setdefault(o, {}).setdefault(r.name, math.inf)
    profile = scoring.performance_profile(times) if times else None
    version = config.get("space_version", spaces.CURRENT_VERSION)
    lint = [line for r in results for line in _boundary_lint(r, version)]
    lint += _failure_lint(results) + _inclusion_lint(results) + _overhead_lint(results)
    env_keys = ("torch_version", "cpu", "threads", "git_hash", "code_version")
    envs = {
        tuple(g_run.row.get(key) for key in env_keys)
        for g in groups.values()
        for g_run in [*g.tune.values(), *(r for rs in g.finals.values() for r in rs)]
        if g_run.row.get("torch_version")
    }
    return Report(
        study,
        config,
        results,
        profile,
        scoring.integrated_profile_score(profile) if profile else {},
        lint,
        store.counts(study),
        [dict(zip(env_keys, e)) for e in sorted(envs, key=str)],
    )


# --------------------------------------------------------------------------- figures

COLORS = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
)  # fmt: skip


def _colour(names: Sequence[str]) -> dict[str, str]:
    return {n: COLORS[i % len(COLORS)] for i, n in enumerate(sorted(names))}


def _problem_figure(result: ProblemResult) -> bytes:
    from matplotlib.figure import Figure

    colours = _colour(list(result.groups))
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    curves, lrs, bok = fig.subplots(1, 3)
    label = result.metric.replace("_", " ")
    for o, g in sorted(result.groups.items()):
        finals = g.finals.get(g.selected, []) if g.selected is not None else []  # 0: the default
        runs = [r for r in finals if r.finished]
        if runs:
            length = min(len(r.epochs) for r in runs)
            stack = np.stack([r.series(result.metric)[:length] for r in runs])
            x = np.arange(1, length + 1)
            curves.plot(x, np.nanmean(stack, axis=0), color=colours[o], label=o)
            curves.fill_between(
                x, np.nanmin(stack, axis=0), np.nanmax(stack, axis=0), color=colours[o], alpha=0.2
            )
        pts = []
        for run in g.tune.values():
            lr = run.row["hp"].get("lr", _default_lr(o))
            if lr is not None:
                pts.append((float(lr), run.last(result.metric)))
        if pts:
            pts.sort()
            xs, ys = zip(*pts, strict=True)
            lrs.plot(xs, ys, "o-", color=colours[o], ms=3, lw=1)
        if o in result.best_of_k:
            c = result.best_of_k[o]
            bok.plot(c.ks, c.mean, color=colours[o])
            bok.fill_between(c.ks, c.lower, c.upper, color=colours[o], alpha=0.15)
    curves.set(xlabel="epoch", ylabel=label, title="tuned finalists (mean, min-max over seeds)")
    curves.xaxis.get_major_locator().set_params(integer=True)
    lrs.set(xscale="log", xlabel="learning rate", ylabel=f"final {label}")
    lrs.set_title("sensitivity: tuning trials")
    bok.set(xlabel="trials k", ylabel=f"expected best {label}")
    bok.set_title(f"expected best after k trials ({int(100 * CONFIDENCE)}% band)")
    bok.xaxis.get_major_locator().set_params(integer=True)
    if not result.maximize:
        for ax in (curves, lrs, bok):
            ax.set_yscale("log")
    from matplotlib.lines import Line2D

    names = sorted(result.groups)  # every optimizer, drawn in any panel or not
    handles = [Line2D([], [], color=colours[o]) for o in names]
    fig.legend(handles, names, loc="outside right upper", frameon=False)
    fig.suptitle(result.name)
    return _png(fig)


def _profile_figure(profile: scoring.Profile) -> bytes:
    from matplotlib.figure import Figure

    colours = _colour(list(profile.rho))
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    for o, rho in sorted(profile.rho.items()):
        ax.step(profile.taus, rho, where="post", color=colours[o], label=o)
    ax.set(xlabel="tau (steps to target / best optimizer's)", ylabel="fraction of problems")
    ax.set(ylim=(-0.02, 1.02), xlim=(1, profile.tau_max), title="performance profiles")
    ax.legend(loc="lower right", frameon=False, fontsize="small")
    return _png(fig)


def _default_lr(optimizer: str) -> float | None:
    """The constructor's lr, where the trial list leaves it at its default (trial 0)."""
    from ravine.optim import catalog

    try:
        return catalog.get(optimizer).defaults.get("lr")
    except (KeyError, ValueError):
        return None


def _file_name(problem: str) -> str:
    """A problem's figure name: user problems are named "module:function"."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in problem)
    return f"problem-{safe}.png"


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


# --------------------------------------------------------------------------- rendering


def _fmt(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "never"
    return f"{value:.{digits}g}"


def _ms(stat: tuple[float, float, int]) -> str:
    mean, sd, n = stat
    return "n/a" if n == 0 else f"{mean:.4f} ± {sd:.4f} (n={n})"


def _versus(c: scoring.Comparison | None) -> str:
    if c is None:
        return "n/a"
    verdict = {"a": "tuned better", "b": "default better", "tie": "tie"}[c.winner]
    return f"{c.difference:+.4f} [{c.lower:+.4f}, {c.upper:+.4f}] {verdict}"


def _trial_text(row: dict[str, Any]) -> str:
    if not row["tuning_ended"]:
        return "tuning in progress"
    return "every trial failed" if row["trial"] is None else str(row["trial"])


def _number(x: float) -> str:
    """3 significant digits, except near 1 from below, where those of 1 - x are kept: a beta2
    of 0.99953 reads 0.99953, not 1."""
    if 0 < 1 - x < 0.1:
        return f"{x:.{2 - math.floor(math.log10(1 - x))}f}".rstrip("0")
    return f"{x:.3g}"


def _hp_text(hp: dict[str, Any] | None) -> str:
    if hp is None:
        return "n/a"
    if not hp:
        return "defaults"
    parts = []
    for k, v in hp.items():
        if isinstance(v, (list, tuple)):
            parts.append(f"{k}=({', '.join(_number(x) for x in v)})")
        else:
            parts.append(f"{k}={_number(v)}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


Block = tuple[str, Any]


def _blocks(report: Report, images: dict[str, bytes]) -> list[Block]:
    cfg = report.config
    out: list[Block] = [
        ("h1", f"ravine bench report: {report.study}"),
        (
            "p",
            f"{len(cfg['problems'])} problem(s) x {len(cfg['optimizers'])} optimizer(s); "
            f"K = {cfg['k']} scrambled-Halton trials + the one-shot default per optimizer "
            f"(space {cfg['space_version']}, QMC seed {cfg['qmc_seed']}), chosen on validation "
            f"only; finalists re-run with {cfg['seeds']} seed(s); schedule {cfg['schedule']}. "
            f"Runs: {', '.join(f'{v} {k}' for k, v in report.counts.items())}.",
        ),
    ]
    if report.environment:
        out.append(("h2", "Environment"))
        keys = list(report.environment[0])
        out.append(("table", ([*keys], [[str(e[k]) for k in keys] for e in report.environment])))
    if report.profile is not None and report.profile_score:
        images["profile.png"] = _profile_figure(report.profile)
        out.append(("h2", "Across problems: performance profiles of steps to target"))
        out.append(("img", "profile.png"))
        ranked = sorted(report.profile_score.items(), key=lambda kv: -kv[1])
        out.append(
            (
                "table",
                (
                    ["optimizer", "integrated profile score (1 = best everywhere)"],
                    [[o, f"{s:.3f}"] for o, s in ranked],
                ),
            )
        )
    out.append(("h2", "Fairness lint"))
    out.append(("list", report.lint or ["nothing to report"]))
    for r in report.problems:
        name = _file_name(r.name)
        images[name] = _problem_figure(r)
        test = _test_column(r.metric).replace("_", " ")
        out.append(("h2", f"Problem {r.name}"))
        out.append(("img", name))
        out.append(("h3", f"One-shot default vs tuned ({test} of the finalists, mean ± sd)"))
        out.append(
            (
                "table",
                (
                    [
                        "optimizer",
                        "default",
                        "tuned",
                        "tuned - default (interval)",
                        "tuned trial",
                        "tuned hyperparameters",
                    ],
                    [
                        [
                            row["optimizer"],
                            _ms(row["default"]),
                            _ms(row["tuned"]),
                            _versus(row["versus"]),
                            _trial_text(row),
                            _hp_text(row["hp"]),
                        ]
                        for row in sorted(r.one_shot_vs_tuned, key=lambda x: x["optimizer"])
                    ],
                ),
            )
        )
        if r.target is not None:
            out.append(("h3", f"Time to target ({r.metric} {'>=' if r.maximize else '<='} "
                              f"{r.target:.4g}; when most seeds had reached it)"))  # fmt: skip
            out.append(
                (
                    "table",
                    (
                        ["optimizer", "steps", "epochs", "seconds"],
                        [
                            [o, _fmt(t["steps"]), _fmt(t["epochs"]), _fmt(t["seconds"], 3)]
                            for o, t in sorted(r.time_to_target.items())
                        ],
                    ),
                )
            )
        if r.win_probability:
            budgets = sorted(r.win_probability)
            names = sorted(r.win_probability[budgets[0]])
            out.append(("h3", "Win probability with a tuning budget of k trials"))
            out.append(
                (
                    "table",
                    (
                        ["optimizer", *(f"k = {b}" for b in budgets)],
                        [[o, *(f"{r.win_probability[b][o]:.2f}" for b in budgets)] for o in names],
                    ),
                )
            )
        if r.pairwise:
            out.append(("h3", f"Pairwise claims (paired bootstrap over seeds, {test})"))
            lines = []
            for (a, b), c in sorted(r.pairwise.items()):
                verdict = {"a": f"{a} beats {b}", "b": f"{b} beats {a}", "tie": f"{a} ~ {b} (tie)"}
                lines.append(
                    f"{verdict[c.winner]}: difference {c.difference:+.4g}, "
                    f"{c.confidence:.0%} interval [{c.lower:+.4g}, {c.upper:+.4g}]"
                )
            out.append(("list", lines))
    return out


def _markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for kind, value in blocks:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + value, ""]
        elif kind == "p":
            lines += [value, ""]
        elif kind == "img":
            lines += [f"![{value}]({value})", ""]
        elif kind == "list":
            lines += [f"- {item}" for item in value] + [""]
        elif kind == "table":
            head, rows = value
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;
padding:.25em .6em;text-align:left;font-size:.9em}th{background:#f3f3f3}img{max-width:100%}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}"""


def _html(blocks: list[Block], images: dict[str, bytes], title: str) -> str:
    e = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<style>{_CSS}</style></head><body>"
    ]
    for kind, value in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{e(value)}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{e(value)}</p>")
        elif kind == "img":
            data = base64.b64encode(images[value]).decode("ascii")
            parts.append(f"<img alt='{e(value)}' src='data:image/png;base64,{data}'>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in value) + "</ul>")
        elif kind == "table":
            head, rows = value
            parts.append(
                "<table><tr>"
                + "".join(f"<th>{e(h)}</th>" for h in head)
                + "</tr>"
                + "".join(
                    "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows
                )
                + "</table>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path
    images: tuple[Path, ...]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_report(
    store: Store | str | Path, out_dir: str | Path, *, study: str | None = None
) -> ReportFiles:
    """Write report.md (+ its PNGs) and report.html (PNGs embedded) into ``out_dir``."""
    own = not isinstance(store, Store)
    opened = open_store(store) if own else store  # type: ignore[arg-type]
    try:
        report = analyse(opened, study)
    finally:
        if own:
            opened.close()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {}
    blocks = _blocks(report, images)
    paths = []
    for name, data in images.items():
        _atomic_write(out / name, data)
        paths.append(out / name)
    md = out / "report.md"
    page = out / "report.html"
    _atomic_write(md, _markdown(blocks).encode())
    _atomic_write(page, _html(blocks, images, f"ravine bench report: {report.study}").encode())
    return ReportFiles(md, page, tuple(paths))
