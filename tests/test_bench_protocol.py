"""The protocol end to end on tiny problems: equal budgets, selection on validation only,
finalists re-run with fresh seeds, failed runs recorded while the sweep goes on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ravine.bench import open_store, problems, run_sweep, select
from ravine.bench.runner import Sweep, WarmupCosine, plan

pytestmark = pytest.mark.usefixtures("one_thread")

OPTIMIZERS = ["sgd", "momentum", "adam"]
K, S, EPOCHS = 3, 2, 3


def _sweep(spec: str = "bench_tiny:linear", **kw) -> Sweep:
    p = problems.user_problem(spec, batch_size=50, epochs=EPOCHS)
    kw = {"k": K, "seeds": S, **kw}
    return Sweep([p], kw.pop("optimizers", OPTIMIZERS), **kw)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sweep, str]:
    url = str(tmp_path_factory.mktemp("bench") / "results.sqlite")
    sweep = _sweep()
    counts = run_sweep(sweep, url, progress=False, threads=1)
    assert counts == {"pending": 0, "running": 0, "finished": counts["finished"], "failed": 0}
    return sweep, url


def test_equal_budgets_for_every_optimizer(finished: tuple[Sweep, str]) -> None:
    sweep, url = finished
    with open_store(url) as store:
        runs = store.runs(sweep.name)
        epochs = store.epochs(sweep.name)
    per_run: dict[int, list[int]] = {}
    for e in epochs:
        per_run.setdefault(e["run_id"], []).append(e["epoch"])
    tune = {}
    for o in OPTIMIZERS:
        mine = [r for r in runs if r["optimizer"] == o and r["phase"] == "tune"]
        tune[o] = sorted(r["trial_index"] for r in mine)
        assert {r["seed"] for r in mine} == {0}
        finals = [r for r in runs if r["optimizer"] == o and r["phase"] == "final"]
        by_trial: dict[int, list[int]] = {}
        for r in finals:
            by_trial.setdefault(r["trial_index"], []).append(r["seed"])
        assert 0 in by_trial  # the one-shot default is confirmed too
        assert all(sorted(seeds) == list(range(1, S + 1)) for seeds in by_trial.values())
    assert all(t == list(range(K + 1)) for t in tune.values()), tune
    assert all(per_run[r["id"]] == list(range(1, EPOCHS + 1)) for r in runs)
    steps = {e["steps"] for e in epochs if e["epoch"] == EPOCHS}
    assert steps == {EPOCHS * 8}  # 400 examples in batches of 50, for everyone


def test_the_finalist_is_the_best_validation_trial(finished: tuple[Sweep, str]) -> None:
    sweep, url = finished
    with open_store(url) as store:
        runs = store.runs(sweep.name)
        last = {(e["run_id"]): e for e in store.epochs(sweep.name) if e["epoch"] == EPOCHS}
    for o in OPTIMIZERS:
        tune = [r for r in runs if r["optimizer"] == o and r["phase"] == "tune"]
        best = max(tune, key=lambda r: (last[r["id"]]["val_accuracy"], -r["trial_index"]))
        chosen = {r["trial_index"] for r in runs if r["optimizer"] == o and r["phase"] == "final"}
        assert chosen == {0, best["trial_index"]}


def _row(index: int, val_acc: float | None, status: str = "finished", **extra) -> dict:
    return {
        "trial_index": index,
        "status": status,
        "val_accuracy": val_acc,
        "val_loss": 1.0,
        **extra,
    }


@pytest.mark.parametrize(
    "rows, maximize, expected",
    [
        ([_row(0, 0.5), _row(1, 0.9), _row(2, 0.7)], True, 1),
        ([_row(0, 0.9), _row(1, 0.9)], True, 0),  # a tie goes to the lower index
        ([_row(0, 0.5), _row(1, 0.99, "failed"), _row(2, math.nan)], True, 0),
        ([_row(0, None, "failed"), _row(1, None, "failed")], True, None),
        ([{**_row(0, 0.1), "val_loss": 0.3}, {**_row(1, 0.9), "val_loss": 0.2}], False, 1),
    ],
)
def test_select_table(rows: list[dict], maximize: bool, expected: int | None) -> None:
    assert select(rows, maximize) == expected


def test_test_metrics_never_choose(tmp_path: Path) -> None:
    """Test metrics rigged to favour another trial change nothing: selection never sees them."""
    url = str(tmp_path / "s.sqlite")
    sweep = _sweep(optimizers=["sgd"])
    with open_store(url) as store:
        plan(store, sweep)
        rows = store.validation(sweep.name, sweep.problems[0].name, "sgd", "tune")
        assert not any(k.startswith("test") for k in rows[0])
        env = {
            "code_version": "x",
            "torch_version": "x",
            "cpu": "x",
            "threads": 1,
            "git_hash": None,
        }
        for _ in range(K + 1):
            claim = store.claim(sweep.name, 60.0, env)
            assert claim is not None
            idx = claim.row["trial_index"]
            # validation prefers trial 2; test prefers trial 3 by far
            values = {"val_accuracy": 0.9 if idx == 2 else 0.5, "val_loss": 1.0,
                      "test_accuracy": 1.0 if idx == 3 else 0.0, "test_loss": 0.0}  # fmt: skip
            store.record_epoch(claim, EPOCHS, values)
            store.finish(claim, "finished")
        from ravine.bench.runner import decide_finals

        assert decide_finals(store, sweep, sweep.problems[0].name, "sgd") == 2 * S
        finals = {r["trial_index"] for r in store.runs(sweep.name) if r["phase"] == "final"}
    assert finals == {0, 2}


@pytest.mark.parametrize(
    "spec, error",
    [
        ("bench_tiny:raises", "RuntimeError: this factory is broken on purpose"),
        ("bench_tiny:wrong_types", "TypeError: bench_tiny:wrong_types must return"),
        ("bench_tiny:nan_loss", "NonFiniteLossError: non-finite loss (nan)"),
    ],
)
def test_failed_runs_are_recorded_and_the_sweep_goes_on(
    tmp_path: Path, spec: str, error: str
) -> None:
    url = str(tmp_path / "s.sqlite")
    good = problems.user_problem("bench_tiny:linear", batch_size=50, epochs=2)
    bad = problems.user_problem(spec, batch_size=50, epochs=2)
    sweep = Sweep([bad, good], ["sgd"], k=1, seeds=1)
    counts = run_sweep(sweep, url, progress=False, threads=1)
    with open_store(url) as store:
        runs = store.runs(sweep.name)
    failed = [r for r in runs if r["problem"] == spec]
    assert len(failed) == 2 and all(r["status"] == "failed" for r in failed)
    assert all(r["error"].startswith(error) for r in failed), failed[0]["error"]
    ok = [r for r in runs if r["problem"] == good.name]
    assert ok and all(r["status"] == "finished" for r in ok)
    assert {r["phase"] for r in ok} == {"tune", "final"}
    assert counts["pending"] == counts["running"] == 0


METRICS = ("train_loss", "val_loss", "val_accuracy", "test_loss", "test_accuracy", "steps", "lr")


def _results(url: str, study: str) -> dict:
    """{(optimizer, phase, trial, seed): (status, [metrics per epoch])}: what a sweep measured."""
    with open_store(url) as store:
        epochs: dict[int, list] = {}
        for e in store.epochs(study):
            epochs.setdefault(e["run_id"], []).append(tuple(e[m] for m in METRICS))
        return {
            (r["optimizer"], r["phase"], r["trial_index"], r["seed"]): (
                r["status"],
                epochs[r["id"]],
            )
            for r in store.runs(study)
        }


def test_a_torn_checkpoint_restarts_its_run_from_the_first_epoch(
    finished: tuple[Sweep, str], tmp_path: Path
) -> None:
    """The lab's checkpoints skip fsync: after a machine crash one may be torn. Its run starts
    over (epoch rows rewritten) and the sweep ends as an uninterrupted one."""
    from ravine.bench.runner import environment
    from ravine.train import CHECKPOINT_NAME

    sweep, reference = finished
    url, root = str(tmp_path / "s.sqlite"), tmp_path / "checkpoints"
    with open_store(url) as store:
        plan(store, sweep)
        claim = store.claim(sweep.name, 60.0, environment())
        assert claim is not None
        # the crashed worker had recorded epoch 1, and its checkpoint lost its last bytes
        store.record_epoch(claim, 1, {"train_loss": 99.0, "val_accuracy": 0.0, "steps": 8})
        folder = root / f"{sweep.name}-run{claim.id}"
        folder.mkdir(parents=True)
        (folder / CHECKPOINT_NAME).write_bytes(b"ravine fit checkpoint\n" + b"0" * 64 + b"\nPK")
        with store._write() as cur:  # its heartbeat stopped long ago
            cur.execute("UPDATE runs SET heartbeat = 0 WHERE id = ?", (claim.id,))
    counts = run_sweep(sweep, url, checkpoint_root=root, progress=False, threads=1)
    assert counts["failed"] == counts["pending"] == counts["running"] == 0, counts
    assert _results(url, sweep.name) == _results(reference, sweep.name)
    with open_store(url) as store:
        assert store.run(claim.id)["attempts"] == 2
    assert not any(root.iterdir())


def test_rerunning_a_finished_sweep_adds_nothing(finished: tuple[Sweep, str]) -> None:
    sweep, url = finished
    with open_store(url) as store:
        before = store.runs(sweep.name)
        assert plan(store, sweep) == 0
    run_sweep(sweep, url, progress=False, threads=1)
    with open_store(url) as store:
        after = store.runs(sweep.name)
    assert [(r["id"], r["status"], r["attempts"]) for r in before] == [
        (r["id"], r["status"], r["attempts"]) for r in after
    ]


def test_another_config_under_the_same_study_name_is_refused(finished: tuple[Sweep, str]) -> None:
    sweep, url = finished
    other = _sweep(name=sweep.name, schedule="cosine")
    with open_store(url) as store, pytest.raises(ValueError, match="another configuration"):
        plan(store, other)


@pytest.mark.parametrize(
    "total, warmup, t, expected",
    [(100, 0, 0, 1.0), (100, 0, 50, 0.5), (100, 0, 100, 0.0), (100, 10, 0, 0.1), (100, 10, 9, 1.0),
     (100, 10, 10, 1.0), (100, 10, 55, 0.5)],
)  # fmt: skip
def test_warmup_cosine_multiplier(total: int, warmup: int, t: int, expected: float) -> None:
    assert WarmupCosine(total, warmup)(t) == pytest.approx(expected)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"k": -1}, "k \\(trials\\) must be an integer"),
        ({"seeds": 0}, "seeds must be an integer in \\[1, 1000\\]"),
        ({"schedule": "step"}, "schedule must be one of"),
        ({"optimizers": ["sgd", "sgd"]}, "must not repeat"),
        ({"optimizers": ["lbfgs"]}, "has no search space"),
    ],
)
def test_a_bad_sweep_is_refused_before_anything_is_written(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _sweep(**kw)


def test_progress_counts(finished: tuple[Sweep, str], tmp_path: Path) -> None:
    from ravine.bench.runner import expected_total

    sweep, url = finished
    with open_store(url) as store:
        n = len(store.runs(sweep.name))
        assert expected_total(store, sweep) == (n, n)
    with open_store(tmp_path / "new.sqlite") as store:
        plan(store, sweep)
        groups = len(OPTIMIZERS)
        assert expected_total(store, sweep) == (0, groups * (K + 1) + groups * 2 * S)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"workers": 0}, "workers must be an integer in"),
        ({"time_limit": -1.0}, "time_limit must be a finite number"),
        ({"heartbeat_every": 0.0}, "heartbeat_every must be a finite number"),
        ({"stale_after": 5.0, "heartbeat_every": 10.0}, "stale_after must be a finite number"),
        ({"checkpoint_every_seconds": -1.0}, "checkpoint_every_seconds must be a finite"),
        ({"checkpoint_every_seconds": float("nan")}, "checkpoint_every_seconds must be a finite"),
    ],
)
def test_bad_worker_settings_are_refused_before_anything_runs(
    kw: dict, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        run_sweep(_sweep(), str(tmp_path / "s.sqlite"), **kw)
    assert not (tmp_path / "s.sqlite").exists()


def test_a_study_name_survives_new_problem_fields() -> None:
    # The seed comparison recorded under ravine 0.x before Problem.needs_data_dir existed: the same
    # command must keep naming the same study, or rerunning it would start over from zero.
    seed = [problems.get(n).with_epochs(3) for n in ("mnist-logreg", "mnist-mlp", "mnist-lenet5")]
    optimizers = ["sgd", "momentum", "nag", "adagrad", "adadelta", "rmsprop", "adam"]
    assert Sweep(seed, optimizers, k=4, seeds=2).name == "study-fe56f553b7"
    cifar = next(p for p in problems.PROBLEMS if p.name == "cifar10-resnet18")
    assert cifar.identity()["needs_data_dir"] is True
