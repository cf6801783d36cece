"""The seed's comparison, scaled down, under the lab's protocol: which of its findings hold.

The survey's experiments train logistic regression, an MLP (2 x 500) and LeNet-5 on MNIST with
SGD, Momentum, NAG, Adagrad, Adadelta, RMSprop and Adam; the MNIST-1D paper (Greydanus, 2020,
arXiv:2011.14439) gives ranges for its MLP and CNN. Each study below is a real sweep (the
one-shot default plus K pre-registered Halton trials per optimizer, selection on validation,
finalists re-run with fresh seeds), only smaller than `ravine bench --optimizers seed` with the
problems' full budgets: fewer epochs on MNIST, few trials, one or two final seeds, and only the
optimizers a finding is about. The thresholds are the published ones where they hold at this
scale, otherwise what held with margin here (MEASURED, below, records every number).

Set RAVINE_FINDINGS_STORE=path.sqlite to keep the store: the same test then continues (or just
re-reads) those studies, as `ravine bench` does with the same command.

Measured (tuned configuration's test accuracy, mean over the final seeds; CPU, one thread per
worker, 2 workers; 108 runs, 990 s of CPU in all: 18.5 minutes niced on a shared 2-core machine
at load average 4-6, so about 9 on an idle one; a second run reproduced every epoch row bit
for bit):

* MNIST logistic regression, 10 epochs, K = 4, S = 1: sgd 0.9226, momentum 0.9225, nag 0.9227,
  adagrad 0.9194, adadelta 0.9238, rmsprop 0.9264, adam 0.9250 (the last three: their defaults
  won). Spread 0.70 points: the seed's "all converge similarly" holds, and every method is in the
  published ~92% range.
* MNIST MLP 2 x 500, 5 epochs, K = 4, S = 1: sgd 0.9777, momentum 0.9761, adam 0.9785 (defaults:
  0.5336, 0.8941, 0.9768). Every tuned method >= 97% holds; "Adam best" is not a claim one seed
  can make (0.08 points over SGD), "well-tuned momentum SGD is competitive" holds (0.24 points).
* LeNet-5, 3 epochs, Adam, K = 2, S = 1: 0.9872 (default 0.9811): in the published >= 98.5%.
* MNIST-1D, 60 epochs (2,160 steps; the paper trains 6,000), K = 4, S = 2: MLP momentum 0.6220,
  adam 0.6175 (published 60-70%: holds); CNN momentum 0.9045 (>= 88% holds), adam 0.8625 +- 0.04
  (does not reach 88% at this budget, so the test asserts it for the best method only, and that
  the CNN beats the MLP by far for both).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ravine.bench import open_store, problems, run_sweep
from ravine.bench.report import analyse
from ravine.bench.runner import Sweep

pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]

SEED = ("sgd", "momentum", "nag", "adagrad", "adadelta", "rmsprop", "adam")

# name: (problems, epochs (None: the problem's budget), optimizers, K, S)
STUDIES: dict[str, tuple[tuple[str, ...], int | None, tuple[str, ...], int, int]] = {
    "logreg": (("mnist-logreg",), 10, SEED, 4, 1),
    "mlp": (("mnist-mlp",), 5, ("sgd", "momentum", "adam"), 4, 1),
    "lenet5": (("mnist-lenet5",), 3, ("adam",), 2, 1),
    "mnist1d": (("mnist1d-mlp", "mnist1d-cnn"), None, ("momentum", "adam"), 4, 2),
}


def _sweep(name: str) -> Sweep:
    names, epochs, optimizers, k, seeds = STUDIES[name]
    probs = [problems.get(p).with_epochs(epochs) for p in names]
    return Sweep(probs, list(optimizers), k=k, seeds=seeds, name=f"findings-{name}")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], float]]:
    """{(problem, optimizer): mean test accuracy of the tuned configuration's final runs}."""
    kept = os.environ.get("RAVINE_FINDINGS_STORE")
    url = kept or str(tmp_path_factory.mktemp("findings") / "findings.sqlite")
    workers = max(1, min(2, os.cpu_count() or 1))
    out: dict[tuple[str, str], float] = {}
    for name in STUDIES:
        sweep = _sweep(name)
        counts = run_sweep(sweep, url, workers=workers, threads=1, progress=False)
        assert counts["pending"] == counts["running"] == 0, counts
        with open_store(url) as store:
            report = analyse(store, sweep.name)
        for result in report.problems:
            for row in result.one_shot_vs_tuned:
                mean, _, n = row["tuned"]
                assert n == sweep.seeds, (result.name, row)  # every final run finished
                out[(result.name, row["optimizer"])] = mean
    print("tuned test accuracy:", {f"{p} {o}": round(v, 4) for (p, o), v in sorted(out.items())})
    yield out
    if not kept:
        Path(url).unlink(missing_ok=True)


def test_logistic_regression_all_tuned_methods_converge_alike(tuned):
    accs = [tuned[("mnist-logreg", o)] for o in SEED]
    assert min(accs) >= 0.915, accs  # published: ~92% for a linear model on MNIST
    assert max(accs) - min(accs) <= 0.01, accs  # the seed: all converge similarly


def test_mlp_every_tuned_method_reaches_97_percent_and_momentum_is_competitive(tuned):
    accs = {o: tuned[("mnist-mlp", o)] for o in STUDIES["mlp"][2]}
    assert min(accs.values()) >= 0.97, accs
    assert accs["adam"] - accs["momentum"] <= 0.01, accs  # well-tuned momentum: competitive


def test_lenet5_reaches_its_published_range(tuned):
    assert tuned[("mnist-lenet5", "adam")] >= 0.985


def test_mnist1d_mlp_and_cnn_ranges(tuned):
    for o in STUDIES["mnist1d"][2]:
        assert 0.60 <= tuned[("mnist1d-mlp", o)] <= 0.70, (o, tuned[("mnist1d-mlp", o)])
        # convolutions matter on MNIST-1D (its point): far above the MLP with either optimizer
        assert tuned[("mnist1d-cnn", o)] >= tuned[("mnist1d-mlp", o)] + 0.15, o
    assert max(tuned[("mnist1d-cnn", o)] for o in STUDIES["mnist1d"][2]) >= 0.88
