"""What every process of a run shares: where the control plane is, timeouts, heartbeats, atomic
files and the statistics each process records."""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class RunSpec:
    """The run's coordinates, handed to every process.

    ``prefix`` namespaces the run's keys in the store (torchrun's agent store is shared). Every
    wait is bounded by one of the timeouts (seconds).
    """

    host: str
    port: int
    run_dir: str
    t0: float
    prefix: str = "ravine/"
    connect_timeout: float = 30.0
    pair_timeout: float = 60.0
    heartbeat_interval: float = 0.25
    checkpoint_every: float = 0.5

    def store(self) -> dist.Store:
        from ravine.parallel.transport import connect_store

        return dist.PrefixStore(
            self.prefix, connect_store(self.host, self.port, self.connect_timeout)
        )


def deadline(config: Any, started: float) -> float:
    """When a worker stops early: ``config.time_limit`` s of training after ``started`` (its
    first step; a replacement keeps its predecessor's), or never."""
    return math.inf if config.time_limit is None else started + config.time_limit


def set_one_thread() -> None:
    """One intra-op thread per process: the processes are the parallelism."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def start_heartbeat(spec: RunSpec, key: str) -> threading.Event:
    """A daemon thread writing time.time() to ``key`` every ``spec.heartbeat_interval`` s; set
    the returned event to stop it. A SIGSTOPped process stops beating, which is how a hang is
    noticed. The thread has its own store connection: a TCPStore client is one socket, and a
    blocking wait on it (a pair's rendezvous, a worker waiting for a shard) would hold the beat.
    """
    stop = threading.Event()
    store = spec.store()
    interval = spec.heartbeat_interval

    def beat() -> None:
        while not stop.is_set():
            try:
                store.set(key, repr(time.time()))
            except Exception:  # the store is gone: the run is over
                return
            stop.wait(interval)

    store.set(key, repr(time.time()))
    threading.Thread(target=beat, daemon=True, name=f"heartbeat {key}").start()
    return stop


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and os.replace: a kill -9 leaves the old
    file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save, atomically (see atomic_write_bytes)."""
    atomic_write_bytes(path, tensor_bytes(obj))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A shard checkpoint: tensors and plain containers only (weights_only=True)."""
    return torch.load(path, map_location="cpu", weights_only=True)


@dataclass
class Recorder:
    """One process's statistics: progress points, bytes per message kind, staleness, faults."""

    role: str
    index: int
    incarnation: int
    t0: float
    updates: int = 0
    curve: list[tuple[float, int, float]] = field(default_factory=list)  # (s, updates, loss)
    bytes: Counter[str] = field(default_factory=Counter)
    staleness: Counter[int] = field(default_factory=Counter)
    faults: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def point(self, loss: float) -> None:
        self.curve.append((time.time() - self.t0, self.updates, loss))

    def fault(self, kind: str, who: str, detail: str) -> None:
        detail = detail.split(". This is typically")[0][:300]  # gloo's advice adds nothing
        self.faults.append({"t": time.time() - self.t0, "kind": kind, "who": who, "detail": detail})

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "index": self.index,
            "incarnation": self.incarnation,
            "updates": self.updates,
            "curve": self.curve,
            "bytes": dict(self.bytes),
            "staleness": {str(k): v for k, v in self.staleness.items()},
            "faults": self.faults,
            "extra": self.extra,
        }

    def save(self, store: dist.Store) -> None:
        """Publish to the control plane (the collector may be on another machine)."""
        store.set(stats_key(self.role, self.index, self.incarnation), json.dumps(self.to_dict()))


def stats_key(role: str, index: int, incarnation: int) -> str:
    return f"stats/{role}{index}.{incarnation}"


def read_stats(store: dist.Store, role: str, count: int) -> list[dict[str, Any]]:
    """Every incarnation's published statistics of ``count`` processes of ``role``."""
    found = []
    for index in range(count):
        inc = 0
        while store.check([stats_key(role, index, inc)]) or store.check(
            [stats_key(role, index, inc + 1)]  # a killed incarnation may have published nothing
        ):
            key = stats_key(role, index, inc)
            if store.check([key]):
                found.append(json.loads(store.get(key)))
            inc += 1
    return found


