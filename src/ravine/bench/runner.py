"""The protocol and its workers: plan a sweep, claim runs, train them, pick finalists.

Protocol (what makes the comparison fair):

1. Tuning: every (problem, optimizer) gets the same pre-registered list, its one-shot default
   (trial 0) and K scrambled-Halton trials (``ravine.bench.spaces``), each trained once with
   seed 0 for the problem's epoch budget. The same seed gives every optimizer the same initial
   weights and the same data order.
2. Selection: on the validation metric of the last epoch only (``Store.validation`` does not
   even select the test columns). A failed or non-finite run ranks last; ties go to the lower
   trial index (the default first).
3. Finals: the selected trial and the default are re-run with S fresh seeds 1..S (the tuning
   seed 0 is not reused, so the winner's score carries no selection bias); test metrics of these
   runs are what reports show.

All runs of a phase are written as pending before any is trained; workers claim them
atomically (``ravine.bench.store``), beat a heartbeat, write one row per epoch and checkpoint
every epoch but the last with ``ravine.fit`` (atomic files), so a killed worker's run resumes
where its last checkpointed epoch ended (at most one epoch redone), on any machine that sees the
checkpoint folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ravine.bench import problems as problems_mod
from ravine.bench import spaces
from ravine.bench.store import Claim, Store, open_store

__all__ = [
    "SCHEDULES",
    "Sweep",
    "WarmupCosine",
    "environment",
    "plan",
    "run_sweep",
    "select",
    "work",
]

SCHEDULES = ("constant", "cosine", "warmup_cosine")
TERMINAL = ("finished", "failed")


# --------------------------------------------------------------------------- schedules


@dataclass
class WarmupCosine:
    """lr multiplier per step t of T: linear warmup over W steps, then cosine to zero.

    m(t) = (t + 1) / W for t < W;  m(t) = (1 + cos(pi (t - W) / (T - W))) / 2 after.
    W = 0 is plain cosine annealing (Loshchilov & Hutter, 2017, arXiv:1608.03983); the warmup
    follows Goyal et al. (2017, arXiv:1706.02677). A dataclass so that LambdaLR's state_dict
    (and so fit's checkpoint) holds its fields, not a closure.
    """

    total: int
    warmup: int = 0

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            return (t + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(t - self.warmup, span) / span))


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """None for "constant"; a per-step LambdaLR for "cosine" and "warmup_cosine" (5% warmup)."""
    if name == "constant":
        return None
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")
    warmup = max(1, round(0.05 * total_steps)) if name == "warmup_cosine" else 0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total_steps, warmup))


# --------------------------------------------------------------------------- environment


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_hash() -> str | None:
    here = Path(__file__).resolve().parent
    if not any((p / ".git").exists() for p in here.parents):
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict[str, Any]:
    """What a run records about where it ran (the store's run columns)."""
    import ravine

    return {
        "code_version": ravine.__version__,
        "torch_version": torch.__version__,
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
        "git_hash": _git_hash(),
    }


# --------------------------------------------------------------------------- the sweep


@dataclass
class Sweep:
    """A study's configuration; its name defaults to a digest of it (same command, same study)."""

    problems: Sequence[problems_mod.Problem]
    optimizers: Sequence[str]
    k: int = 8
    seeds: int = 3
    schedule: str = "constant"
    space_version: str = spaces.CURRENT_VERSION
    qmc_seed: int = 0
    data_dir: str | None = None
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.problems:
            raise ValueError("problems must name at least one problem, got none")
        if not self.optimizers:
            raise ValueError("optimizers must name at least one optimizer, got none")
        if len(set(self.optimizers)) != len(self.optimizers):
            raise ValueError(f"optimizers must not repeat, got {list(self.optimizers)}")
        if not (isinstance(self.k, int) and 0 <= self.k <= 10_000):
            raise ValueError(f"k (trials) must be an integer in [0, 10000], got {self.k!r}")
        if not (isinstance(self.seeds, int) and 1 <= self.seeds <= 1000):
            raise ValueError(f"seeds must be an integer in [1, 1000], got {self.seeds!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for o in self.optimizers:
            spaces.get(o, self.space_version)  # a clear error before anything is written
        if self.name is None:
            digest = hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode())
            self.name = "study-" + digest.hexdigest()[:10]

    def config(self) -> dict[str, Any]:
        """What the study records and its name digests (problems by their identity)."""
        return {
            "problems": [p.identity() for p in self.problems],
            "optimizers": list(self.optimizers),
            "k": self.k,
            "seeds": self.seeds,
            "schedule": self.schedule,
            "space_version": self.space_version,
            "qmc_seed": self.qmc_seed,
            "data_dir": self.data_dir,
        }

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any]) -> Sweep:
        """The study a store recorded, problems as recorded (not as today's table says)."""
        probs = [problems_mod.Problem.from_spec(spec) for spec in config["problems"]]
        return cls(
            probs,
            config["optimizers"],
            k=config["k"],
            seeds=config["seeds"],
            schedule=config["schedule"],
            space_version=config["space_version"],
            qmc_seed=config["qmc_seed"],
            data_dir=config.get("data_dir"),
            name=name,
        )

    def problem(self, name: str) -> problems_mod.Problem:
        for p in self.problems:
            if p.name == name:
                return p
        raise KeyError(f"problem {name!r} is not part of study {self.name!r}")

    def trial_lists(self) -> dict[str, list[spaces.Trial]]:
        lists = {
            o: spaces.trials(o, self.k, self.qmc_seed, self.space_version) for o in self.optimizers
        }
        sizes = {o: len(t) for o, t in lists.items()}
        if len(set(sizes.values())) != 1:  # equal budgets are the protocol, not a hope
            raise RuntimeError(f"unequal tuning budgets across optimizers: {sizes}")
        return lists


