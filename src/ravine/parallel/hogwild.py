"""Hogwild! (Niu, Recht, Ré & Wright 2011, arXiv:1106.5730): lock-free SGD on shared memory.

The parameters live in one shared-memory tensor (``share_memory_``); each worker process takes
its own disjoint shard of the data (it is handed only that shard), runs with one thread, and for
each example subtracts the sparse step of :meth:`Problem.example_step` at the example's
coordinates only, without any lock. ``lock=True`` is the comparison: one lock held around every
read-compute-write, so no update is ever lost and nothing runs in parallel.

Lost updates are counted, not guessed: a shadow counter in shared memory is incremented at the
same coordinates in the same unsynchronised read-modify-write way right after each write; the
increments that did not survive (expected minus found) are updates lost to a collision in the
same window. On the sparse problem they are rare, on the dense one they are not.

The parent samples the loss of the shared parameters every ``sample_every`` s for the curve.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ravine.parallel.algorithms import example_order, worker_seed
from ravine.parallel.config import Config
from ravine.parallel.problem import Problem
from ravine.parallel.runtime import Children, RunResult, set_one_thread


def hogwild_main(
    config: Config,
    rank: int,
    part: Problem,
    w: torch.Tensor,
    shadow: torch.Tensor,
    progress: torch.Tensor,
    lock: Any,
    go: Any,
    stop: torch.Tensor,
) -> None:
    """One Hogwild! worker (process entry point): ``config.steps`` examples of ``part``."""
    set_one_thread()
    w_np, shadow_np, progress_np, stop_np = (
        w.numpy(),
        shadow.numpy(),
        progress.numpy(),
        stop.numpy(),
    )
    lr = config.learning_rate
    touched = 0
    if not go.wait(60.0):
        raise TimeoutError(f"hogwild worker {rank}: no start signal within 60 s")
    done = 0
    for done, i in enumerate(example_order(part.n, config.steps, worker_seed(config, rank)), 1):
        if lock is not None:
            lock.acquire()
        coords, delta = part.example_step(w_np, i, lr)
        w_np[coords] -= delta
        if config.count_lost:
            shadow_np[coords] += 1
        if lock is not None:
            lock.release()
        touched += len(coords)
        if done % 64 == 0:
            progress_np[rank, 0] = done
            progress_np[rank, 1] = touched
            if stop_np[0]:  # the parent's time limit
                break
    progress_np[rank, 0] = done
    progress_np[rank, 1] = touched
    progress_np[rank, 2] = 1


def run_hogwild(
    config: Config, problem: Problem, timeout: float, sample_every: float = 0.05
) -> RunResult:
    """Run Hogwild! with ``config.workers`` processes; see the module docstring."""
    w = problem.init().share_memory_()
    shadow = torch.zeros(problem.dim, dtype=torch.int64).share_memory_()
    # per worker: examples done, coordinates written, finished
    progress = torch.zeros(config.workers, 3, dtype=torch.int64).share_memory_()
    stop = torch.zeros(1, dtype=torch.int64).share_memory_()
    with Children() as children:
        lock = children.ctx.Lock() if config.lock else None
        go = children.ctx.Event()
        procs = []
        for r in range(config.workers):
            part = problem.shard(r, config.workers)
            args = (config, r, part, w, shadow, progress, lock, go, stop)
            procs.append(children.start(hogwild_main, *args, name=f"hogwild{r}"))
        start = time.time()  # the workers wait for go: process start-up is not timed
        go.set()
        curve = []
        limit = time.monotonic() + timeout
        while True:
            done = progress[:, 2].sum().item() == config.workers
            curve.append((time.time() - start, int(progress[:, 0].sum()), problem.loss(w.clone())))
            if done or not any(p.is_alive() for p in procs):
                break
            if time.monotonic() > limit:
                raise TimeoutError(
                    f"ravine parallel: hogwild did not finish within timeout={timeout:g} s"
                )
            if config.time_limit is not None and time.time() > start + config.time_limit:
                stop[0] = 1
            time.sleep(sample_every)
        end = time.time()
    failed = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if failed and not progress[:, 2].all():
        raise RuntimeError(f"ravine parallel: hogwild workers failed (exit codes {failed})")
    updates = int(progress[:, 0].sum())
    touched = int(progress[:, 1].sum())
    lost = touched - int(shadow.sum()) if config.count_lost else None
    return RunResult(
        config.to_dict(),
        end - start,
        updates,
        problem.loss(w),
        curve,
        {},
        extra={"lost_updates": lost, "coordinate_writes": touched, "locked": config.lock},
        params=w.clone(),
    )
