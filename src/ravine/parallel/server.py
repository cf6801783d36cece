"""A parameter-server shard process: one :class:`~ravine.parallel.algorithms.Shard` served to
every worker incarnation over its own gloo pair, checkpointed atomically.

Threads: an acceptor polls the shard's join queue in the store and starts one thread per joining
worker incarnation; that thread rendezvouses the pair and serves its requests, applying each under
the shard's lock (so updates are serialised per shard, as in DistBelief). A worker that dies
closes only its pair: its thread records the fault and ends, the others go on. A checkpointer
saves the shard (parameters, version counter, optimizer state, staleness) every
``checkpoint_every`` s; a restarted incarnation resumes from that file with its version counter.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch

from ravine.parallel.algorithms import Shard
from ravine.parallel.config import Config
from ravine.parallel.problem import split_bounds
from ravine.parallel.runtime import (
    Recorder,
    RunSpec,
    atomic_save,
    load_checkpoint,
    set_one_thread,
    start_heartbeat,
    tensor_bytes,
)
from ravine.parallel.transport import Kind, Pair, ShardEndpoint, TransportError, pair_prefix


def checkpoint_path(run_dir: str, shard: int) -> Path:
    return Path(run_dir) / f"shard{shard}.pt"


def ready_key(shard: int) -> str:
    """Holds the incarnation of shard ``shard`` that accepts joins now."""
    return f"shard/{shard}/ready"


def join_counter(shard: int) -> str:
    return f"shard/{shard}/joins"


def join_key(shard: int, n: int) -> str:
    return f"shard/{shard}/join/{n}"


class ShardServer:
    def __init__(self, config: Config, spec: RunSpec, index: int, incarnation: int) -> None:
        self.config, self.spec, self.index, self.incarnation = config, spec, index, incarnation
        lo, hi = split_bounds(config.n_features + 1, config.shards)[index]
        self.shard = Shard(index, lo, hi, torch.zeros(config.n_features + 1), config)
        self.lock = threading.Lock()
        self.rec = Recorder("shard", index, incarnation, spec.t0)
        path = checkpoint_path(spec.run_dir, index)
        if incarnation > 0 and path.exists():  # a restarted shard; a new run starts afresh
            self.shard.load_state_dict(load_checkpoint(path))
            self.rec.extra["resumed_version"] = self.shard.version
        self.store = spec.store()

    def serve_pair(self, worker: int, worker_incarnation: int) -> None:
        who = f"worker {worker}.{worker_incarnation}"
        prefix = pair_prefix(self.index, self.incarnation, worker, worker_incarnation)
        try:
            # its own store connection: the rendezvous waits on it (see start_heartbeat)
            pair = Pair(self.spec.store(), prefix, 0, self.spec.pair_timeout)
            endpoint = ShardEndpoint(pair, self.shard.hi - self.shard.lo)
            while True:
                kind, arg, payload = endpoint.receive()
                if kind is Kind.BYE:
                    return
                with self.lock:
                    if kind is Kind.PUSH:
                        self.push_then_apply(endpoint, payload, arg)
                        continue
                    if kind is Kind.PULL:
                        x, version = self.shard.pull(endpoint.reply.payload)
                        staleness = 0
                    elif kind is Kind.PUSH_PULL:  # the reply carries the result: apply first
                        staleness = self.shard.push(payload, arg)
                        x, version = self.shard.pull(endpoint.reply.payload)
                    else:
                        x, version, staleness = self.shard.elastic(payload), self.shard.version, 0
                endpoint.respond(kind, version, staleness, x)
        except (RuntimeError, TransportError) as e:
            # a dead peer closes only this pair; the shard keeps serving the others
            self.rec.fault("pair closed", who, str(e))
        except Exception as e:  # a bad request: end this pair (its worker errs), keep the shard
            self.rec.fault("bad request", who, f"{type(e).__name__}: {e}")

    def push_then_apply(self, endpoint: ShardEndpoint, grad: torch.Tensor, base: int) -> None:
        """Reply to a push, then apply it, under the shard's lock (held by the caller).

        Downpour's pushes are asynchronous (Dean et al. 2012): the worker needs only the
        staleness and version its push gets, both known on receipt, not the step, so it goes on
        while the shard steps (the step, cold after a wait, cost more than the whole raw round
        trip). Nothing can see the shard in between: this worker's next request is served by
        this thread after the step, any other pair's waits for the lock, and so does the
        checkpointer, so a checkpoint never holds a version without its update. The gradient
        stays in the endpoint's buffer (no copy) until the next receive. A push received is
        applied even if the reply cannot be sent (the worker died meanwhile), as before.
        """
        try:
            endpoint.respond(Kind.PUSH, self.shard.version + 1, self.shard.staleness_of(base))
        finally:
            self.shard.push(grad, base)

    def checkpoint(self) -> None:
        with self.lock:
            state = self.shard.state_dict()
        atomic_save(state, checkpoint_path(self.spec.run_dir, self.index))

    def run(self) -> None:
        store = self.store
        beat = start_heartbeat(self.spec, f"hb/shard{self.index}.{self.incarnation}")
        seen = store.add(join_counter(self.index), 0)
        self.checkpoint()  # the starting state is on disk before anyone can push
        self.rec.save(store)  # a restarted incarnation's resumed version, even if killed again
        store.set(ready_key(self.index), str(self.incarnation))
        last_checkpoint = time.monotonic()
        while not self.finished(store):
            count = store.add(join_counter(self.index), 0)
            for n in range(seen + 1, count + 1):
                w, winc, sinc = (int(v) for v in store.get(join_key(self.index, n)).split(b"."))
                if sinc == self.incarnation:  # joins addressed to an older incarnation are void
                    threading.Thread(
                        target=self.serve_pair, args=(w, winc), daemon=True, name=f"w{w}.{winc}"
                    ).start()
            seen = count
            if time.monotonic() - last_checkpoint > self.spec.checkpoint_every:
                self.checkpoint()
                last_checkpoint = time.monotonic()
            time.sleep(0.02)
        self.checkpoint()
        beat.set()
        self.rec.staleness = self.shard.staleness
        self.rec.updates = self.shard.version
        self.rec.extra["clamped"] = self.shard.clamped
        self.rec.save(store)
        with self.lock:
            store.set(f"shard/{self.index}/state", tensor_bytes(self.shard.state_dict()))
        store.set(f"shard/{self.index}/final", str(self.incarnation))

    def finished(self, store) -> bool:
        """The launcher said stop, or (under torchrun, no launcher) every worker is done."""
        done = int(store.add("workers_done", 0)) >= self.config.workers
        return done or store.check(["stop"])


def shard_main(config: Config, spec: RunSpec, index: int, incarnation: int) -> None:
    """Process entry point (spawned by the launcher or started under torchrun)."""
    set_one_thread()
    ShardServer(config, spec, index, incarnation).run()