def _trial_key(t: spaces.Trial) -> tuple[Any, ...]:
    return (t.version, t.optimizer, t.seed, t.index, dict(t.hp))


def plan(store: Store, sweep: Sweep) -> int:
    """Register the study and write every tuning run as pending (idempotent); returns new runs."""
    from ravine.optim import catalog

    optimizers = []
    for o in sweep.optimizers:
        row = catalog.get(o)
        optimizers.append((o, f"{row.cls.__module__}.{row.cls.__qualname__}", str(row.paper)))
    store.register(
        sweep.name,  # type: ignore[arg-type]
        sweep.config(),
        [p.spec() for p in sweep.problems],
        optimizers,
        [
            (sweep.space_version, o, spaces.get(o, sweep.space_version).spec())
            for o in sweep.optimizers
        ],
    )
    lists = sweep.trial_lists()
    runs = [
        {
            "study": sweep.name,
            "problem": p.name,
            "optimizer": o,
            "trial": _trial_key(t),
            "phase": "tune",
            "seed": 0,
        }
        for p in sweep.problems
        for o in sweep.optimizers
        for t in lists[o]
    ]
    return store.add_runs(runs) + decide_all(store, sweep)


def _score(row: dict[str, Any], maximize: bool) -> float:
    """A run's selection score (higher is better); failed or non-finite runs rank last."""
    metric = row["val_accuracy"] if maximize else row["val_loss"]
    if row["status"] != "finished" or metric is None or not math.isfinite(metric):
        return -math.inf
    return metric if maximize else -metric


def select(rows: Sequence[dict[str, Any]], maximize: bool) -> int | None:
    """The trial index with the best last-epoch validation metric (ties: lower index).

    ``rows`` are :meth:`Store.validation` rows: no test metric is available to this function.
    None when no run finished with a finite metric.
    """
    best: tuple[float, int] | None = None
    for r in rows:
        s = _score(r, maximize)
        if s == -math.inf:
            continue
        if best is None or s > best[0] or (s == best[0] and r["trial_index"] < best[1]):
            best = (s, r["trial_index"])
    return None if best is None else best[1]


