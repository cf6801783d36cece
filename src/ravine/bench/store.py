"""The lab's store: one schema on SQLite (default, embedded) or PostgreSQL (several machines).

Schema version 1 (documented table by table in docs/bench.md):

    schema_version  version, applied_at
    problems        name, spec (JSON: dataset, model, loss, batch size, epochs, metric)
    optimizers      name, class_path, paper
    spaces          version, optimizer, spec (JSON knobs)
    studies         name, config (JSON), created_at
    trials          id, space_version, optimizer, qmc_seed, trial_index, hp (JSON)
    runs            id, study, problem, optimizer, trial_id, phase, seed, status, error,
                    attempts, claim_token, host, pid, heartbeat, created_at, started_at,
                    finished_at, epochs_done, code_version, torch_version, cpu, threads, git_hash
    epochs          run_id, epoch, train_loss, train_accuracy, val_loss, val_accuracy,
                    test_loss, test_accuracy, lr, steps, wall_time

Claims are atomic: on SQLite inside ``BEGIN IMMEDIATE`` (one writer at a time, WAL readers go
on), on PostgreSQL with ``SELECT ... FOR UPDATE SKIP LOCKED``. Each claim writes a fresh
``claim_token``; heartbeats, epoch rows and the final status are written only while the token
still matches, so a worker whose run was re-claimed (stale heartbeat) cannot finish it twice.
Times are POSIX seconds from the writing machine's clock (keep machines in NTP sync).
"""

from __future__ import annotations

import abc
import json
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "EPOCH_COLUMNS",
    "SCHEMA_VERSION",
    "STATUSES",
    "Claim",
    "PostgresStore",
    "SQLiteStore",
    "Store",
    "open_store",
]

SCHEMA_VERSION = 1
STATUSES = ("pending", "running", "finished", "failed")
EPOCH_COLUMNS = (
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "lr",
    "steps",
    "wall_time",
)
RUN_ENV_COLUMNS = ("code_version", "torch_version", "cpu", "threads", "git_hash")

