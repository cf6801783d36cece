"""A worker process of an asynchronous algorithm: runs the worker generator of
:mod:`ravine.parallel.algorithms` and serves its requests over one pair per shard.

If a shard's pair fails (the shard died), the worker records the fault, waits (bounded) for the
shard's next incarnation to announce itself in the store, joins it under a new pair prefix and
goes on: a pull or elastic exchange is repeated there, a push in flight is dropped (counted).
Progress is written to the store so that a replacement incarnation does only the steps left.
"""

from __future__ import annotations

import time
from collections import Counter

import torch

from ravine.parallel.algorithms import WORKERS, Elastic, Pull, Push, Step, batch_order, worker_seed
from ravine.parallel.config import Config
from ravine.parallel.problem import Problem, split_bounds
from ravine.parallel.runtime import Recorder, RunSpec, deadline, set_one_thread, start_heartbeat
from ravine.parallel.server import join_counter, join_key, ready_key
from ravine.parallel.transport import (
    Kind,
    Pair,
    ShardChannel,
    pair_prefix,
    wait_change,
)


def progress_key(worker: int) -> str:
    return f"worker/{worker}/steps"


class ServerClient:
    """The worker's channels to every shard, with reconnection to a restarted shard."""

    def __init__(self, config: Config, spec: RunSpec, store, worker: int, incarnation: int, rec):
        self.config, self.spec, self.store = config, spec, store
        self.worker, self.incarnation, self.rec = worker, incarnation, rec
        self.bounds = split_bounds(config.n_features + 1, config.shards)
        self.shard_incarnations: list[bytes] = [b""] * config.shards
        self.channels: list[ShardChannel | None] = [None] * config.shards
        self.retired_bytes: Counter[str] = Counter()  # of pairs closed by a shard restart
        for s in range(config.shards):
            self.connect(s)

    def connect(self, s: int) -> None:
        """Join shard ``s``'s current incarnation (a newer one than the last we knew)."""
        what = f"shard {s} to accept workers"
        old = self.shard_incarnations[s]
        sinc = wait_change(self.store, ready_key(s), old, self.spec.connect_timeout, what)
        n = self.store.add(join_counter(s), 1)
        self.store.set(join_key(s, n), f"{self.worker}.{self.incarnation}.{int(sinc)}")
        prefix = pair_prefix(s, int(sinc), self.worker, self.incarnation)
        pair = Pair(self.store, prefix, 1, self.spec.pair_timeout)
        lo, hi = self.bounds[s]
        if self.channels[s] is not None:
            self.retired_bytes.update(self.channels[s].pair.bytes)
        self.channels[s] = ShardChannel(pair, hi - lo)
        self.shard_incarnations[s] = sinc

    def _exchange(self, kind: Kind, args: list[int], payload: torch.Tensor | None) -> list:
        """One request to every shard at once; a failed shard is rejoined and asked again,
        except that a push is not resent (it may have been applied) and a push-pull is
        retried as a pull. A push's lost reply is None."""
        replies: list = [None] * len(self.channels)
        todo = list(range(len(self.channels)))
        while todo:
            for s in todo:
                lo, hi = self.bounds[s]
                self.channels[s].start(kind, args[s], None if payload is None else payload[lo:hi])
            failed = []
            for s in todo:
                try:
                    replies[s] = self.channels[s].finish()
                except RuntimeError as e:
                    self.rec.fault("shard lost", f"shard {s}", str(e))
                    failed.append(s)
            for s in failed:
                self.connect(s)
            if kind in (Kind.PUSH, Kind.PUSH_PULL) and failed:  # may have been applied: not resent
                dropped = self.rec.extra.get("pushes_dropped", 0)
                self.rec.extra["pushes_dropped"] = dropped + len(failed)
                if kind is Kind.PUSH:
                    break
                kind, args, payload = Kind.PULL, [0] * len(self.channels), None
            todo = failed
        return replies

    def serve(self, request: object) -> object:
        if isinstance(request, Pull):
            replies = self._exchange(Kind.PULL, [0] * len(self.channels), None)
            return torch.cat([r[2] for r in replies]), [r[0] for r in replies]
        if isinstance(request, Push):
            kind = Kind.PUSH_PULL if request.pull else Kind.PUSH
            replies = self._exchange(kind, request.versions, request.grad)
            # the shards keep the staleness histogram; a shard that failed answered a pull
            # instead (PUSH_PULL) or nothing (PUSH)
            staleness = [r[1] for r in replies if r is not None]
            if not request.pull:
                return staleness
            return staleness, torch.cat([r[2] for r in replies]), [r[0] for r in replies]
        if isinstance(request, Elastic):
            replies = self._exchange(Kind.ELASTIC, [0] * len(self.channels), request.x)
            return torch.cat([r[2] for r in replies])
        raise TypeError(f"unknown request {request!r}")

    def bye(self) -> None:
        for channel in self.channels:
            try:
                channel.start(Kind.BYE)
                channel.finish()
            except RuntimeError:
                pass  # the shard is gone already; nothing to say goodbye to

    def bytes(self) -> Counter[str]:
        total = Counter(self.retired_bytes)
        for channel in self.channels:
            total.update(channel.pair.bytes)
        return total


def worker_main(config: Config, spec: RunSpec, index: int, incarnation: int, part: Problem) -> None:
    """Process entry point: train on ``part`` (this worker's shard of the data)."""
    set_one_thread()
    store = spec.store()
    rec = Recorder("worker", index, incarnation, spec.t0)
    beat = start_heartbeat(spec, f"hb/worker{index}.{incarnation}")
    done = int(store.add(progress_key(index), 0))
    steps = config.steps - done
    client = ServerClient(config, spec, store, index, incarnation, rec)
    seed = worker_seed(config, index, incarnation)
    generator = WORKERS[config.algo](
        part, batch_order(part.n, config.batch_size, steps, seed), config
    )
    reply: object = None
    last_flush = time.monotonic()
    if not store.check([f"worker/{index}/start"]):  # the first incarnation's first step
        store.set(f"worker/{index}/start", repr(time.time()))
    stop_at = deadline(config, float(store.get(f"worker/{index}/start")))
    try:
        while True:
            request = generator.send(reply)
            if isinstance(request, Step):
                rec.updates += 1
                store.add(progress_key(index), 1)
                if request.loss is not None:
                    rec.point(request.loss)
                if time.time() > stop_at:
                    rec.extra["stopped_by"] = "time limit"
                    break
                if time.monotonic() - last_flush > 1.0:  # a killed worker leaves its curve
                    rec.bytes = client.bytes()
                    rec.save(store)
                    last_flush = time.monotonic()
                reply = None
            else:
                reply = client.serve(request)
    except StopIteration:
        pass
    client.bye()
    rec.bytes = client.bytes()
    rec.save(store)
    store.set(f"worker/{index}/done", str(incarnation))
    store.add("workers_done", 1)
    beat.set()
