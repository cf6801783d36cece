"""Throughput and overhead of the benchmark lab (ravine bench) on small problems.

1. The lab's overhead per run against a bare training loop doing the same work: for each of the
   sweep's runs, build the model from the same seed, shuffle per epoch in the lab's order
   (ravine.data.order.shuffled), train, count the training accuracy, and evaluate validation
   and test after every epoch (what the lab records), with nothing else: no store, no
   checkpoint, no heartbeat. The bare loop's validation and test losses and training accuracy
   are checked equal, bit for bit, to the lab's records, so both sides train the same runs.
   Lab sweeps (one worker, a fresh store each) and bare loops alternate --repeats times, so
   load drifting on a shared machine hits both alike; the median and the best ratio are
   printed. Goal: lab time per run <= 1.05x the bare loop's.
2. Runs per hour with 1 and with 2 worker processes (one torch thread each, so two workers use
   two cores): the same sweep into fresh SQLite stores. Goal: 2 workers >= 1.8x one.
3. Reading a store of 10,000 runs x 10 epochs through the read API (what `ravine report` does):
   goal well under 30 s.
4. --breakdown: where a lab run's time goes, in ms per run, from one more instrumented sweep
   (claim, problem build, training, validation, test evaluation, checkpoint serialisation and
   write, store writes, ...), beside the bare loop's.

    .venv/bin/python benchmarks/bench_throughput.py                 # digits-mlp, 22 runs
    .venv/bin/python benchmarks/bench_throughput.py --breakdown
    .venv/bin/python benchmarks/bench_throughput.py --checkpoints   # + a checkpoint every epoch
    .venv/bin/python benchmarks/bench_throughput.py --problem mnist-logreg --epochs 2

Timings on a shared machine are noisy: run it on a quiet one; the ratios are what matter.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

import ravine.train
from ravine.bench import open_store, problems, run_sweep, runner, spaces
from ravine.bench import store as store_mod
from ravine.bench.runner import Sweep, _hp, plan
from ravine.bench.store import RUN_ENV_COLUMNS
from ravine.data.order import shuffled
from ravine.optim import registry
from ravine.train import evaluate


def lab(sweep: Sweep, url: str, workers: int, **options: Any) -> tuple[float, int]:
    t0 = time.perf_counter()
    counts = run_sweep(sweep, url, workers=workers, threads=1, progress=False, **options)
    elapsed = time.perf_counter() - t0
    if counts["failed"] or counts["pending"] or counts["running"]:
        raise SystemExit(f"the sweep did not finish cleanly: {counts}")
    return elapsed, counts["finished"]


def bare(problem: problems.Problem, runs: list[dict], records: list | None = None) -> float:
    """The same runs as a plain loop: model from the seed, the lab's shuffle, step, count the
    training accuracy, evaluate val + test; ``records`` gets (run id, epoch, train accuracy,
    val loss, test loss) per epoch."""
    t0 = time.perf_counter()
    for r in runs:
        built = problems.build(problem, r["seed"])
        opt = registry.create(r["optimizer"], built.model.parameters(), **_hp(r["hp"]))
        x, y = built.train
        for epoch in range(problem.epochs):
            built.model.train()
            perm = shuffled(len(x), r["seed"], epoch)
            correct = torch.zeros((), dtype=torch.int64)
            for i in range(0, len(x), problem.batch_size):
                idx = perm[i : i + problem.batch_size]
                xb, yb = x[idx], y[idx]
                out = built.model(xb)
                loss = built.loss_fn(out, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss.item()  # as fit does: the epoch's mean training loss is recorded
                correct += (out.argmax(1) == yb).sum()
            accuracy = correct.item() / len(x)
            val_loss, _ = evaluate(built.model, built.val, built.loss_fn)
            test_loss, _ = evaluate(built.model, built.test, built.loss_fn)
            if records is not None:
                records.append((r.get("id"), epoch + 1, accuracy, val_loss, test_loss))
    return time.perf_counter() - t0


def check_same_runs(problem: problems.Problem, runs: list[dict], url: str) -> None:
    """The bare loop's records equal the lab's, bit for bit: both sides do the same work."""
    records: list = []
    bare(problem, runs, records)
    with open_store(url) as s:
        lab_rows = {
            (e["run_id"], e["epoch"]): (e["train_accuracy"], e["val_loss"], e["test_loss"])
            for e in s.epochs()
        }
    for run_id, epoch, *values in records:
        if lab_rows[(run_id, epoch)] != tuple(values):
            raise SystemExit(
                f"the bare loop does not train the lab's runs: run {run_id} epoch {epoch}: "
                f"lab {lab_rows[(run_id, epoch)]}, bare {tuple(values)}"
            )


class Timers:
    """Wraps functions so that each call adds its seconds to a named total (``--breakdown``):
    wall seconds and this thread's CPU seconds (steadier when other jobs load the machine,
    blind to waits for the disk)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - t0
                self.cpu[label] += time.thread_time() - c0
                self.calls[label] += 1

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()


