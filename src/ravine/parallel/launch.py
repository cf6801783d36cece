"""``ravine.parallel.run``: start a run's processes on this machine, supervise them, report.

For the parameter-server algorithms the launcher hosts the control-plane TCPStore (a free
loopback port by default), starts S shard processes and W worker processes (spawn, one thread
each), and supervises them without ever restarting the job:

- a process that dies (SIGKILL, crash) is noticed at once (its exit code) and respawned as a new
  incarnation: a worker rejoins every shard through the store and does the steps its
  predecessor had left; a shard resumes from its atomic checkpoint with its version counter;
- a process that hangs (SIGSTOP) is noticed by its stale heartbeat within ``hang_timeout`` s,
  killed and replaced the same way;
- the run as a whole is bounded by ``timeout``: past it every child is killed and TimeoutError
  names who had not finished.

``faults`` injects faults for tests and the soak: (seconds after worker 0's first step,
"kill" | "stop", "worker" | "shard", index).
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ravine.parallel.config import SERVER_ALGOS, Config
from ravine.parallel.problem import Problem, make_problem
from ravine.parallel.runtime import (
    Children,
    RunResult,
    RunSpec,
    from_bytes,
    merge_curves,
    read_stats,
)
from ravine.parallel.server import shard_main
from ravine.parallel.transport import connect_store, wait_key
from ravine.parallel.worker import progress_key, worker_main


@dataclass(frozen=True)
class Fault:
    """A fault to inject: ``at`` s after worker 0's first step, ``action`` ("kill": SIGKILL, "stop":
    SIGSTOP) the ``role`` ("worker" or "shard") number ``index``."""

    at: float
    action: str
    role: str
    index: int

    def __post_init__(self) -> None:
        if self.action not in ("kill", "stop"):
            raise ValueError(f"Invalid fault action: {self.action!r} (expected 'kill' or 'stop')")
        if self.role not in ("worker", "shard"):
            raise ValueError(f"Invalid fault role: {self.role!r} (expected 'worker' or 'shard')")
        if not self.at >= 0:
            raise ValueError(f"Invalid fault time: {self.at!r} (expected seconds >= 0)")

    def check(self, config: Config) -> None:
        """Refuse a fault the run cannot have, before anything starts."""
        if config.algo not in SERVER_ALGOS:
            raise ValueError(
                f"Invalid faults for algo {config.algo!r}: fault injection and repair are for "
                f"the parameter-server algorithms ({', '.join(SERVER_ALGOS)})"
            )
        count = config.workers if self.role == "worker" else config.shards
        if not (isinstance(self.index, int) and 0 <= self.index < count):
            raise ValueError(
                f"Invalid fault index: {self.index!r} (expected a {self.role} in [0, {count}))"
            )


def run(
    config: Config,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: tuple[Fault, ...] | list[Fault] = (),
    hang_timeout: float = 3.0,
    timeout: float | None = None,
    problem: Problem | None = None,
) -> RunResult:
    """Run ``config`` with real processes on this machine and return what it reports.

    ``run_dir`` holds the shards' checkpoints (a temporary folder when None); the processes
    report through the control-plane store. ``timeout`` bounds the whole run (default:
    time_limit + 120 s, or 600 s).
    """
    if not hang_timeout > 0:
        raise ValueError(f"Invalid hang_timeout: {hang_timeout!r} (expected a number > 0)")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"Invalid timeout: {timeout!r} (expected a number > 0)")
    for fault in faults:
        fault.check(config)
    if timeout is None:
        timeout = 600.0 if config.time_limit is None else config.time_limit + 120.0
    problem = problem or make_problem(
        config.problem, n_samples=config.n_samples, n_features=config.n_features, seed=config.seed
    )
    with tempfile.TemporaryDirectory(prefix="ravine-parallel-") as tmp:
        folder = str(run_dir) if run_dir is not None else tmp
        Path(folder).mkdir(parents=True, exist_ok=True)
        if config.algo == "hogwild":
            from ravine.parallel.hogwild import run_hogwild

            return run_hogwild(config, problem, timeout)
        store = connect_store(host, port, 30.0, master=True)
        t0 = time.time()
        spec = RunSpec(host, store.port, folder, t0)
        if config.algo in SERVER_ALGOS:
            return Supervisor(config, spec, problem, list(faults), hang_timeout).run(timeout)
        from ravine.parallel.collective import run_sync

        return run_sync(config, spec, problem, timeout)


class Supervisor:
    """Starts and watches the shard and worker processes of one parameter-server run."""

    def __init__(
        self, config: Config, spec: RunSpec, problem: Problem, faults: list[Fault], hang: float
    ) -> None:
        self.config, self.spec, self.problem = config, spec, problem
        self.faults = sorted(faults, key=lambda f: f.at)
        self.hang = hang
        self.store = spec.store()
        self.children = Children()
        self.procs: dict[tuple[str, int], Any] = {}
        self.incarnation: Counter[tuple[str, int]] = Counter()
        self.started: dict[tuple[str, int], float] = {}
        self.seen: list[dict[str, Any]] = []
        self.training_start: float | None = None
        self.injected: list[dict[str, Any]] = []
        self.parts = [problem.shard(w, config.workers) for w in range(config.workers)]

    def start(self, role: str, index: int) -> None:
        inc = self.incarnation[role, index]
        if role == "shard":
            args: tuple[Any, ...] = (shard_main, self.config, self.spec, index, inc)
        else:
            args = (worker_main, self.config, self.spec, index, inc, self.parts[index])
        self.procs[role, index] = self.children.start(*args, name=f"{role}{index}.{inc}")
        self.started[role, index] = time.monotonic()

    def fault(self, kind: str, role: str, index: int, detail: str) -> None:
        self.seen.append(
            {
                "t": time.time() - self.spec.t0,
                "kind": kind,
                "who": f"{role} {index}.{self.incarnation[role, index]}",
                "detail": detail,
            }
        )

    def replace(self, role: str, index: int) -> None:
        self.incarnation[role, index] += 1
        self.start(role, index)

    def check(self, role: str, index: int) -> None:
        """Respawn ``role index`` if it died or its heartbeat went stale."""
        proc = self.procs[role, index]
        if not proc.is_alive():
            self.fault("died", role, index, f"exit code {proc.exitcode}")
            self.replace(role, index)
            return
        key = f"hb/{role}{index}.{self.incarnation[role, index]}"
        age = time.monotonic() - self.started[role, index]
        if self.store.check([key]):
            age = min(age, time.time() - float(self.store.get(key)))
        elif age < self.spec.connect_timeout:  # still importing torch: no beat expected yet
            return
        if age > self.hang:
            self.fault("hung", role, index, f"no heartbeat for {age:.1f} s; killed")
            proc.kill()
            proc.join(5.0)
            self.replace(role, index)

    def inject(self) -> None:
        """Inject the faults due, timed from the first worker's first step."""
        if not self.faults:
            return
        if self.training_start is None:
            if not self.store.check(["worker/0/start"]):
                return
            self.training_start = float(self.store.get("worker/0/start"))
        now = time.time() - self.training_start
        while self.faults and self.faults[0].at <= now:
            f = self.faults.pop(0)
            proc = self.procs[f.role, f.index]
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL if f.action == "kill" else signal.SIGSTOP)
                self.injected.append(
                    {"t": time.time() - self.spec.t0, "kind": f"injected {f.action}",
                     "who": f"{f.role} {f.index}.{self.incarnation[f.role, f.index]}",
                     "detail": "fault injection"}
                )  # fmt: skip

    def worker_done(self, w: int) -> bool:
        return self.store.check([f"worker/{w}/done"])

    def run(self, timeout: float) -> RunResult:
        config = self.config
        with self.children:
            for s in range(config.shards):
                self.start("shard", s)
            for w in range(config.workers):
                self.start("worker", w)
            start = time.monotonic()
            while True:
                now = time.monotonic() - start
                if now > timeout:
                    left = [w for w in range(config.workers) if not self.worker_done(w)]
                    raise TimeoutError(
                        f"ravine parallel: the run did not finish within timeout={timeout:g} s "
                        f"(workers {left} had not finished)"
                    )
                self.inject()
                pending = [w for w in range(config.workers) if not self.worker_done(w)]
                if not pending:
                    break
                for s in range(config.shards):
                    self.check("shard", s)
                for w in pending:
                    self.check("worker", w)
                time.sleep(0.05)
            end = time.time()
            self.store.set("stop", "1")
            self.finish_shards(start, timeout)
        return self.collect(end)

    def finish_shards(self, start: float, timeout: float) -> None:
        """Wait (bounded) until every shard wrote its final checkpoint after the stop flag."""
        for s in range(self.config.shards):
            while not self.store.check([f"shard/{s}/final"]):
                if time.monotonic() - start > timeout:
                    raise TimeoutError(f"ravine parallel: shard {s} did not stop in time")
                if not self.procs["shard", s].is_alive():
                    self.fault("died", "shard", s, "while stopping")
                    self.replace("shard", s)
                time.sleep(0.02)

    def collect(self, end: float) -> RunResult:
        incarnations = {f"{r}{i}": self.incarnation[r, i] + 1 for r, i in self.procs}
        return collect_server_run(
            self.config,
            self.store,
            self.problem,
            end,
            self.spec.t0,
            self.seen + self.injected,
            incarnations,
        )


