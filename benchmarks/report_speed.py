"""How long `ravine report` takes on a large store (goal: 10,000 runs in < 30 s).

Fills a temporary SQLite store with a synthetic study through the store's schema (bulk inserts:
training would take days), then times ravine.bench.report.analyse and write_report.

    .venv/bin/python benchmarks/report_speed.py [--problems 13 --optimizers 15 --k 40 --seeds 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ravine.bench import report, spaces
from ravine.bench.store import open_store

OPTIMIZERS = list(spaces.SPACES["v1"])


def fill(url: str, n_problems: int, n_opt: int, k: int, seeds: int, epochs: int) -> int:
    rng = np.random.default_rng(0)
    names = OPTIMIZERS[:n_opt]
    problems = [
        {"name": f"p{i}", "epochs": epochs, "metric": "val_accuracy", "batch_size": 32}
        for i in range(n_problems)
    ]
    config = {
        "problems": problems,
        "optimizers": names,
        "k": k,
        "seeds": seeds,
        "schedule": "constant",
        "space_version": "v1",
        "qmc_seed": 0,
        "data_dir": None,
    }
    with open_store(url) as store:
        store.register("big", config, problems, [(o, o, "") for o in names], [])
        conn = store._conn  # bulk load: the benchmark times reading, not writing
        trials = {}
        rows = []
        for o in names:
            for t in spaces.trials(o, k):
                trials[(o, t.index)] = len(trials) + 1
                rows.append((trials[(o, t.index)], "v1", o, 0, t.index, json.dumps(dict(t.hp))))
        conn.executemany("INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?)", rows)
        runs, epoch_rows, run_id = [], [], 0
        for p in problems:
            for o in names:
                skill = rng.uniform(0.6, 0.9)
                plan = [("tune", i, 0) for i in range(k + 1)]
                plan += [
                    ("final", i, s)
                    for i in (0, 1 + int(rng.integers(k)))
                    for s in range(1, seeds + 1)
                ]
                for phase, index, seed in plan:
                    run_id += 1
                    failed = rng.random() < 0.03
                    runs.append(
                        (run_id, "big", p["name"], o, trials[(o, index)], phase, seed,
                         "failed" if failed else "finished", "diverged" if failed else None,
                         epochs, "0.1", "2.13", "cpu", 1, "x")
                    )  # fmt: skip
                    if failed:
                        continue
                    final = skill + rng.normal(0, 0.05)
                    for e in range(1, epochs + 1):
                        acc = final * (1 - 0.5**e)
                        epoch_rows.append(
                            (run_id, e, 1 - acc, acc, 1 - acc, acc, 1 - acc, acc, 0.1, 10 * e, 0.5)
                        )
        conn.executemany(
            "INSERT INTO runs (id, study, problem, optimizer, trial_id, phase, seed, status, "
            "error, epochs_done, code_version, torch_version, cpu, threads, git_hash, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
            runs,
        )
        conn.executemany("INSERT INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", epoch_rows)
        conn.commit()
    return run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--problems", type=int, default=13)
    parser.add_argument("--optimizers", type=int, default=15)
    parser.add_argument("--k", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "big.sqlite")
        n = fill(url, a.problems, a.optimizers, a.k, a.seeds, a.epochs)
        t0 = time.perf_counter()
        with open_store(url) as store:
            report.analyse(store)
        t1 = time.perf_counter()
        report.write_report(url, Path(tmp) / "out")
        t2 = time.perf_counter()
    print(f"runs: {n} ({a.problems} problems x {a.optimizers} optimizers, K={a.k}, S={a.seeds})")
    print(f"analyse: {t1 - t0:.1f} s; write_report (analysis + figures + files): {t2 - t1:.1f} s")
    print(f"goal: < 30 s for 10,000 runs -> {'met' if t2 - t1 < 30 else 'NOT met'}")


if __name__ == "__main__":
    main()
