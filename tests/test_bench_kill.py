"""kill -9 at any moment, then the same command: the same runs and numbers as without the kill.

The sweep runs as `ravine bench` in a subprocess; the test kills it with SIGKILL while a run is
in the middle of its epochs (and once more later), reruns the same command, and compares every
run and every epoch's metrics with an uninterrupted sweep of the same study.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ravine.bench import open_store

EPOCHS = 4
COMMAND = [
    "bench", "--problems", "bench_tiny:slow_mlp", "--optimizers", "sgd,adam", "--trials", "2",
    "--seeds", "1", "--epochs", str(EPOCHS), "--batch-size", "50", "--threads", "1",
    "--no-progress", "--stale-after", "600",
]  # fmt: skip
METRICS = ("train_loss", "val_loss", "val_accuracy", "test_loss", "test_accuracy", "steps", "lr")


def _start(store: Path, workers: int, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    env["OMP_NUM_THREADS"] = "1"
    code = "import sys; from ravine.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            *COMMAND,
            *extra,
            "--store",
            str(store),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out


def _kill_mid_run(
    proc: subprocess.Popen, store: Path, finished_at_least: int
) -> set[tuple[int, int]]:
    """SIGKILL the sweep once a run is between epochs 1 and EPOCHS-1 (mid-run); returns the
    claims left in flight, as (run id, attempts) pairs, read after the kill (the run seen
    mid-way may have ended between the look and the kill; a run an earlier kill left in flight
    and that no worker has re-claimed since is still among them, under the same claim)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        if store.exists():
            try:
                with open_store(store, timeout=5) as s:
                    runs = s.runs()
            except Exception:  # the schema is being created
                runs = []
            done = sum(r["status"] == "finished" for r in runs)
            mid = any(r["status"] == "running" and 1 <= r["epochs_done"] < EPOCHS for r in runs)
            if mid and done >= finished_at_least:
                # only the sweep's own process: its workers must die with it (PDEATHSIG)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                _wait_group_gone(proc.pid)
                with open_store(store, timeout=5) as s:
                    return {(r["id"], r["attempts"]) for r in s.runs() if r["status"] == "running"}
        time.sleep(0.02)
    pytest.fail("no run was ever seen mid-way")


def _wait_group_gone(pgid: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(pgid, signal.SIGKILL)
    pytest.fail("worker processes outlived the killed sweep")


def _snapshot(store: Path) -> tuple[dict, dict]:
    with open_store(store) as s:
        runs = s.runs()
        epochs = s.epochs()
    key_of = {
        r["id"]: (r["problem"], r["optimizer"], r["phase"], r["trial_index"], r["seed"])
        for r in runs
    }
    statuses = {key_of[r["id"]]: (r["status"], r["epochs_done"]) for r in runs}
    numbers: dict = {}
    for e in epochs:
        k = (key_of[e["run_id"]], e["epoch"])
        assert k not in numbers, f"epoch recorded twice: {k}"
        numbers[k] = tuple(e[m] for m in METRICS)
    return statuses, numbers


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("checkpoints", ["every epoch", "default"])
def test_sigkill_then_the_same_command_gives_the_uninterrupted_result(
    tmp_path: Path, workers: int, checkpoints: str
) -> None:
    """With a checkpoint per epoch a killed run resumes from its last epoch; with the default
    interval (10 s) these short runs write none and a killed one starts over: either way the
    result is the uninterrupted sweep's."""
    reference = tmp_path / "reference.sqlite"
    _finish(_start(reference, 1))

    extra = ("--checkpoint-every", "0") if checkpoints == "every epoch" else ()
    killed = tmp_path / "killed.sqlite"
    in_flight = _kill_mid_run(_start(killed, workers, extra), killed, finished_at_least=0)
    in_flight |= _kill_mid_run(_start(killed, workers, extra), killed, finished_at_least=4)
    _finish(_start(killed, workers, extra))

    assert _snapshot(killed) == _snapshot(reference)
    with open_store(killed) as s:
        runs = s.runs()
    # every claim a kill left in flight (at most one per worker per start) was followed by
    # exactly one re-claim
    assert 1 <= len(in_flight) <= 2 * workers
    assert sum(r["attempts"] - 1 for r in runs) == len(in_flight)
    assert all(r["status"] == "finished" for r in runs)
    assert not any((tmp_path / "killed.sqlite.checkpoints").iterdir())  # cleaned after the end
