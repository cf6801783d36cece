"""``ravine.viz.run`` spread over worker processes, so a click that recomputes every optimizer
uses every core.

A surface's autograd and an optimizer's step on 2-element tensors are all Python and dispatch
overhead, which threads cannot share out (the GIL); processes can. Each worker runs
:func:`ravine.viz.run` on a share of the specs (batched, as one call of it does); the rows of a
batched run are independent, so a path is the same bit for bit whichever share it ran in
(tests/test_serve.py compares them with one ``ravine.viz.run`` of all the specs). The server
computes one share itself meanwhile, so one worker already doubles a 2-core machine's speed.

Workers are spawned (not forked: a forked torch can hang in its thread pools) and import ravine
once. Only what a fresh process can rebuild is sent to them: a built-in surface or an ``expr:``
formula, and specs whose optimizer is registered when ravine is imported. Anything else, and
any share a worker fails, runs in the server's own process, where an error is raised as usual.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from multiprocessing.pool import Pool
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Only named in annotations: `ravine serve` imports this module before it prints its
    # address, which numpy held up by about 65 ms (torch imports it in the background anyway).
    import numpy as np

#: The longest one share of a request may take before the server gives up waiting for it.
MAX_SHARE_SECONDS = 600.0

Share = tuple["np.ndarray", "np.ndarray", int | None, int | None]
Submitted = tuple["queue.Queue[tuple[list[int], list[Share] | None]]", list[list[int]]]


def _init_worker(started: Any) -> None:
    import torch

    from ravine.viz.trajectory import run

    # Pay for the imports before the first request, torch._dynamo included (torch.optim
    # imports it when the first optimizer is built: seconds).
    run("beale", ["sgd"], steps=1)
    # One intra-op thread per worker: the tensors are 2-element, and the workers share cores.
    torch.set_num_threads(1)
    with started.get_lock():
        started.value += 1


def _run_share(
    surface: str, specs: Sequence[str], steps: int, start: tuple[float, float]
) -> list[Share]:
    from ravine.viz.trajectory import run

    return [
        (t.points, t.losses, t.diverged_at, t.escaped_at)
        for t in run(surface, list(specs), steps=steps, start=start)
    ]


class Workers:
    """A pool of ``n`` processes running shares of ``ravine.viz.run``; ``n=0``: none."""

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 64:
            raise ValueError(f"workers={n!r}: expected an integer from 0 to 64 (0: no workers)")
        self.n = n
        self._pool: Pool | None = None
        self._started: Any = None
        self._lock = threading.Lock()
        self._known: frozenset[str] = frozenset()
        self._surfaces: frozenset[str] = frozenset()

    def start(self) -> None:
        """Spawn the workers (they import ravine in the background)."""
        if self.n == 0:
            return
        from ravine import surfaces
        from ravine.optim import registry

        with self._lock:
            if self._pool is None:
                # What a fresh process knows: whatever ravine registers on import.
                self._known = frozenset(registry.names())
                self._surfaces = frozenset(surfaces.names())
                context = multiprocessing.get_context("spawn")
                self._started = context.Value("i", 0)
                self._pool = context.Pool(self.n, _init_worker, (self._started,))

    @property
    def ready(self) -> bool:
        """Whether every worker has started and imported ravine (until then, requests run in
        the server's process rather than wait for them)."""
        return self._pool is not None and self._started.value >= self.n

    def can_run(self, surface: str, names: Sequence[str]) -> bool:
        surface_ok = surface.startswith("expr:") or surface in self._surfaces
        return self.ready and surface_ok and set(names) <= self._known

    def submit(
        self,
        surface: str,
        specs: Sequence[str],
        steps: int,
        start: tuple[float, float],
        *,
        keep: bool = False,
    ) -> tuple[Submitted, list[int]]:
        """Send ``specs`` out in one share per worker (round robin; see :meth:`finished`), and
        with ``keep`` one more share for the caller to run meanwhile: (submitted, the indices
        of the caller's share, empty without ``keep``)."""
        done: queue.Queue[tuple[list[int], list[Share] | None]] = queue.Queue()
        n = self.n + keep
        split = [list(range(k, len(specs), n)) for k in range(min(n, len(specs)))]
        kept, shares = (split[0], split[1:]) if keep else ([], split)
        pool = self._pool
        for indices in shares:
            if pool is None:
                done.put((indices, None))
                continue

            def ok(result: list[Share], indices: list[int] = indices) -> None:
                done.put((indices, result))

            def failed(_: BaseException, indices: list[int] = indices) -> None:
                done.put((indices, None))

            share = [specs[i] for i in indices]
            try:
                pool.apply_async(_run_share, (surface, share, steps, start), {}, ok, failed)
            except ValueError:  # the pool was closed meanwhile
                done.put((indices, None))
        return (done, shares), kept

    def finished(self, submitted: Submitted) -> Iterator[tuple[list[int], list[Share] | None]]:
        """Shares as they finish: (indices, results), or (indices, None) where a worker failed,
        for the caller to run in process."""
        done, shares = submitted
        for _ in shares:
            try:
                yield done.get(timeout=MAX_SHARE_SECONDS)
            except queue.Empty:
                raise TimeoutError(
                    f"a worker took more than {MAX_SHARE_SECONDS:g} s on one share"
                ) from None

    def close(self) -> None:
        """Stop the workers at once (a share in progress is dropped)."""
        with self._lock:
            if self._pool is not None:
                self._pool.terminate()
                self._pool.join()
                self._pool = None


def default_workers() -> int:
    """Workers for ``ravine serve``: one per core beside the server's, at most 4 (seven
    optimizers in five shares, the server computing one); none below 3 cores.

    On 2 cores one worker was slower than none in every figure of benchmarks/serve_latency.py
    (p95 on an idle machine: slider 212 vs 187 ms, click 400 vs 388, first path 82 vs 58): the
    browser and the server's own threads need the second core.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    return min(4, cores - 1) if cores >= 3 else 0


__all__ = ["Workers", "default_workers"]