def decide_finals(store: Store, sweep: Sweep, problem: str, optimizer: str) -> int:
    """Once every tuning run of (problem, optimizer) has ended, add its final runs."""
    rows = store.validation(sweep.name, problem, optimizer, "tune")  # type: ignore[arg-type]
    if len(rows) < sweep.k + 1 or any(r["status"] not in TERMINAL for r in rows):
        return 0
    best = select(rows, sweep.problem(problem).maximize)
    if best is None:
        return 0  # every trial failed: nothing to confirm, the report shows the failures
    by_index = {r["trial_index"]: r for r in rows}
    finals = sorted({0, best})
    runs = [
        {
            "study": sweep.name,
            "problem": problem,
            "optimizer": optimizer,
            "trial": (sweep.space_version, optimizer, sweep.qmc_seed, i, by_index[i]["hp"]),
            "phase": "final",
            "seed": s,
        }
        for i in finals
        for s in range(1, sweep.seeds + 1)
    ]
    return store.add_runs(runs)


def decide_all(store: Store, sweep: Sweep) -> int:
    return sum(
        decide_finals(store, sweep, p.name, o) for p in sweep.problems for o in sweep.optimizers
    )


def expected_total(store: Store, sweep: Sweep) -> tuple[int, int]:
    """(runs ended, runs the study will have): undecided finals counted as 2 S (S if K = 0);
    a group whose tuning runs all failed gets none."""
    done, total = 0, 0
    tune_ok: dict[tuple[str, str], bool] = {}
    tune_open: dict[tuple[str, str], bool] = {}
    decided: set[tuple[str, str]] = set()
    for r in store.group_counts(sweep.name):  # type: ignore[arg-type]
        key, n = (r["problem"], r["optimizer"]), int(r["n"])
        done += n if r["status"] in TERMINAL else 0
        if r["phase"] == "final":
            decided.add(key)
            total += n
        else:
            tune_ok[key] = tune_ok.get(key, False) or r["status"] == "finished"
            tune_open[key] = tune_open.get(key, False) or r["status"] not in TERMINAL
    total += len(sweep.problems) * len(sweep.optimizers) * (sweep.k + 1)
    per_group = sweep.seeds * (1 if sweep.k == 0 else 2)
    for p in sweep.problems:
        for o in sweep.optimizers:
            key = (p.name, o)
            hopeless = not tune_ok.get(key, False) and not tune_open.get(key, True)
            if key not in decided and not hopeless:
                total += per_group
    return done, total


# --------------------------------------------------------------------------- one run


class _LostClaim(Exception):
    """Another worker re-claimed this run (our heartbeat went stale): drop it."""


def _record_missing_epoch(
    store: Store, claim: Claim, built: problems_mod.Built, ckpt_file: Path
) -> None:
    """A kill between fit's checkpoint and the epoch row leaves one row unwritten: add it.

    A checkpoint torn by a machine crash (the lab writes them without fsync, see
    :data:`DURABLE_CHECKPOINTS`) is deleted: the run starts over and rewrites its rows.
    """
    from ravine.train import CorruptCheckpointError, evaluate, load_checkpoint

    try:
        ckpt = load_checkpoint(ckpt_file)
    except CorruptCheckpointError:
        ckpt_file.unlink(missing_ok=True)
        return
    if ckpt["epoch"] <= claim.row["epochs_done"]:
        return
    history = ckpt["history"]
    built.model.load_state_dict(ckpt["model"])
    test_loss, test_acc = evaluate(built.model, built.test, built.loss_fn)
    i = ckpt["epoch"] - 1
    store.record_epoch(claim, ckpt["epoch"], _epoch_values(history, i, test_loss, test_acc))


# fit's checkpoints are atomic either way, so kill -9 never tears one; their fsync only guards
# against a machine crash, after which a lab run simply starts over. Without it the lab's
# checkpoint per epoch costs about half as much (benchmarks/bench_throughput.py --breakdown).
DURABLE_CHECKPOINTS = False