def collect_server_run(
    config: Config,
    store: Any,
    problem: Problem,
    end: float,
    t0: float,
    launcher_faults: list[dict[str, Any]],
    incarnations: dict[str, int],
) -> RunResult:
    """The report of a parameter-server run from what its processes published in the store.

    Wall time counts from the first worker's first step; starting the processes is reported
    apart (startup_s). Times of curves and faults are on that clock too.
    """
    first = min(float(store.get(f"worker/{w}/start")) for w in range(config.workers))
    shift = first - t0
    workers = read_stats(store, "worker", config.workers)
    shard_stats = read_stats(store, "shard", config.shards)
    curves: list[list[tuple[float, int, float]]] = [[] for _ in range(config.workers)]
    done_before: dict[int, int] = {}
    for s in sorted(workers, key=lambda s: (s["index"], s["incarnation"])):
        # a replacement counts its updates from zero: offset by what earlier ones did
        offset = done_before.get(s["index"], 0)
        curves[s["index"]].extend((t - shift, u + offset, loss) for t, u, loss in s["curve"])
        done_before[s["index"]] = offset + s["updates"]
    bytes_: Counter[str] = Counter()
    for s in workers:
        bytes_.update(s["bytes"])
    shards = [from_bytes(store.get(f"shard/{s}/state")) for s in range(config.shards)]
    w_final = torch.cat([c["param"] for c in shards])
    staleness: Counter[int] = Counter()
    for c in shards:
        staleness.update({int(k): int(v) for k, v in c["staleness"].items()})
    faults = [
        {**f, "t": f["t"] - shift}
        for f in launcher_faults + [f for s in workers + shard_stats for f in s["faults"]]
    ]
    extra = {
        "shard_versions": [int(c["version"]) for c in shards],
        "resumed_versions": {
            f"shard {s['index']}.{s['incarnation']}": s["extra"]["resumed_version"]
            for s in shard_stats
            if "resumed_version" in s["extra"]
        },
        "clamped": sum(int(c["clamped"]) for c in shards),
        "ahead_of_restarted_shard": sum(int(c["ahead"]) for c in shards),
        "pushes_dropped": sum(s["extra"].get("pushes_dropped", 0) for s in workers),
        "startup_s": shift,
        "incarnations": incarnations,
    }
    return RunResult(
        config.to_dict(),
        end - first,
        sum(int(store.add(progress_key(w), 0)) for w in range(config.workers)),
        problem.loss(w_final),
        merge_curves(curves),
        dict(bytes_),
        dict(staleness),
        sorted(faults, key=lambda f: f["t"]),
        extra,
        params=w_final,
    )


