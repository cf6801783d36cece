"""The benchmark lab: named problems, versioned search spaces, a store, workers, a protocol.

    from ravine.bench import Sweep, problems, run_sweep
    sweep = Sweep([problems.get("digits-mlp")], ["sgd", "adam"], k=4, seeds=2)
    run_sweep(sweep, "results.sqlite", workers=2)

The command line is ``ravine bench`` (``ravine.cli.bench``); the store's schema and read API are
documented in docs/bench.md. Importing this package needs only torch and numpy (scipy, tqdm and
psycopg are imported when used).
"""

from ravine.bench import problems, spaces
from ravine.bench.problems import PROBLEMS, Problem
from ravine.bench.runner import SCHEDULES, Sweep, plan, run_sweep, select, work
from ravine.bench.store import SCHEMA_VERSION, Store, open_store

__all__ = [
    "PROBLEMS",
    "SCHEDULES",
    "SCHEMA_VERSION",
    "Problem",
    "Store",
    "Sweep",
    "open_store",
    "plan",
    "problems",
    "run_sweep",
    "select",
    "spaces",
    "work",
]