# A run checkpoints at an epoch end once this many seconds have passed since its last checkpoint
# (fit's checkpoint_every_seconds). A kill redoes at most that long plus one epoch, and the redone
# epochs are bit-identical, so nothing is lost; small problems' runs (tens of milliseconds) then
# write no checkpoint at all, where one per epoch cost them about 10% of their time.
CHECKPOINT_EVERY_SECONDS = 10.0

_SERIES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "time")


def _epoch_values(
    history: dict[str, Any], i: int, test_loss: float, test_acc: float | None
) -> dict[str, Any]:
    def at(key: str) -> Any:
        # train_accuracy exists in histories of fit versions that measure it
        series = history.get(key) or []
        return series[i] if i < len(series) else None

    return {
        "train_loss": at("train_loss"),
        "train_accuracy": at("train_accuracy"),
        "val_loss": at("val_loss"),
        "val_accuracy": at("val_accuracy"),
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "lr": at("lr"),
        "steps": history["steps"],
        "wall_time": at("time"),
    }


def execute(
    store: Store,
    claim: Claim,
    sweep: Sweep,
    checkpoint_root: Path,
    *,
    deadline: float | None = None,
    lost: threading.Event | None = None,
    device: str | None = None,
    checkpoint_every_seconds: float = CHECKPOINT_EVERY_SECONDS,
) -> str:
    """Train the claimed run to its end; returns the status written ("finished", "failed",
    "pending" when stopped by the deadline, "lost" when another worker holds it now)."""
    from ravine.callbacks import Callback
    from ravine.optim import registry
    from ravine.train import CHECKPOINT_NAME, evaluate, fit

    class AtDeadline(Callback):
        """Stop at the first epoch end past the deadline; fit checkpoints a callback's stop."""

        def on_epoch_end(self, epoch: int, logs: dict[str, float], run: Any) -> None:
            if deadline is not None and time.time() > deadline and epoch < problem.epochs:
                run.stop_training = True

    row = claim.row
    folder = checkpoint_root / f"{sweep.name}-run{claim.id}"
    if row["attempts"] == 1:
        _discard(folder)  # a leftover from another store's run
    try:
        problem = sweep.problem(row["problem"])
        built = problems_mod.build(problem, row["seed"], data_dir=sweep.data_dir)
        if (folder / CHECKPOINT_NAME).exists():
            _record_missing_epoch(store, claim, built, folder / CHECKPOINT_NAME)
            built = problems_mod.build(problem, row["seed"], data_dir=sweep.data_dir)
        optimizer = registry.create(row["optimizer"], built.model.parameters(), **_hp(row["hp"]))
        n_train = len(built.train[0])
        total = problems_mod.steps_per_epoch(n_train, problem.batch_size) * problem.epochs
        scheduler = make_scheduler(sweep.schedule, optimizer, total)

        def on_epoch(epoch: int, history: Any) -> None:
            test_loss, test_acc = evaluate(built.model, built.test, built.loss_fn)
            # the series themselves, not history.to_dict(): that copies every per-step loss
            series = {k: getattr(history, k, None) for k in _SERIES}
            values = _epoch_values(
                {**series, "steps": history.steps}, epoch - 1, test_loss, test_acc
            )
            if not store.record_epoch(claim, epoch, values) or (lost is not None and lost.is_set()):
                raise _LostClaim

        history = fit(
            built.model,
            optimizer,
            built.train,
            built.val,
            batch_size=problem.batch_size,
            epochs=problem.epochs,
            loss_fn=built.loss_fn,
            scheduler=scheduler,
            schedule_every="batch",
            seed=row["seed"],
            checkpoint_dir=folder,
            checkpoint_every_seconds=checkpoint_every_seconds,
            checkpoint_durable=DURABLE_CHECKPOINTS,
            # the folder is deleted once the run is finished: a checkpoint of the last epoch
            # would only serve a kill between that epoch's row and the final status, which
            # then redoes the epoch (at most one, as for any kill), bit-identically
            checkpoint_at_end=False,
            resume=True,
            verbose=0,
            device=device,
            callbacks=[AtDeadline(), on_epoch],
        )
    except _LostClaim:
        return "lost"
    except Exception as e:  # the sweep goes on: the run is recorded with its error
        message = f"{type(e).__name__}: {e}"
        if not store.finish(claim, "failed", message[:4000]):
            return "lost"
        _discard(folder)
        return "failed"
    if history.stop_reason == "callback":  # the deadline: resumed from this epoch's checkpoint
        store.finish(claim, "pending")
        return "pending"
    if not store.finish(claim, "finished"):
        return "lost"
    _discard(folder)
    return "finished"


