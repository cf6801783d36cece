"""Synchronous algorithms over c10d collectives (gloo here, the same code with NCCL on GPUs):
the all-reduce baseline (every replica applies the mean gradient: large-batch SGD) and
synchronous EASGD (Zhang et al. 2015: the replicas' mean moves every replica's copy of the
center every tau steps).

A synchronous run stops together: the stop vote (time limit) travels as one extra element of the
all-reduced tensor. It cannot survive a dead peer (the next collective fails on every replica
within the timeout, and the run reports the failure): that is what the parameter server is for.
"""

from __future__ import annotations

import datetime
import time

import torch
import torch.distributed as dist

from ravine.parallel.algorithms import allreduce_step, batch_order, easgd_sync_step, worker_seed
from ravine.parallel.config import Config
from ravine.parallel.problem import Problem
from ravine.parallel.runtime import (
    Children,
    Recorder,
    RunResult,
    RunSpec,
    deadline,
    from_bytes,
    merge_curves,
    read_stats,
    set_one_thread,
    tensor_bytes,
)


def _all_reduce_with_vote(
    group: dist.ProcessGroup, tensor: torch.Tensor, stop: bool, rec: Recorder
) -> tuple[torch.Tensor, bool]:
    """Sum ``tensor`` over the replicas; True when any replica voted to stop."""
    buf = torch.cat([tensor, tensor.new_tensor([float(stop)])])
    dist.all_reduce(buf, group=group)
    rec.bytes["allreduce:payload"] += buf.numel() * buf.element_size()
    return buf[:-1], bool(buf[-1] > 0)


def sync_main(config: Config, spec: RunSpec, rank: int, part: Problem) -> None:
    """One replica of a synchronous run (process entry point)."""
    set_one_thread()
    store = spec.store()
    p = config.workers
    group = dist.ProcessGroupGloo(
        dist.PrefixStore("sync/", store), rank, p, datetime.timedelta(seconds=spec.pair_timeout)
    )
    rec = Recorder("worker", rank, 0, spec.t0)
    lr = config.learning_rate
    x = torch.nn.Parameter(part.init())
    center = part.init()
    optimizer = torch.optim.SGD([x], lr=lr)
    alpha = config.elasticity
    batches = batch_order(part.n, config.batch_size, config.steps, worker_seed(config, rank))
    started = time.time()  # the time limit counts training, not the set-up above
    store.set(f"worker/{rank}/start", repr(started))
    stop_at = deadline(config, started)
    for step, rows in enumerate(batches):
        late = time.time() > stop_at
        g = part.grad(x.detach(), rows)
        if config.algo == "allreduce":
            g_sum, stop = _all_reduce_with_vote(group, g, late, rec)
            if stop:
                break
            allreduce_step(optimizer, x, g_sum / p)
        else:
            x_mean = None
            if step % config.tau == 0:
                x_sum, stop = _all_reduce_with_vote(group, x.detach(), late, rec)
                if stop:
                    break
                x_mean = x_sum / p
            easgd_sync_step(x.detach(), g, center, x_mean, lr, alpha, p * alpha)
        rec.updates += 1
        if step % config.eval_every == 0:
            rec.point(part.loss(x.detach()))
    final = x.detach() if config.algo == "allreduce" else center
    store.set(f"replica/{rank}", tensor_bytes({"param": final, "replica": x.detach()}))
    rec.save(store)


def run_sync(config: Config, spec: RunSpec, problem: Problem, timeout: float) -> RunResult:
    """Start the replicas, wait (bounded) and merge what they report."""
    parts = [problem.shard(r, config.workers) for r in range(config.workers)]
    with Children() as children:
        procs = [
            children.start(sync_main, config, spec, r, parts[r], name=f"replica{r}")
            for r in range(config.workers)
        ]
        give_up = time.monotonic() + timeout
        for proc in procs:
            proc.join(max(0.0, give_up - time.monotonic()))
        end = time.time()
        running = [r for r, proc in enumerate(procs) if proc.is_alive()]
        if running:
            raise TimeoutError(
                f"ravine parallel: replicas {running} did not finish within timeout={timeout:g} s"
            )
        failed = {r: proc.exitcode for r, proc in enumerate(procs) if proc.exitcode != 0}
        if failed:
            raise RuntimeError(
                f"ravine parallel: synchronous {config.algo} failed (replica: exit code "
                f"{failed}); a synchronous run cannot survive a dead replica"
            )
    return collect_sync(config, spec.store(), problem, end, spec.t0)


def collect_sync(
    config: Config, store: dist.Store, problem: Problem, end: float, t0: float
) -> RunResult:
    """The run's report from what the replicas published in the store."""
    stats = read_stats(store, "worker", config.workers)
    first = min(float(store.get(f"worker/{r}/start")) for r in range(config.workers))
    shift = first - t0
    curves = [[(t - shift, u, loss) for t, u, loss in s["curve"]] for s in stats]
    states = [from_bytes(store.get(f"replica/{r}")) for r in range(config.workers)]
    bytes_: dict[str, int] = {}
    for s in stats:
        for k, v in s["bytes"].items():
            bytes_[k] = bytes_.get(k, 0) + v
    return RunResult(
        config.to_dict(),
        end - first,
        sum(s["updates"] for s in stats),
        problem.loss(states[0]["param"]),
        merge_curves(curves),
        bytes_,
        extra={"startup_s": shift},
        params=states[0]["param"],
        replicas=[s["replica"] for s in states],
    )