# {pk} is the dialect's auto-increment key, {real} its double type.
_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at {real} NOT NULL);
CREATE TABLE IF NOT EXISTS problems (name TEXT PRIMARY KEY, spec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS optimizers (
    name TEXT PRIMARY KEY, class_path TEXT NOT NULL, paper TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spaces (
    version TEXT NOT NULL, optimizer TEXT NOT NULL, spec TEXT NOT NULL,
    PRIMARY KEY (version, optimizer));
CREATE TABLE IF NOT EXISTS studies (
    name TEXT PRIMARY KEY, config TEXT NOT NULL, created_at {real} NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id {pk}, space_version TEXT NOT NULL, optimizer TEXT NOT NULL, qmc_seed INTEGER NOT NULL,
    trial_index INTEGER NOT NULL, hp TEXT NOT NULL,
    UNIQUE (space_version, optimizer, qmc_seed, trial_index));
CREATE TABLE IF NOT EXISTS runs (
    id {pk}, study TEXT NOT NULL REFERENCES studies(name), problem TEXT NOT NULL,
    optimizer TEXT NOT NULL, trial_id INTEGER NOT NULL REFERENCES trials(id),
    phase TEXT NOT NULL, seed INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
    error TEXT, attempts INTEGER NOT NULL DEFAULT 0, claim_token TEXT, host TEXT, pid INTEGER,
    heartbeat {real}, created_at {real} NOT NULL, started_at {real}, finished_at {real},
    epochs_done INTEGER NOT NULL DEFAULT 0, code_version TEXT, torch_version TEXT, cpu TEXT,
    threads INTEGER, git_hash TEXT,
    UNIQUE (study, problem, optimizer, trial_id, phase, seed));
CREATE INDEX IF NOT EXISTS runs_claim ON runs (study, status);
CREATE TABLE IF NOT EXISTS epochs (
    run_id INTEGER NOT NULL REFERENCES runs(id), epoch INTEGER NOT NULL,
    train_loss {real}, train_accuracy {real}, val_loss {real}, val_accuracy {real},
    test_loss {real}, test_accuracy {real}, lr {real}, steps INTEGER, wall_time {real},
    PRIMARY KEY (run_id, epoch));
"""


class Claim:
    """A run held by this worker: its row (a dict) and the token that proves the hold."""

    def __init__(self, row: dict[str, Any], token: str) -> None:
        self.row, self.token = row, token

    @property
    def id(self) -> int:
        return int(self.row["id"])


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class Store(abc.ABC):
    """The schema and every query, written once; subclasses give the connection and dialect.

    Read API for reports (plain dicts, JSON columns decoded): :meth:`studies`, :meth:`problems`,
    :meth:`trials`, :meth:`runs`, :meth:`epochs`, :meth:`counts`.
    """

    url: str
    placeholder = "?"
    pk = "INTEGER PRIMARY KEY"
    real = "REAL"
    lock_suffix = ""

    # ------------------------------------------------------------------ dialect hooks
    @abc.abstractmethod
    def _connect(self) -> Any:
        """A new connection to the database."""

    @abc.abstractmethod
    def _write(self) -> AbstractContextManager[Any]:
        """A write transaction that holds the claim lock (a context giving a cursor)."""

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers
    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self._conn.cursor()
        try:
            cur.execute(self._sql(sql), tuple(params))
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r)) for r in cur.fetchall()]
        finally:
            cur.close()
        return rows

    def _schema_lock(self, cur: Any) -> None:  # noqa: B027 (a hook: a no-op on SQLite)
        """Serialise schema creation between connections (SQLite's BEGIN IMMEDIATE does)."""

    def _init_schema(self) -> None:
        with self._write() as cur:
            self._schema_lock(cur)
            for statement in _DDL.format(pk=self.pk, real=self.real).split(";"):
                if statement.strip():
                    cur.execute(statement)
            cur.execute("SELECT MAX(version) FROM schema_version")
            found = cur.fetchone()[0]
            if found is None:
                cur.execute(
                    self._sql("INSERT INTO schema_version VALUES (?, ?)"),
                    (SCHEMA_VERSION, time.time()),
                )
            elif found != SCHEMA_VERSION:
                raise ValueError(
                    f"store {self.url} has schema version {found}; this ravine reads version "
                    f"{SCHEMA_VERSION} (use the ravine that wrote it)"
                )

    # ------------------------------------------------------------------ writing a sweep
    def register(
        self,
        study: str,
        config: dict[str, Any],
        problems: Iterable[dict[str, Any]],
        optimizers: Iterable[tuple[str, str, str]],
        spaces: Iterable[tuple[str, str, dict[str, Any]]],
    ) -> None:
        """Record a study and what it refers to; an existing study must have the same config."""
        with self._write() as cur:
            cur.execute(self._sql("SELECT config FROM studies WHERE name = ?"), (study,))
            row = cur.fetchone()
            if row is not None and json.loads(row[0]) != json.loads(_dumps(config)):
                raise ValueError(
                    f"study {study!r} exists in {self.url} with another configuration "
                    f"({row[0]}); got {_dumps(config)}: choose another --study name"
                )
            ins = "INSERT INTO {} VALUES ({}) ON CONFLICT DO NOTHING"
            cur.execute(
                self._sql(ins.format("studies", "?, ?, ?")), (study, _dumps(config), time.time())
            )
            for p in problems:
                cur.execute(self._sql(ins.format("problems", "?, ?")), (p["name"], _dumps(p)))
            for name, class_path, paper in optimizers:
                cur.execute(
                    self._sql(ins.format("optimizers", "?, ?, ?")), (name, class_path, paper)
                )
            for version, optimizer, spec in spaces:
                cur.execute(
                    self._sql(ins.format("spaces", "?, ?, ?")), (version, optimizer, _dumps(spec))
                )

    def trial_id(self, version: str, optimizer: str, qmc_seed: int, index: int, hp: dict) -> int:
        """The id of a trial row, inserted if new (the same trial always has the same hp)."""
        with self._write() as cur:
            return self._trial_id(cur, version, optimizer, qmc_seed, index, hp)

    def _trial_id(
        self, cur: Any, version: str, optimizer: str, seed: int, index: int, hp: dict
    ) -> int:
        key = (version, optimizer, seed, index)
        cur.execute(
            self._sql(
                "INSERT INTO trials (space_version, optimizer, qmc_seed, trial_index, hp) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
            ),
            (*key, _dumps(hp)),
        )
        cur.execute(
            self._sql(
                "SELECT id, hp FROM trials WHERE space_version = ? AND optimizer = ? "
                "AND qmc_seed = ? AND trial_index = ?"
            ),
            key,
        )
        tid, stored = cur.fetchone()
        if json.loads(stored) != json.loads(_dumps(hp)):
            raise ValueError(
                f"trial {key} is recorded with hp {stored} but now computes {_dumps(hp)} "
                "(a changed space version or scipy's Halton scrambling): the list is not "
                "reproducible here"
            )
        return int(tid)

    def add_runs(self, runs: Iterable[dict[str, Any]]) -> int:
        """Insert pending runs (keys: study, problem, optimizer, trial, phase, seed; trial =
        (version, optimizer, qmc_seed, index, hp)); existing ones are kept. Returns how many
        were new."""
        new = 0
        with self._write() as cur:
            for r in runs:
                tid = self._trial_id(cur, *r["trial"])
                cur.execute(
                    self._sql(
                        "INSERT INTO runs (study, problem, optimizer, trial_id, phase, seed, "
                        "status, created_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?) "
                        "ON CONFLICT DO NOTHING"
                    ),
                    (
                        r["study"],
                        r["problem"],
                        r["optimizer"],
                        tid,
                        r["phase"],
                        r["seed"],
                        time.time(),
                    ),
                )
                new += max(cur.rowcount, 0)
        return new

    # ------------------------------------------------------------------ claiming
    def claim(self, study: str, stale_after: float, env: dict[str, Any]) -> Claim | None:
        """Atomically take one run: first a running one whose worker is gone, then a pending one.

        Gone: its heartbeat is older than ``stale_after`` seconds, or it ran on this host under
        a process id that no longer exists (a killed sweep restarted at once). Gone runs come
        first: they resume from their last epoch checkpoint, so a restarted sweep finishes the
        work it was interrupted in before it starts new runs (and their checkpoints do not sit
        on disk until the end of the sweep).
        """
        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        with self._write() as cur:
            cur.execute(
                self._sql(
                    "SELECT id, host, pid, heartbeat FROM runs WHERE study = ? "
                    "AND status = 'running' ORDER BY id" + self.lock_suffix
                ),
                (study,),
            )
            row = None
            for rid, rhost, rpid, beat in cur.fetchall():
                dead_here = rhost == host and rpid != pid and not _pid_alive(rpid)
                if dead_here or beat is None or now - beat > stale_after:
                    row = (rid,)
                    break
            if row is None:
                cur.execute(
                    self._sql(
                        "SELECT id FROM runs WHERE study = ? AND status = 'pending' "
                        "ORDER BY id LIMIT 1" + self.lock_suffix
                    ),
                    (study,),
                )
                row = cur.fetchone()
            if row is None:
                return None
            token = secrets.token_hex(8)
            cur.execute(
                self._sql(
                    "UPDATE runs SET status = 'running', claim_token = ?, host = ?, pid = ?, "
                    "heartbeat = ?, started_at = COALESCE(started_at, ?), "
                    "attempts = attempts + 1, code_version = ?, torch_version = ?, cpu = ?, "
                    "threads = ?, git_hash = ? WHERE id = ?"
                ),
                (token, host, pid, now, now, *(env[c] for c in RUN_ENV_COLUMNS), row[0]),
            )
        return Claim(self.run(int(row[0])), token)

    def heartbeat(self, claim: Claim) -> bool:
        """Refresh the claim's heartbeat; False when the run was taken from this worker."""
        with self._write() as cur:
            cur.execute(
                self._sql("UPDATE runs SET heartbeat = ? WHERE id = ? AND claim_token = ?"),
                (time.time(), claim.id, claim.token),
            )
            return cur.rowcount == 1

    def record_epoch(self, claim: Claim, epoch: int, values: dict[str, Any]) -> bool:
        """Write (or rewrite, after a resume) one epoch row, if the claim still holds."""
        cols = ", ".join(EPOCH_COLUMNS)
        marks = ", ".join("?" for _ in EPOCH_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in EPOCH_COLUMNS)
        with self._write() as cur:
            cur.execute(
                self._sql(
                    "UPDATE runs SET heartbeat = ?, epochs_done = ? "
                    "WHERE id = ? AND claim_token = ?"
                ),
                (time.time(), epoch, claim.id, claim.token),
            )
            if cur.rowcount != 1:
                return False
            cur.execute(
                self._sql(
                    f"INSERT INTO epochs (run_id, epoch, {cols}) VALUES (?, ?, {marks}) "
                    f"ON CONFLICT (run_id, epoch) DO UPDATE SET {updates}"
                ),
                (claim.id, epoch, *(values.get(c) for c in EPOCH_COLUMNS)),
            )
        return True

    def finish(self, claim: Claim, status: str, error: str | None = None) -> bool:
        """End the claim: "finished", "failed" (with its error) or "pending" (released)."""
        if status not in STATUSES or status == "running":
            raise ValueError(f"status must be 'finished', 'failed' or 'pending', got {status!r}")
        with self._write() as cur:
            cur.execute(
                self._sql(
                    "UPDATE runs SET status = ?, error = ?, finished_at = ?, claim_token = NULL "
                    "WHERE id = ? AND claim_token = ?"
                ),
                (
                    status,
                    error,
                    None if status == "pending" else time.time(),
                    claim.id,
                    claim.token,
                ),
            )
            return cur.rowcount == 1

    # ------------------------------------------------------------------ reading
    def study_config(self, study: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT config FROM studies WHERE name = ?", (study,))
        return json.loads(rows[0]["config"]) if rows else None

    def studies(self) -> list[dict[str, Any]]:
        rows = self._rows("SELECT name, config, created_at FROM studies ORDER BY created_at")
        for r in rows:
            r["config"] = json.loads(r["config"])
        return rows

    def problems(self) -> list[dict[str, Any]]:
        return [
            json.loads(r["spec"]) for r in self._rows("SELECT spec FROM problems ORDER BY name")
        ]

    def trials(self) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM trials ORDER BY id")
        for r in rows:
            r["hp"] = json.loads(r["hp"])
        return rows

    def run(self, run_id: int) -> dict[str, Any]:
        rows = self._rows(
            "SELECT runs.*, trials.hp, trials.trial_index, trials.space_version, trials.qmc_seed "
            "FROM runs JOIN trials ON trials.id = runs.trial_id WHERE runs.id = ?",
            (run_id,),
        )
        if not rows:
            raise KeyError(f"no run {run_id} in {self.url}")
        rows[0]["hp"] = json.loads(rows[0]["hp"])
        return rows[0]

    def runs(self, study: str | None = None, *, status: str | None = None) -> list[dict[str, Any]]:
        """Runs with their trial's index, space version and hp (decoded), ordered by id."""
        where, params = [], []
        if study is not None:
            where.append("runs.study = ?")
            params.append(study)
        if status is not None:
            where.append("runs.status = ?")
            params.append(status)
        rows = self._rows(
            "SELECT runs.*, trials.hp, trials.trial_index, trials.space_version, trials.qmc_seed "
            "FROM runs JOIN trials ON trials.id = runs.trial_id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY runs.id",
            params,
        )
        for r in rows:
            r["hp"] = json.loads(r["hp"])
        return rows

    def epochs(
        self, study: str | None = None, run_ids: Sequence[int] | None = None
    ) -> list[dict[str, Any]]:
        """Epoch rows (run_id, epoch and EPOCH_COLUMNS), ordered by run and epoch."""
        sql = "SELECT epochs.* FROM epochs"
        params: list[Any] = []
        if study is not None:
            sql += " JOIN runs ON runs.id = epochs.run_id WHERE runs.study = ?"
            params.append(study)
        rows = self._rows(sql + " ORDER BY epochs.run_id, epochs.epoch", params)
        if run_ids is not None:
            wanted = set(run_ids)
            rows = [r for r in rows if r["run_id"] in wanted]
        return rows

    def validation(
        self, study: str, problem: str, optimizer: str, phase: str
    ) -> list[dict[str, Any]]:
        """What selection may read: each run's status, trial and last-epoch validation metrics.

        The test columns are not selected, so no choice can depend on them.
        """
        rows = self._rows(
            "SELECT runs.id, runs.status, runs.seed, trials.trial_index, trials.hp, "
            "runs.epochs_done, e.val_loss, e.val_accuracy FROM runs "
            "JOIN trials ON trials.id = runs.trial_id "
            "LEFT JOIN epochs e ON e.run_id = runs.id AND e.epoch = runs.epochs_done "
            "WHERE runs.study = ? AND runs.problem = ? AND runs.optimizer = ? AND runs.phase = ? "
            "ORDER BY trials.trial_index, runs.seed",
            (study, problem, optimizer, phase),
        )
        for r in rows:
            r["hp"] = json.loads(r["hp"])
        return rows

    def group_counts(self, study: str) -> list[dict[str, Any]]:
        """Run counts per (problem, optimizer, phase, status): progress without reading runs."""
        return self._rows(
            "SELECT problem, optimizer, phase, status, COUNT(*) AS n FROM runs WHERE study = ? "
            "GROUP BY problem, optimizer, phase, status",
            (study,),
        )

    def counts(self, study: str) -> dict[str, int]:
        """Runs of ``study`` per status (every status present, zero when none)."""
        out = dict.fromkeys(STATUSES, 0)
        for r in self._rows(
            "SELECT status, COUNT(*) AS n FROM runs WHERE study = ? GROUP BY status", (study,)
        ):
            out[r["status"]] = int(r["n"])
        return out


class SQLiteStore(Store):
    """SQLite in WAL mode with a busy timeout: many processes on one machine, one file."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.url = str(self.path)
        self.timeout = timeout
        if self.path.parent and not self.path.parent.is_dir():
            raise ValueError(f"store: folder {self.path.parent} does not exist")
        self._conn = self._connect()
        self._init_schema()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are opened explicitly (BEGIN IMMEDIATE for writes)
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise ValueError(f"store {self.path}: SQLite refused WAL mode (got {mode!r})")
        # NORMAL in WAL: a committed transaction survives a killed process (an OS crash may
        # lose the last ones, never corrupt the file)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._conn.execute("COMMIT")
        finally:
            cur.close()


class PostgresStore(Store):
    """The same schema on PostgreSQL (psycopg 3): workers on several machines, one database."""

    placeholder = "%s"
    pk = "BIGSERIAL PRIMARY KEY"
    real = "DOUBLE PRECISION"
    lock_suffix = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout
        self._conn = self._connect()
        self._init_schema()

    def _connect(self) -> Any:
        try:
            import psycopg
        except ImportError:
            raise ValueError(
                "a postgresql:// store needs psycopg 3: pip install 'psycopg[binary]'"
            ) from None
        try:
            # autocommit: reads see other workers' commits; writes open explicit transactions
            # lock_timeout bounds every wait on a row another worker holds
            return psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(1, int(self.timeout)),
                options=f"-c lock_timeout={int(self.timeout * 1000)}",
            )
        except psycopg.OperationalError as e:
            raise ValueError(f"store {self.url}: cannot connect ({e})") from None

    def _schema_lock(self, cur: Any) -> None:
        # Two workers creating the tables at once would race on PostgreSQL's catalogs.
        cur.execute("SELECT pg_advisory_xact_lock(725931)")

    @contextmanager
    def _write(self) -> Iterator[Any]:
        with self._conn.transaction():
            cur = self._conn.cursor()
            try:
                yield cur
            finally:
                cur.close()


def open_store(url: str | os.PathLike[str], *, timeout: float = 60.0) -> Store:
    """A store from ``--store``: ``postgresql://...`` (or ``postgres://``), else a SQLite path."""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresStore(text, timeout=timeout)
    if "://" in text:
        raise ValueError(f"store must be a SQLite file path or postgresql://..., got {text!r}")
    return SQLiteStore(text, timeout=timeout)