def _discard(folder: Path) -> None:
    """Delete a run's checkpoint folder, if any (never an error: the run's result is stored)."""
    shutil.rmtree(folder, ignore_errors=True)


def _hp(hp: dict[str, Any]) -> dict[str, Any]:
    # JSON turned tuples (betas) into lists; the optimizers validate tuples
    return {k: tuple(v) if isinstance(v, list) else v for k, v in hp.items()}


# --------------------------------------------------------------------------- workers


class _Heartbeat(threading.Thread):
    """Beats the held run's heartbeat every ``every`` seconds on its own connection.

    ``lost`` is set only if the claim whose beat failed is still the one held: a beat of a run
    that just ended (its claim token cleared) must not mark the next run, claimed meanwhile, as
    taken from this worker (it would be dropped, then re-claimed once its heartbeat went stale).
    """

    def __init__(self, url: str, every: float) -> None:
        super().__init__(daemon=True, name="ravine-bench-heartbeat")
        self.url, self.every = url, every
        self._claim: Claim | None = None
        self._lock = threading.Lock()
        self.lost = threading.Event()
        self.done = threading.Event()

    def hold(self, claim: Claim | None) -> None:
        """Beat for ``claim`` from now on (None: for no run), with ``lost`` cleared."""
        with self._lock:
            self.lost.clear()
            self._claim = claim

    def run(self) -> None:
        store = open_store(self.url)
        try:
            while not self.done.wait(self.every):
                claim = self._claim
                if claim is not None and not store.heartbeat(claim):
                    with self._lock:
                        if self._claim is claim:
                            self.lost.set()
        finally:
            store.close()


def _check_device(device: str | None) -> None:
    """A device every run can use, checked once before any run (not failed run by run)."""
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available (torch {torch.__version__})")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'cpu', 'cuda[:i]' or 'mps', got {device!r}")


def _check_timing(stale_after: float, heartbeat_every: float) -> None:
    if not (math.isfinite(heartbeat_every) and heartbeat_every > 0):
        raise ValueError(
            f"heartbeat_every must be a finite number of seconds > 0, got {heartbeat_every!r}"
        )
    # a live worker must beat at least twice before its run counts as abandoned
    if not (math.isfinite(stale_after) and stale_after >= 2 * heartbeat_every):
        raise ValueError(
            f"stale_after must be a finite number of seconds >= 2 x heartbeat_every "
            f"({2 * heartbeat_every:g}), got {stale_after!r}"
        )


def _check_checkpoint_interval(seconds: float) -> None:
    if not (
        isinstance(seconds, (int, float))
        and not isinstance(seconds, bool)
        and math.isfinite(seconds)
        and seconds >= 0
    ):
        raise ValueError(
            f"checkpoint_every_seconds must be a finite number of seconds >= 0, got {seconds!r}"
        )


# A worker with nothing to claim first waits this long, then twice as long each time, up to poll.
_FIRST_WAIT = 0.01


