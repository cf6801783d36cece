"""The fault soak: 3 minutes of Downpour (2 workers, 2 shards) under repeated SIGKILL and SIGSTOP
of workers and SIGKILL of shards. No hang, no lost shard state, the loss of a fault-free run.

RAVINE_SOAK_SECONDS shortens or lengthens it (default 180).
"""

from __future__ import annotations

import os

import pytest

from ravine.parallel import Config
from ravine.parallel.launch import Fault, run

SECONDS = float(os.environ.get("RAVINE_SOAK_SECONDS", "180"))
# A fault-free run reaches about 0.30 on the sparse problem (from log 2 = 0.693).
LOSS_LEVEL = 0.33


def _faults(seconds: float) -> list[Fault]:
    """Every 8 s from 3 s on: kill worker 0, stop worker 1, kill shard 0, stop worker 0,
    kill worker 1, kill shard 1, ... until 10 s before the end."""
    cycle = [("kill", "worker", 0), ("stop", "worker", 1), ("kill", "shard", 0),
             ("stop", "worker", 0), ("kill", "worker", 1), ("kill", "shard", 1)]  # fmt: skip
    faults, at, i = [], 3.0, 0
    while at < seconds - 10:
        faults.append(Fault(at, *cycle[i % len(cycle)]))
        at, i = at + 8.0, i + 1
    return faults


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 240)
def test_downpour_survives_minutes_of_kills_and_stops(tmp_path):
    faults = _faults(SECONDS)
    config = Config(algo="downpour", workers=2, shards=2, steps=10**7, time_limit=SECONDS)
    result = run(config, faults=faults, run_dir=tmp_path, hang_timeout=2.0)
    kinds = [f["kind"] for f in result.faults]
    injected_kills = kinds.count("injected kill")
    injected_stops = kinds.count("injected stop")
    assert injected_kills + injected_stops >= len(faults) - 2  # the last may meet the end
    assert kinds.count("died") >= injected_kills
    assert kinds.count("hung") >= injected_stops
    # every injected fault was repaired by a new incarnation, never by restarting the job
    incarnations = result.extra["incarnations"]
    assert sum(incarnations.values()) - 4 >= injected_kills + injected_stops
    # no lost shard state: each restart resumed from a checkpoint past zero, and the shards'
    # final versions are past every version they resumed from
    resumed = result.extra["resumed_versions"]  # {"shard s.incarnation": version}
    shard_kills = sum(f["kind"] == "injected kill" and "shard" in f["who"] for f in result.faults)
    assert len(resumed) >= shard_kills
    for who, version in resumed.items():
        shard = int(who.split()[1].split(".")[0])
        assert 0 < version < result.extra["shard_versions"][shard], who
    assert result.final_loss < LOSS_LEVEL