@contextlib.contextmanager
def instrumented(wraps: list[tuple[Any, str, str]]) -> Iterator[Timers]:
    timers = Timers()
    try:
        for owner, attr, label in wraps:
            timers.wrap(owner, attr, label)
        yield timers
    finally:
        timers.restore()


# Leaves of a lab run's time (disjoint: none of them calls another), in the order printed.
# fit looks these up as module globals at call time, so wrapping the module attribute works.
LAB_PARTS: list[tuple[Any, str, str]] = [
    (store_mod.Store, "claim", "claim a run (store)"),
    (problems, "build", "build the problem (model, data)"),
    (registry, "create", "create the optimizer"),
    (ravine.train, "_train_epoch", "training steps (fit)"),
    (ravine.train, "_end_epoch", "validation + epoch bookkeeping (fit)"),
    (ravine.train, "evaluate", "test evaluation (callback)"),
    (ravine.train.RunState, "to_checkpoint", "checkpoint: gather the run's state"),
    (ravine.train.torch, "save", "checkpoint: serialise (torch.save)"),
    (ravine.train, "atomic_write", "checkpoint: write + rename (+ fsync if durable)"),
    (store_mod.Store, "record_epoch", "epoch row (store)"),
    (store_mod.Store, "finish", "final status (store)"),
    (runner, "decide_finals", "decide finals (store read + insert)"),
    (runner, "_discard", "delete the run's checkpoint"),
    (runner, "plan", "plan the sweep (once)"),
    (runner, "environment", "environment, git hash (once per worker)"),
]
BARE_PARTS: list[tuple[Any, str, str]] = [
    (problems, "build", "build the problem (model, data)"),
    (registry, "create", "create the optimizer"),
    (ravine.train, "_evaluate", "validation + test evaluation"),
]


# (total wall seconds, total CPU seconds, wall seconds per part, CPU seconds per part)
Side = tuple[float, float, dict[str, float], dict[str, float]]


def breakdown(
    sweep: Sweep, problem: problems.Problem, folder: Path, runs: list[dict]
) -> tuple[int, Side, Side]:
    """One instrumented lab sweep (1 worker, in this thread) and bare loop: (runs, lab, bare)."""
    with instrumented(LAB_PARTS) as t:
        c0 = time.thread_time()
        lab_s, n = lab(sweep, str(folder / "breakdown.sqlite"), 1)
        lab_side = (lab_s, time.thread_time() - c0, dict(t.seconds), dict(t.cpu))
    with instrumented(BARE_PARTS) as t:
        c0 = time.thread_time()
        bare_s = bare(problem, runs)
        bare_side = (bare_s, time.thread_time() - c0, dict(t.seconds), dict(t.cpu))
    return n, lab_side, bare_side


def print_breakdown(result: tuple[int, Side, Side]) -> None:
    n, (lab_s, lab_c, lab_w, lab_cpu), (bare_s, bare_c, bare_w, bare_cpu) = result
    other = "other (fit setup, callbacks, store connection, glue)"
    rows = [(label, lab_w.get(label, 0.0), lab_cpu.get(label, 0.0)) for _, _, label in LAB_PARTS]
    rows.append((other, lab_s - sum(lab_w.values()), lab_c - sum(lab_cpu.values())))

    def bare_of(parts: dict[str, float], total: float) -> dict[str, float]:
        val = "validation + test evaluation"
        return {
            "build the problem (model, data)": parts.get("build the problem (model, data)", 0.0),
            "create the optimizer": parts.get("create the optimizer", 0.0),
            "training steps (fit)": total - sum(parts.values()),
            "validation + epoch bookkeeping (fit)": parts.get(val, 0.0),
        }

    bare_wall, bare_cpu_of = bare_of(bare_w, bare_s), bare_of(bare_cpu, bare_c)
    print(f"\nwhere a lab run's time goes (one instrumented sweep, ms per run, {n} runs):")
    print(f"  {'':58}{'lab':>9}{'lab CPU':>9}{'bare':>9}{'bare CPU':>9}")
    for label, wall, cpu in rows:
        cells = f"{1e3 * wall / n:9.2f}{1e3 * cpu / n:9.2f}"
        if label in bare_wall:
            cells += f"{1e3 * bare_wall[label] / n:9.2f}{1e3 * bare_cpu_of[label] / n:9.2f}"
        print(f"  {label:58}{cells}")
    totals = f"{1e3 * lab_s / n:9.2f}{1e3 * lab_c / n:9.2f}{1e3 * bare_s / n:9.2f}"
    print(f"  {'total':58}{totals}{1e3 * bare_c / n:9.2f}")
    print(
        "  (the bare loop's test evaluation is counted in its validation row; CPU: this "
        "thread's seconds, without waits for the disk)"
    )


def store_read(folder: Path, n_runs: int, n_epochs: int) -> tuple[float, float]:
    """(seconds to write, seconds to read) a synthetic store of n_runs x n_epochs."""
    url = str(folder / "big.sqlite")
    store = open_store(url)
    sweep = Sweep([problems.get("digits-mlp")], ["sgd"], k=n_runs - 1, seeds=1)
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