def work(
    url: str,
    study: str,
    checkpoint_root: str | os.PathLike[str],
    *,
    deadline: float | None = None,
    stale_after: float = 120.0,
    heartbeat_every: float = 10.0,
    poll: float = 0.5,
    on_run: Callable[[str], None] | None = None,
    max_runs: int | None = None,
    device: str | None = None,
    checkpoint_every_seconds: float = CHECKPOINT_EVERY_SECONDS,
) -> int:
    """One worker: claim and train runs of ``study`` until none is left (or the deadline).

    Returns how many runs it ended. Waits for other workers' runs in flight, since their ends
    can add final runs; a run whose worker died is re-claimed after ``stale_after`` seconds (at
    once when it ran on this host under a process that is gone). The wait starts at 10 ms and
    doubles up to ``poll`` seconds: a worker that finds nothing to claim usually waits for a run
    about to end (the last tuning run before the finals, the other worker's last run), and a
    fixed half-second sleep there cost small sweeps a third of their time with 2 workers.
    ``checkpoint_every_seconds``: see :data:`CHECKPOINT_EVERY_SECONDS` (0: every epoch).
    """
    _check_timing(stale_after, heartbeat_every)
    _check_checkpoint_interval(checkpoint_every_seconds)
    store = open_store(url)
    config = store.study_config(study)
    if config is None:
        store.close()
        raise ValueError(f"study {study!r} is not in {url}")
    sweep = Sweep.from_config(study, config)
    root = Path(checkpoint_root)
    env = environment()
    beat = _Heartbeat(url, heartbeat_every)
    beat.start()
    ended = 0
    wait = min(_FIRST_WAIT, poll)
    try:
        while max_runs is None or ended < max_runs:
            if deadline is not None and time.time() > deadline:
                break
            claim = store.claim(study, stale_after, env)
            if claim is None:
                counts = store.counts(study)
                if (
                    counts["pending"] == 0
                    and counts["running"] == 0
                    and decide_all(store, sweep) == 0
                ):
                    break
                time.sleep(wait)
                wait = min(2 * wait, poll)
                continue
            wait = min(_FIRST_WAIT, poll)
            beat.hold(claim)
            try:
                status = execute(
                    store,
                    claim,
                    sweep,
                    root,
                    deadline=deadline,
                    lost=beat.lost,
                    device=device,
                    checkpoint_every_seconds=checkpoint_every_seconds,
                )
            finally:
                beat.hold(None)
            if status in TERMINAL:
                ended += 1
                if claim.row["phase"] == "tune":
                    decide_finals(store, sweep, claim.row["problem"], claim.row["optimizer"])
            if on_run is not None:
                on_run(status)
    finally:
        beat.done.set()
        beat.join(timeout=heartbeat_every + 5)
        store.close()
    return ended


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the sweep process dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_process(url: str, study: str, root: str, threads: int, options: dict[str, Any]) -> None:
    _die_with_parent()
    torch.set_num_threads(threads)
    work(url, study, root, **options)


def default_checkpoint_root(url: str) -> Path:
    """Next to a SQLite store (``results.sqlite.checkpoints``); ./ravine-bench-checkpoints for
    PostgreSQL (give a folder every machine sees for cross-machine resumes)."""
    if url.startswith(("postgresql://", "postgres://")):
        return Path("ravine-bench-checkpoints")
    return Path(f"{url}.checkpoints")


