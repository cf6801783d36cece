"""The store on SQLite and on a real PostgreSQL server (started here; never a mock).

Claims are atomic, a re-claimed run cannot be finished by its old worker, stale and dead
workers' runs are taken over, two concurrent workers do every run exactly once.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ravine.bench import open_store, problems, run_sweep
from ravine.bench.runner import Sweep, environment, plan
from ravine.bench.store import SCHEMA_VERSION, Store

pytestmark = pytest.mark.usefixtures("one_thread")

ENV = {"code_version": "t", "torch_version": "t", "cpu": "t", "threads": 1, "git_hash": None}
SCRIPT = "scripts/ci/50-postgresql.sh"


def _pg_bin() -> Path | None:
    override = os.environ.get("RAVINE_PG_BIN")
    candidates = [override] if override else sorted(glob.glob("/usr/lib/postgresql/*/bin"))[::-1]
    for c in candidates:
        if c and (Path(c) / "initdb").is_file():
            return Path(c)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _missing(why: str) -> None:
    message = (
        f"{why}: run {SCRIPT} (apt-get install -y postgresql) and pip install 'psycopg[binary]'"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL server on a unix socket in a temp folder; yields a base URL."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        _missing("PostgreSQL server binaries (initdb, pg_ctl) not found")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _missing("psycopg 3 is not installed")
    folder = Path(tempfile.mkdtemp(prefix="ravine-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres account
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    port = "5432"  # on a private socket folder: no clash with any other server
    run = lambda *cmd, timeout: subprocess.run(  # noqa: E731
        [*as_user, *cmd], check=True, capture_output=True, text=True, timeout=timeout
    )
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync",
            timeout=120)  # fmt: skip
        options = f"-k {folder} -c listen_addresses='' -p {port} -c fsync=off"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"),
            "-w", "-t", "60", "start", timeout=90)  # fmt: skip
    except subprocess.CalledProcessError as e:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {e.stderr or e.stdout}")
    try:
        yield f"postgresql://postgres@/{{db}}?host={folder}&port={port}"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "-w", "-t", "30", "stop"], capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


def _fresh_database(base: str) -> str:
    import psycopg

    name = "t" + uuid.uuid4().hex[:12]
    with psycopg.connect(base.format(db="postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return base.format(db=name)


# PostgreSQL starts a server (seconds): its cases run with the slow ones (make test-slow)
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    return _fresh_database(request.getfixturevalue("postgres"))


def _sweep(epochs: int = 2, k: int = 2, **kw) -> Sweep:
    p = problems.user_problem("bench_tiny:linear", batch_size=50, epochs=epochs)
    return Sweep([p], kw.pop("optimizers", ["sgd", "adam"]), k=k, seeds=1, **kw)


def _planned(url: str) -> tuple[Store, Sweep]:
    store = open_store(url)
    sweep = _sweep()
    plan(store, sweep)
    return store, sweep


def test_schema_is_versioned(url: str) -> None:
    with open_store(url) as store:
        rows = store._rows("SELECT version FROM schema_version")
        assert rows == [{"version": SCHEMA_VERSION}]
        with store._write() as cur:
            cur.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(ValueError, match="schema version 99"):
        open_store(url)


def test_a_reclaimed_run_cannot_be_finished_by_its_old_worker(url: str) -> None:
    store, sweep = _planned(url)
    with store:
        first = store.claim(sweep.name, 60.0, ENV)
        assert first is not None and first.row["attempts"] == 1
        # its worker stops beating: after stale_after another worker takes the run over
        with store._write() as cur:
            cur.execute(
                store._sql("UPDATE runs SET heartbeat = ? WHERE id = ?"),
                (time.time() - 120, first.id),
            )
        # a gone run is taken before any pending one: the interrupted work resumes first
        c = store.claim(sweep.name, 60.0, ENV)
        assert c is not None and c.id == first.id and c.row["attempts"] == 2
        assert not store.heartbeat(first)
        assert not store.record_epoch(first, 1, {"val_loss": 1.0})
        assert not store.finish(first, "finished")
        assert store.record_epoch(c, 1, {"val_loss": 0.5})
        assert store.finish(c, "finished")
        assert store.run(first.id)["status"] == "finished"
        assert [e["val_loss"] for e in store.epochs(run_ids=[first.id])] == [0.5]


def test_a_run_of_a_dead_process_on_this_host_is_taken_over_at_once(url: str) -> None:
    store, sweep = _planned(url)
    with store:
        n = store.counts(sweep.name)["pending"]
        claims = [store.claim(sweep.name, 3600.0, ENV) for _ in range(n)]
        assert store.claim(sweep.name, 3600.0, ENV) is None  # all held, heartbeats fresh
        dead = subprocess.run(["true"], check=True)  # a pid that has exited
        del dead
        proc = subprocess.Popen(["true"])
        proc.wait(timeout=30)
        with store._write() as cur:
            cur.execute(
                store._sql("UPDATE runs SET pid = ? WHERE id = ?"), (proc.pid, claims[0].id)
            )
        again = store.claim(sweep.name, 3600.0, ENV)
        assert again is not None and again.id == claims[0].id


def test_read_api_returns_plain_rows(url: str) -> None:
    store, sweep = _planned(url)
    with store:
        claim = store.claim(sweep.name, 60.0, environment())
        store.record_epoch(claim, 1, {"train_loss": 2.0, "val_accuracy": 0.5, "steps": 8})
        store.finish(claim, "finished")
        runs = store.runs(sweep.name)
        assert len(runs) == 2 * 3 and runs[0]["status"] == "finished"
        assert runs[0]["torch_version"] and runs[0]["threads"] >= 1
        assert isinstance(runs[0]["hp"], dict) and runs[1]["trial_index"] == 1
        assert store.epochs(sweep.name)[0]["steps"] == 8
        assert {t["optimizer"] for t in store.trials()} == {"sgd", "adam"}
        assert store.studies()[0]["config"]["k"] == 2
        assert store.problems()[0]["factory"] == "bench_tiny:linear"
        assert store.counts(sweep.name) == {"pending": 5, "running": 0, "finished": 1, "failed": 0}


@pytest.mark.timeout(120)
def test_concurrent_claims_hand_out_each_run_once(url: str) -> None:
    """Four connections claim as fast as they can: every run is claimed by exactly one."""
    store, sweep = _planned(url)
    store.close()
    got: list[list[int]] = [[] for _ in range(4)]

    def claimer(mine: list[int]) -> None:
        with open_store(url) as s:
            while (c := s.claim(sweep.name, 3600.0, ENV)) is not None:
                mine.append(c.id)

    threads = [threading.Thread(target=claimer, args=(g,)) for g in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    ids = [i for g in got for i in g]
    assert sorted(ids) == list(range(min(ids), min(ids) + 6))  # six runs, none twice


@pytest.mark.timeout(300)
def test_two_concurrent_workers_do_every_run_exactly_once(url: str, monkeypatch) -> None:
    tests = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    sweep = _sweep(epochs=3, k=3, optimizers=["sgd", "momentum"])
    counts = run_sweep(sweep, url, workers=2, threads=1, progress=False, heartbeat_every=1.0)
    assert counts["pending"] == counts["running"] == counts["failed"] == 0
    with open_store(url) as store:
        runs = store.runs(sweep.name)
        epochs = store.epochs(sweep.name)
    assert len(runs) == counts["finished"] >= 2 * (3 + 1) + 2
    assert all(r["attempts"] == 1 for r in runs)  # nobody ran a run twice
    assert len({r["pid"] for r in runs}) == 2  # both workers took part
    keys = [(e["run_id"], e["epoch"]) for e in epochs]
    assert len(keys) == len(set(keys)) == 3 * len(runs)


class _SwitchingStore:
    """A store whose heartbeat fails (the run just ended) while the worker takes its next run:
    the interleaving of the heartbeat thread and the worker that lost runs under load."""

    def __init__(self, on_beat) -> None:
        self.on_beat = on_beat
        self.beats = 0

    def heartbeat(self, claim) -> bool:
        self.beats += 1
        self.on_beat()
        return False  # the ended run's claim token is cleared

    def close(self) -> None:
        pass


def test_a_failed_beat_of_an_ended_run_does_not_mark_the_next_run_lost(monkeypatch) -> None:
    """Each beat fails because the run it read has just ended while the worker took another:
    ``lost`` must stay clear (set, the new run would be dropped and redone after going stale:
    two concurrent workers on PostgreSQL under load then showed a run with 2 attempts)."""
    from ravine.bench import runner

    beat = runner._Heartbeat("unused", 0.01)
    store = _SwitchingStore(lambda: beat.hold(object()))  # every beat: the worker moved on
    monkeypatch.setattr(runner, "open_store", lambda url: store)
    beat.hold(object())
    beat.start()
    deadline = time.monotonic() + 10
    while store.beats < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    beat.done.set()
    beat.join(timeout=5)
    assert store.beats >= 3
    assert not beat.lost.is_set()