def cpu_seconds() -> float:
    """CPU seconds of this process and its reaped children (the 2-worker sweep's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def alternate(
    sides: dict[str, Callable[[int], float]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Each side once per repeat, in turn, so that load drifting over time hits all alike.

    Returns (wall seconds, CPU seconds) per side. On a machine that other jobs load, CPU
    seconds vary far less than wall seconds (the cores are shared, not the work), so their
    ratio shows the lab's overhead when the wall-clock ratio is noise.
    """
    times: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(repeats):
        for name, side in sides.items():
            c0 = cpu_seconds()
            times[name].append(side(i))
            cpu[name].append(cpu_seconds() - c0)
    return times, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problem", default="digits-mlp")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--optimizer", default="momentum")
    parser.add_argument("--trials", type=int, default=19, help="K: runs = K + 1 tuning + finals")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats of each side")
    parser.add_argument("--store-runs", type=int, default=10_000)
    parser.add_argument("--breakdown", action="store_true", help="where a lab run's time goes")
    parser.add_argument(
        "--checkpoints",
        action="store_true",
        help="time the lab with a checkpoint every epoch too (--checkpoint-every 0), without "
        "and with fsync (fit's default; the lab's is without); by default the lab's short runs "
        "write none (one at most every 10 s)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    problem = problems.get(args.problem).with_epochs(args.epochs)
    sweep = Sweep([problem], [args.optimizer], k=args.trials, seeds=1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        problems.build(problem, 0)  # load (and cache) the data before timing
        spaces.trials(args.optimizer, 1)  # and import scipy.stats.qmc: one-time costs
        bare(problem, [{"seed": 0, "optimizer": args.optimizer, "hp": {}}])  # warm both paths
        first, n1 = lab(sweep, str(folder / "warm.sqlite"), 1)
        with open_store(folder / "warm.sqlite") as s:
            runs = s.runs(sweep.name)  # the runs a sweep does: the trial list and finalists
        check_same_runs(problem, runs, str(folder / "warm.sqlite"))

        every_epoch, durable = "lab, checkpoint every epoch", "lab, durable checkpoint every epoch"

        def checkpointing_lab(i: int, fsync: bool) -> float:
            runner.DURABLE_CHECKPOINTS = fsync
            try:
                url = str(folder / f"{'d' if fsync else 'e'}{i}.sqlite")
                return lab(sweep, url, 1, checkpoint_every_seconds=0)[0]
            finally:
                runner.DURABLE_CHECKPOINTS = False

        sides: dict[str, Callable[[int], float]] = {
            "lab, 1 worker": lambda i: lab(sweep, str(folder / f"a{i}.sqlite"), 1)[0],
            "bare loop (same runs)": lambda i: bare(problem, runs),
            "lab, 2 workers": lambda i: lab(sweep, str(folder / f"b{i}.sqlite"), 2)[0],
        }
        if args.checkpoints:
            sides[every_epoch] = lambda i: checkpointing_lab(i, False)
            sides[durable] = lambda i: checkpointing_lab(i, True)
        times, cpu = alternate(sides, args.repeats)
        parts = breakdown(sweep, problem, folder, runs) if args.breakdown else None
        written, read = store_read(folder, args.store_runs, 10)

    med = {name: statistics.median(ts) for name, ts in times.items()}
    best = {name: min(ts) for name, ts in times.items()}
    one, plain = "lab, 1 worker", "bare loop (same runs)"
    print(
        f"problem {problem.name}, {problem.epochs} epochs, {args.optimizer}, {n1} runs per sweep, "
        f"{args.repeats} alternating repeats (first, untimed sweep: {first:.2f} s)"
    )
    print(f"{'':38}{'median s':>10}{'min s':>10}{'runs/hour':>12}")
    for name in times:
        print(f"{name:38}{med[name]:10.2f}{best[name]:10.2f}{3600 * n1 / med[name]:12.0f}")
    print(
        f"2 workers / 1 worker throughput: {med[one] / med['lab, 2 workers']:.2f}x (goal >= 1.8x)"
    )
    for name in [one, *([every_epoch, durable] if args.checkpoints else [])]:
        ratios = [a / b for a, b in zip(times[name], times[plain])]
        print(
            f"{name} / bare loop: median {statistics.median(ratios):.3f}x, best "
            f"{min(ratios):.3f}x (goal <= 1.05x; {1e3 * (med[name] - med[plain]) / n1:.1f} ms "
            "per run more, medians)"
        )
        cpu_ratios = [a / b for a, b in zip(cpu[name], cpu[plain])]
        extra = statistics.median(cpu[name]) - statistics.median(cpu[plain])
        print(
            f"{name} / bare loop in CPU seconds: median {statistics.median(cpu_ratios):.3f}x, "
            f"best {min(cpu_ratios):.3f}x ({1e3 * extra / n1:.1f} ms per run more; less "
            "sensitive to other jobs' load than wall time, blind to waits for the disk)"
        )
    print(
        f"store of {args.store_runs} runs x 10 epochs: written in {written:.2f} s, "
        f"read (runs() + epochs()) in {read:.2f} s (goal well under 30 s)"
    )
    if parts is not None:
        print_breakdown(parts)


if __name__ == "__main__":
    main()
