"""Throughput and overhead of the benchmark lab (ravine bench) on small problems.

1. Runs per hour with 1 and with 2 worker processes (one torch thread each, so two workers use
   two cores): the same sweep into fresh SQLite stores. Goal: 2 workers >= 1.8x one.
2. The lab's overhead per run against a bare training loop doing the same work: for each of the
   sweep's trials, build the model from the same seed, shuffle per epoch, train, and evaluate
   validation and test after every epoch (what the lab records), with nothing else: no store,
   no checkpoint, no heartbeat. Goal: lab time per run <= 1.05x the bare loop's.
3. Reading a store of 10,000 runs x 10 epochs through the read API (what `ravine report` does):
   goal well under 30 s.

    .venv/bin/python benchmarks/bench_throughput.py                 # digits-mlp, ~22 runs
    .venv/bin/python benchmarks/bench_throughput.py --problem mnist-logreg --epochs 2

Timings on a shared machine are noisy: run it on a quiet one; the ratios are what matter.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ravine.bench import open_store, problems, run_sweep, spaces
from ravine.bench.runner import Sweep, _hp
from ravine.bench.store import RUN_ENV_COLUMNS
from ravine.optim import registry
from ravine.train import evaluate


def lab(sweep: Sweep, folder: Path, workers: int) -> tuple[float, int]:
    url = str(folder / f"w{workers}.sqlite")
    t0 = time.perf_counter()
    counts = run_sweep(sweep, url, workers=workers, threads=1, progress=False)
    elapsed = time.perf_counter() - t0
    if counts["failed"] or counts["pending"] or counts["running"]:
        raise SystemExit(f"the sweep did not finish cleanly: {counts}")
    return elapsed, counts["finished"]


def bare(problem: problems.Problem, runs: list[dict]) -> float:
    """The same runs as a plain loop: model from the seed, shuffle, step, evaluate val + test."""
    t0 = time.perf_counter()
    for r in runs:
        built = problems.build(problem, r["seed"])
        opt = registry.create(r["optimizer"], built.model.parameters(), **_hp(r["hp"]))
        x, y = built.train
        g = torch.Generator().manual_seed(r["seed"])
        for _ in range(problem.epochs):
            built.model.train()
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(x), problem.batch_size):
                idx = perm[i : i + problem.batch_size]
                loss = built.loss_fn(built.model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss.item()  # as fit does: the epoch's mean training loss is recorded
            evaluate(built.model, built.val, built.loss_fn)
            evaluate(built.model, built.test, built.loss_fn)
    return time.perf_counter() - t0


def store_read(folder: Path, n_runs: int, n_epochs: int) -> tuple[float, float]:
    """(seconds to write, seconds to read) a synthetic store of n_runs x n_epochs."""
    url = str(folder / "big.sqlite")
    store = open_store(url)
    sweep = Sweep([problems.get("digits-mlp")], ["sgd"], k=n_runs - 1, seeds=1)
    from ravine.bench.runner import plan

    t0 = time.perf_counter()
    plan(store, sweep)
    env = dict.fromkeys(RUN_ENV_COLUMNS, "x")
    with store._write() as cur:
        cur.execute(
            "UPDATE runs SET status = 'finished', epochs_done = ?, "
            + ", ".join(f"{c} = ?" for c in RUN_ENV_COLUMNS),
            (n_epochs, *env.values()),
        )
        ids = [row[0] for row in cur.execute("SELECT id FROM runs").fetchall()]
        cur.executemany(
            "INSERT INTO epochs (run_id, epoch, train_loss, val_loss, val_accuracy, test_loss, "
            "test_accuracy, lr, steps, wall_time) "
            "VALUES (?, ?, 1.0, 1.0, 0.5, 1.0, 0.5, 0.1, ?, 0.1)",
            [(i, e, 10 * e) for i in ids for e in range(1, n_epochs + 1)],
        )
    written = time.perf_counter() - t0
    store.close()
    t0 = time.perf_counter()
    with open_store(url) as s:
        runs, epochs = s.runs(), s.epochs()
    read = time.perf_counter() - t0
    assert len(runs) == n_runs and len(epochs) == n_runs * n_epochs
    return written, read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problem", default="digits-mlp")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--optimizer", default="momentum")
    parser.add_argument("--trials", type=int, default=19, help="K: runs = K + 1 tuning + finals")
    parser.add_argument("--store-runs", type=int, default=10_000)
    args = parser.parse_args()
    torch.set_num_threads(1)

    problem = problems.get(args.problem).with_epochs(args.epochs)
    sweep = Sweep([problem], [args.optimizer], k=args.trials, seeds=1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        problems.build(problem, 0)  # load (and cache) the data before timing
        spaces.trials(args.optimizer, 1)  # and import scipy.stats.qmc: one-time costs
        bare(problem, [{"seed": 0, "optimizer": args.optimizer, "hp": {}}])  # warm both paths
        # the runs a sweep does (the trial list and finalists), planned in a scratch store
        one, n1 = lab(sweep, folder, 1)
        with open_store(folder / "w1.sqlite") as s:
            runs = s.runs(sweep.name)
        plain = bare(problem, runs)
        two, n2 = lab(sweep, folder, 2)
        written, read = store_read(folder, args.store_runs, 10)

    print(f"problem {problem.name}, {problem.epochs} epochs, {args.optimizer}, {n1} runs per sweep")
    print(f"{'':28}{'seconds':>10}{'runs/hour':>12}")
    print(f"{'lab, 1 worker':28}{one:10.2f}{3600 * n1 / one:12.0f}")
    print(f"{'lab, 2 workers':28}{two:10.2f}{3600 * n2 / two:12.0f}")
    print(f"{'bare loop (same runs)':28}{plain:10.2f}{3600 * len(runs) / plain:12.0f}")
    print(f"2 workers / 1 worker throughput: {one / two:.2f}x (goal >= 1.8x)")
    print(
        f"lab / bare loop time per run:    {one / plain:.3f}x (goal <= 1.05x; "
        f"{(one - plain) / n1 * 1e3:.0f} ms per run more)"
    )
    print(
        f"store of {args.store_runs} runs x 10 epochs: written in {written:.2f} s, "
        f"read (runs() + epochs()) in {read:.2f} s (goal well under 30 s)"
    )


if __name__ == "__main__":
    main()