def tensor_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def from_bytes(data: bytes) -> Any:
    """The inverse of tensor_bytes, with weights_only=True (nothing but tensors and containers)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def run_role(target: Callable[..., None], *args: Any) -> None:
    """Run a process's role and leave without Python's shutdown: gloo pairs that a daemon thread
    still waits on must not be torn down by interpreter finalisation (it can block)."""
    from ravine.parallel.transport import TransportError

    code = 0
    try:
        target(*args)
    except TransportError as e:  # an expected failure: its message says what was waited for
        print(f"ravine parallel: {e}", flush=True)
        code = 3
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


# Children are forked from a forkserver that has imported these once. A fresh interpreter per
# child (spawn) pays the import of torch and ravine each time: measured 10 s per child on a loaded
# 2-core machine, which would dominate every run and every respawn after a fault. The forkserver
# is a clean single-threaded process, so its children are as safe as spawned ones.
# torch._dynamo is listed because torch.optim.Optimizer.__init__ imports it on its first call
# (torch._disable_dynamo): a shard or a synchronous replica building its optimizer paid 5-12 s
# otherwise, and a sync run under --time-limit 5 stopped before its first step.
PRELOAD = [
    "torch._dynamo",
    "ravine.parallel.worker",
    "ravine.parallel.server",
    "ravine.parallel.collective",
    "ravine.parallel.hogwild",
]


def process_context() -> Any:
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


class Children:
    """The processes a launcher started, always reaped: ``close`` kills what is still running
    (SIGKILL also ends a SIGSTOPped one) and joins everything, with a bound."""

    def __init__(self) -> None:
        self.ctx = process_context()
        self.procs: list[Any] = []

    def start(self, target: Callable[..., None], *args: Any, name: str) -> Any:
        p = self.ctx.Process(target=run_role, args=(target, *args), name=name, daemon=True)
        p.start()
        self.procs.append(p)
        return p

    def close(self, grace: float = 5.0) -> None:
        until = time.monotonic() + grace
        for p in self.procs:
            p.join(max(0.0, until - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.kill()
        for p in self.procs:
            p.join(5.0)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(grace=0.0 if exc[0] is not None else 5.0)


@dataclass
class RunResult:
    """What a run reports (``to_json``): loss against wall time and updates, updates per second,
    bytes per message kind, staleness histogram and faults seen."""

    config: dict[str, Any]
    wall_s: float
    updates: int
    final_loss: float
    curve: list[tuple[float, int, float]]  # (seconds, updates, loss), all workers merged
    bytes: dict[str, int] = field(default_factory=dict)
    staleness: dict[int, int] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    params: torch.Tensor | None = field(default=None, repr=False)  # final w (not in the JSON)
    replicas: list[torch.Tensor] = field(default_factory=list, repr=False)  # sync EASGD's x_i

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def bytes_per_update(self) -> float:
        return sum(self.bytes.values()) / self.updates if self.updates else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "wall_s": self.wall_s,
            "updates": self.updates,
            "updates_per_s": self.updates_per_s,
            "bytes_per_update": self.bytes_per_update,
            "final_loss": self.final_loss,
            "curve": self.curve,
            "bytes": self.bytes,
            "staleness": {str(k): v for k, v in sorted(self.staleness.items())},
            "faults": self.faults,
            "extra": self.extra,
        }


def merge_curves(curves: list[list[tuple[float, int, float]]]) -> list[tuple[float, int, float]]:
    """Points of several workers on one time axis; a point's updates are the sum over workers of
    the last count each had reported by then (each worker's own count at its points)."""
    events = sorted((t, w, u, loss) for w, c in enumerate(curves) for t, u, loss in c)
    latest = [0] * len(curves)
    merged = []
    for t, w, u, loss in events:
        latest[w] = u
        merged.append((t, sum(latest), loss))
    return merged
