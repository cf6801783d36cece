"""`ravine recommend`: the budget arithmetic, successive halving on validation only, equal budgets,
the portfolio, and one real end-to-end run on a tiny problem."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ravine.bench import recommend as rec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("epochs", "rungs"), [(9, (1, 3, 9)), (10, (2, 4, 10)), (1, (1,)), (2, (1, 2))]
)
def test_rungs(epochs: int, rungs: tuple[int, ...]) -> None:
    assert rec.rungs_for(epochs) == rungs


def test_cost_in_epochs_by_hand() -> None:
    # 9 configs: 9 x 1 epoch, 3 x (3 - 1), 1 x (9 - 3), then 2 seeds x 9 epochs
    assert rec.cost_in_epochs(8, (1, 3, 9), seeds=2) == 9 + 6 + 6 + 18


def test_plan_takes_the_largest_k_that_fits() -> None:
    plan = rec.plan_for_budget(
        "bench_tiny:linear", ["sgd", "adam"], budget=20.0, epoch_seconds=0.1, epochs=9,
        seeds=2, batch_size=32,
    )  # fmt: skip
    per_k = [rec.cost_in_epochs(k, (1, 3, 9), 2) * 0.2 for k in (plan.trials, plan.trials + 1)]
    assert plan.trials == 27  # cost 90 epochs x 0.2 s = 18 s = 90% of 20 s; K = 28 costs 91
    assert per_k[0] <= 18.0 < per_k[1]
    assert "--trials" in plan.command() and "--rungs 1,3,9" in plan.command()


def test_a_budget_too_small_says_what_it_needs() -> None:
    with pytest.raises(ValueError, match=r"budget 5 s is too small: 2 optimizer\(s\)"):
        rec.plan_for_budget(
            "x:y", ["sgd", "adam"], budget=5.0, epoch_seconds=1.0, epochs=10, seeds=3,
            batch_size=8,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizers": ()}, "at least one optimizer"),
        ({"optimizers": ("nope",)}, "no search space"),
        ({"trials": -1}, "trials must be an integer"),
        ({"rungs": (3, 2)}, "rungs must be increasing"),
        ({"seeds": 1}, "an interval needs two"),
    ],
)
def test_plan_refuses_bad_values(kwargs: dict, match: str) -> None:
    base = {"problem": "a:b", "optimizers": ("sgd",), "trials": 2, "rungs": (1, 2), "seeds": 2,
            "batch_size": 8}  # fmt: skip
    with pytest.raises(ValueError, match=match):
        rec.Plan(**{**base, **kwargs})


class FakeTrainer:
    """Validation is a known function of (optimizer, trial, epochs); test is its opposite, so a
    selection that read test would pick other configurations."""

    calls: list[tuple[str, int, int, int]]

    def __init__(self, plan: rec.Plan, work: Path) -> None:
        self.calls = FakeTrainer.calls

    def train(self, optimizer: str, trial: int, hp: dict, seed: int, epochs: int):
        self.calls.append((optimizer, trial, seed, epochs))
        base = {"sgd": 0.5, "adam": 0.6}[optimizer]
        if (optimizer, trial) == ("adam", 1):
            raise FloatingPointError("diverged")
        val = base + 0.01 * trial + 0.001 * epochs + 0.0001 * seed
        return val, 1.0 - val


def test_successive_halving_keeps_the_best_on_validation(monkeypatch) -> None:
    FakeTrainer.calls = []
    monkeypatch.setattr(rec, "_Trainer", FakeTrainer)
    plan = rec.Plan("a:b", ("sgd", "adam"), trials=5, rungs=(1, 3), seeds=2, batch_size=8)
    result = rec.recommend(plan, log=lambda _: None)
    calls = FakeTrainer.calls
    per_opt = {o: [c for c in calls if c[0] == o] for o in plan.optimizers}
    assert len(per_opt["sgd"]) == len(per_opt["adam"]) == 6 + 2 + 2  # equal budgets
    # rung 2 trains the best third (2 of 6) on validation: the highest trial indices
    assert sorted(c[1] for c in per_opt["sgd"] if c[3] == 3 and c[2] == 0) == [4, 5]
    assert [r.optimizer for r in result.ranking] == ["adam", "sgd"]
    assert result.ranking[0].trial == 5 and len(result.ranking[0].val) == 2
    assert result.ranking[1].vs_best == "worse"
    assert next(c for c in result.configs if c.optimizer == "adam" and c.trial == 1).error
    assert result.portfolio[0] == ("adam", 5)
    payload = json.loads(result.to_json())
    assert payload["method"].startswith("successive halving")


def test_cli_end_to_end_on_a_tiny_problem(tmp_path: Path, monkeypatch, capsys) -> None:
    from ravine.cli import main

    out = tmp_path / "rec.json"
    code = main(
        ["recommend", "bench_tiny:linear", "--optimizers", "sgd,adam", "--trials", "2",
         "--rungs", "1,2", "--seeds", "2", "--batch-size", "64", "--out", str(out)]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0
    assert "successive halving" in text and "rerun this plan: ravine recommend" in text
    assert 'the winner in Python: ravine.create("' in text
    payload = json.loads(out.read_text())
    assert {r["optimizer"] for r in payload["ranking"]} == {"sgd", "adam"}
    assert all(math.isfinite(r["mean"]) for r in payload["ranking"])


def test_cli_needs_a_budget_or_a_fixed_plan(capsys) -> None:
    from ravine.cli import main

    assert main(["recommend", "bench_tiny:linear"]) == 2
    assert "give --budget" in capsys.readouterr().err
    assert main(["recommend", "bench_tiny:linear", "--trials", "2"]) == 2
    assert "needs both --trials and --rungs" in capsys.readouterr().err