def under_torchrun() -> bool:
    """True in a process started by torchrun (its agent sets these)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")) and (
        "TORCHELASTIC_RUN_ID" in os.environ
    )


def run_torchrun(
    config: Config, *, run_dir: str | os.PathLike[str], problem: Problem | None = None
) -> RunResult | None:
    """This process's part of a run under torchrun: the role comes from the rank.

    Parameter-server algorithms need WORLD_SIZE = shards + workers (ranks 0..S-1 are the
    shards, the rest workers); synchronous ones WORLD_SIZE = workers. The control plane is the
    agent's store at MASTER_ADDR:MASTER_PORT (rank 0 hosts one there if the agent does not),
    under a prefix of the run id and restart count. Rank 0 returns the report, the others None.
    torchrun restarts every process when one fails: under it, faults end the attempt instead
    of being repaired in place (that is what ``run`` on one machine does).
    """
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if config.algo == "hogwild":
        raise ValueError(
            "Invalid algo: 'hogwild' under torchrun (Hogwild! shares memory: one machine; "
            "run it without torchrun)"
        )
    server = config.algo in SERVER_ALGOS
    expected = config.shards + config.workers if server else config.workers
    if world != expected:
        what = "shards + workers" if server else "workers"
        raise ValueError(
            f"Invalid WORLD_SIZE: {world} (expected {what} = {expected} for {config.algo})"
        )
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    root = connect_store(host, port, 60.0, master=rank == 0 and not agent_store)
    prefix = (
        f"ravine/{os.environ['TORCHELASTIC_RUN_ID']}/"
        f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
    )
    store = dist.PrefixStore(prefix, root)
    if rank == 0:
        store.set("t0", repr(time.time()))
    t0 = float(wait_key(store, "t0", 60.0, "rank 0 to start the run"))
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    spec = RunSpec(host, port, str(run_dir), t0, prefix=prefix)
    problem = problem or make_problem(
        config.problem, n_samples=config.n_samples, n_features=config.n_features, seed=config.seed
    )
    if not server:
        from ravine.parallel.collective import collect_sync, sync_main

        sync_main(config, spec, rank, problem.shard(rank, config.workers))
        if rank != 0:
            return None
        for r in range(config.workers):
            wait_key(store, f"replica/{r}", spec.pair_timeout, f"replica {r}'s result")
        return collect_sync(config, store, problem, time.time(), t0)
    if rank >= config.shards:
        w = rank - config.shards
        worker_main(config, spec, w, 0, problem.shard(w, config.workers))
        return None
    from ravine.parallel.server import ShardServer

    ShardServer(config, spec, rank, 0).run()
    if rank != 0:
        return None
    end = time.time()
    for s in range(config.shards):
        wait_key(store, f"shard/{s}/final", spec.pair_timeout, f"shard {s} to stop")
    incarnations = {f"shard{s}": 1 for s in range(config.shards)}
    incarnations.update({f"worker{w}": 1 for w in range(config.workers)})
    return collect_server_run(config, store, problem, end, t0, [], incarnations)
