"""``ravine.viz.run`` spread over worker processes, so a click that recomputes every optimizer
uses every core.

A surface's autograd and an optimizer's step on 2-element tensors are all Python and dispatch
overhead, which threads cannot share out (the GIL); processes can. Each worker runs
:func:`ravine.viz.run` on a share of the specs (batched, as one call of it does); the rows of a
batched run are independent, so a path is the same bit for bit whichever share it ran in
(tests/test_serve.py compares them with one ``ravine.viz.run`` of all the specs).

Workers are spawned (not forked: a forked torch can hang in its thread pools) at server start
and import ravine once. Only what a fresh process can rebuild is sent to them: a built-in
surface or an ``expr:`` formula, and specs whose optimizer is registered when ravine is
imported. Anything else, and any failure in a worker, runs in the server's own process.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

import numpy as np

#: The longest one share of a request may take before the server gives up on it.
MAX_SHARE_SECONDS = 600.0

Share = tuple[np.ndarray, np.ndarray, int | None, int | None]


def _init_worker() -> None:
    import torch

    import ravine.viz.trajectory  # noqa: F401 - pay for the imports before the first request

    # One intra-op thread per worker: the tensors are 2-element, and the workers share cores.
    torch.set_num_threads(1)


def _run_share(
    surface: str, specs: Sequence[str], steps: int, start: tuple[float, float]
) -> list[Share]:
    from ravine.viz.trajectory import run

    return [
        (t.points, t.losses, t.diverged_at, t.escaped_at)
        for t in run(surface, list(specs), steps=steps, start=start)
    ]


def _ready() -> bool:
    return True


class Workers:
    """A pool of ``n`` processes running shares of ``ravine.viz.run``; ``n=0``: none."""

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 64:
            raise ValueError(f"workers={n!r}: expected an integer from 0 to 64 (0: no workers)")
        self.n = n
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._known: frozenset[str] = frozenset()
        self._surfaces: frozenset[str] = frozenset()
        self._warm: list[Future[bool]] = []

    def start(self) -> None:
        """Spawn the workers now (in the background) rather than on the first request."""
        if self.n == 0:
            return
        from ravine import surfaces
        from ravine.optim import registry

        with self._lock:
            if self._pool is None:
                # What a fresh process knows: whatever ravine registers on import.
                self._known = frozenset(registry.names())
                self._surfaces = frozenset(surfaces.names())
                self._pool = ProcessPoolExecutor(
                    self.n,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                )
                self._warm = [self._pool.submit(_ready) for _ in range(self.n)]

    @property
    def ready(self) -> bool:
        """Whether every worker has started and imported ravine (until then, requests run in
        the server's process rather than wait for them)."""
        return (
            self._pool is not None
            and bool(self._warm)
            and all(f.done() and f.exception() is None for f in self._warm)
        )

    def can_run(self, surface: str, names: Sequence[str]) -> bool:
        surface_ok = surface.startswith("expr:") or surface in self._surfaces
        return self.ready and surface_ok and set(names) <= self._known

    def submit(
        self, surface: str, specs: Sequence[str], steps: int, start: tuple[float, float]
    ) -> list[tuple[list[int], Future[list[Share]] | None]]:
        """Send ``specs`` out in one share per worker (round robin): (indices, future) pairs;
        a share that could not be sent has no future."""
        pool = self._pool
        shares = min(self.n, len(specs))
        out: list[tuple[list[int], Future[list[Share]] | None]] = []
        for k in range(shares):
            indices = list(range(k, len(specs), shares))
            try:
                assert pool is not None
                share = [specs[i] for i in indices]
                out.append((indices, pool.submit(_run_share, surface, share, steps, start)))
            except (AssertionError, BrokenProcessPool, RuntimeError):
                out.append((indices, None))
        return out

    def finished(
        self, submitted: list[tuple[list[int], Future[list[Share]] | None]]
    ) -> Iterator[tuple[list[int], list[Share] | None]]:
        """Shares as they finish: (indices, results), or (indices, None) where the worker
        failed, for the caller to run in process (where an error is raised as usual)."""
        futures = {f: indices for indices, f in submitted if f is not None}
        for indices, f in submitted:
            if f is None:
                yield indices, None
        broken = False
        for future in as_completed(futures, timeout=MAX_SHARE_SECONDS):
            try:
                yield futures[future], future.result()
            except BrokenProcessPool:
                broken = True
                yield futures[future], None
            except Exception:
                yield futures[future], None
        if broken:
            self._restart()

    def _restart(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
        self.start()

    def close(self) -> None:
        """Stop the workers; one busy with a share exits when it is done (a share is bounded)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


def default_workers() -> int:
    """Workers for ``ravine serve``: one per core, at most 4 (seven optimizers in shares of
    two); none on a single core, where they would only add their start-up. The server's own
    thread only waits while they compute."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(4, cores) if cores and cores > 1 else 0


__all__ = ["Workers", "default_workers"]