def run_sweep(
    sweep: Sweep,
    url: str,
    *,
    workers: int = 1,
    checkpoint_root: str | os.PathLike[str] | None = None,
    time_limit: float | None = None,
    stale_after: float = 120.0,
    heartbeat_every: float = 10.0,
    progress: bool | None = None,
    threads: int | None = None,
    device: str | None = None,
    checkpoint_every_seconds: float = CHECKPOINT_EVERY_SECONDS,
) -> dict[str, int]:
    """Plan ``sweep`` in the store at ``url`` and run it with ``workers`` processes.

    Torch threads per worker: ``threads`` or the machine's cores divided among the workers.
    ``device`` ("cuda", "cuda:1", ...): where every run trains (fit's device=); the CPU by
    default. It is a property of the machine, not of the study: results are recorded alike.
    ``checkpoint_every_seconds``: how often a run checkpoints at an epoch end (0: every epoch;
    see :data:`CHECKPOINT_EVERY_SECONDS`); results do not depend on it.
    Returns the study's run counts per status when the workers stop (all runs ended, or the
    time limit: in-flight runs stop at an epoch end, checkpointed, and are pending again).
    """
    if not (isinstance(workers, int) and 1 <= workers <= 1024):
        raise ValueError(f"workers must be an integer in [1, 1024], got {workers!r}")
    if time_limit is not None and not (math.isfinite(time_limit) and time_limit > 0):
        raise ValueError(f"time_limit must be a finite number of seconds > 0, got {time_limit!r}")
    _check_timing(stale_after, heartbeat_every)
    _check_device(device)
    _check_checkpoint_interval(checkpoint_every_seconds)
    root = Path(checkpoint_root) if checkpoint_root is not None else default_checkpoint_root(url)
    root.mkdir(parents=True, exist_ok=True)
    deadline = None if time_limit is None else time.time() + time_limit
    cores = os.cpu_count() or 1
    per_worker = threads if threads is not None else max(1, cores // workers)
    options = {
        "deadline": deadline,
        "stale_after": stale_after,
        "heartbeat_every": heartbeat_every,
        "device": device,
        "checkpoint_every_seconds": checkpoint_every_seconds,
    }
    with open_store(url) as store:
        plan(store, sweep)
    # the planning connection is closed: SQLite connections must not cross a fork
    procs = [] if workers == 1 else _start_workers(url, sweep, root, workers, per_worker, options)
    with open_store(url) as store:
        bar = _bar(store, sweep, progress)
        try:
            if not procs:
                previous = torch.get_num_threads()
                torch.set_num_threads(per_worker)
                try:
                    work(url, sweep.name, root, on_run=lambda _: bar.refresh_from(store), **options)  # type: ignore[arg-type]
                finally:
                    torch.set_num_threads(previous)
            else:
                try:
                    while any(p.is_alive() for p in procs):
                        bar.refresh_from(store)
                        for p in procs:
                            p.join(timeout=1.0 / workers)  # about one refresh a second
                finally:
                    for p in procs:
                        if p.is_alive():  # interrupted: the runs are re-claimed next time
                            p.terminate()
                            p.join(timeout=10)
                failed = [p.exitcode for p in procs if p.exitcode not in (0, None)]
                if failed:
                    raise RuntimeError(f"bench workers exited with codes {failed}")
            bar.refresh_from(store)
        finally:
            bar.close()
        return store.counts(sweep.name)  # type: ignore[arg-type]


def _start_workers(
    url: str, sweep: Sweep, root: Path, workers: int, threads: int, options: dict[str, Any]
) -> list[Any]:
    """Worker processes, forked where that is safe (Linux, no CUDA context yet): a forked
    worker starts at once, a spawned one first imports torch and ravine (seconds each)."""
    fork = sys.platform.startswith("linux") and not torch.cuda.is_initialized()
    ctx = multiprocessing.get_context("fork" if fork else "spawn")
    procs = [
        ctx.Process(
            target=_worker_process,
            args=(url, sweep.name, str(root), threads, options),
            daemon=True,
        )
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    return procs


class _Progress:
    """Runs ended / expected total with ETA (tqdm; silent when not a terminal unless asked)."""

    def __init__(self, sweep: Sweep, enabled: bool) -> None:
        self.sweep = sweep
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=1, unit="run", desc=f"bench {sweep.name}", dynamic_ncols=True)

    def refresh_from(self, store: Store) -> None:
        if self.bar is None:
            return
        done, total = expected_total(store, self.sweep)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _bar(store: Store, sweep: Sweep, progress: bool | None) -> _Progress:
    enabled = progress if progress is not None else sys.stderr.isatty()
    bar = _Progress(sweep, enabled)
    if bar.bar is not None:
        done, total = expected_total(store, sweep)
        bar.bar.total = total
        bar.bar.n = done
        bar.bar.refresh()
    return bar
