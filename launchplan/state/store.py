"""The SQLite state store under $CEI_HOME: runs, nodes, resources, events and run locks.

Several cei processes (launch, status, terminate from other shells) share one database, so it
runs in WAL mode with a busy timeout and every write is a short transaction committed at once.
Within a process one connection is shared by the engine's worker threads behind a lock.
Nothing secret is ever written: every dict is scrubbed before it is encoded.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from launchplan.errors import (
    CeiError,
    RunExistsError,
    RunLockedError,
    StoreError,
    UnknownRunError,
    UsageError,
)
from launchplan.state.codec import decode, encode, now
from launchplan.state.control import ControlTables
from launchplan.state.holders import Holder
from launchplan.state.records import (
    NODE_STATES,
    PROCESS_STATES,
    RESOURCE_CREATED,
    RESOURCE_GONE_STATES,
    RESOURCE_INTENT,
    RUN_LAUNCHING,
    RUN_STATUSES,
    EventRecord,
    NodeRecord,
    ProcessRecord,
    ResourceRecord,
    RunRecord,
)
from launchplan.state.schema import MIGRATIONS, SCHEMA_VERSION

BUSY_TIMEOUT_MS = 10_000
DB_NAME = "cei.db"
LOCK_POLL = 0.1  # seconds between attempts when a lock is waited for

T = TypeVar("T")
ARCHIVE_MARK = "@"  # NAME@N: the Nth earlier run of NAME, kept (never a name users give)
# Every table that holds a run's rows, and its column naming the run.
_RUN_TABLES = (("elastic", "run"), ("requests", "run"), ("leases", "run"),
               ("processes", "run"), ("events", "run"), ("resources", "run"),
               ("nodes", "run"), ("runs", "name"))
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_KEPT_RUN_NAME = re.compile(_RUN_NAME.pattern + f"(?:{ARCHIVE_MARK}[0-9]+)?")


def default_home() -> Path:
    """Where the store lives: $CEI_HOME, or ~/.cei (the contract of ARCHITECTURE.md)."""
    configured = os.environ.get("CEI_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".cei"


def _ensure_private_dir(path: Path) -> None:
    """Create `path` 0700, or tighten it back to 0700 when it exists with a looser mode."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != 0o700:
        path.chmod(0o700)


def _ensure_private_file(path: Path) -> None:
    """Create `path` 0600 before SQLite opens it (SQLite gives -wal/-shm the db's mode)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    if path.stat().st_mode & 0o777 != 0o600:
        path.chmod(0o600)


# Columns of `nodes` in NodeRecord field order ("index" is an SQL keyword, stored as idx).
_NODE_FIELDS = tuple(f.name for f in fields(NodeRecord))
_NODE_COLUMNS = tuple("idx" if name == "index" else name for name in _NODE_FIELDS)
_NODE_JSON = {"cloud", "outputs", "programs"}
_NODE_UPDATABLE = frozenset(_NODE_FIELDS) - {"run", "node", "updated"}
_PROCESS_FIELDS = tuple(f.name for f in fields(ProcessRecord))
_PROCESS_UPDATABLE = frozenset(_PROCESS_FIELDS) - {"run", "name", "created", "updated"}

# Locks held by this process, per (database, run): nested locked() calls only count.
_held_locks: dict[tuple[str, str], int] = {}
_held_guard = threading.Lock()


class Store(ControlTables):
    """The state store at `home` (created 0700 with cei.db and runs/)."""

    def __init__(self, home: Path | str) -> None:
        self.home = Path(home).expanduser()
        self._me = Holder.me()
        self.db_path = self.home / DB_NAME
        self._lock = threading.RLock()
        self._node_writes = 0  # node writes through this connection (see nodes())
        self._nodes_cache: dict[str, tuple[tuple[int, int], list[NodeRecord]]] = {}
        with _faults(self.home, "open"):
            _ensure_private_dir(self.home)
            _ensure_private_dir(self.home / "runs")
            _ensure_private_file(self.db_path)
            self._conn = _while_busy(self._connect)
            self._migrate()
            self._tighten_db_files()

    def _connect(self) -> sqlite3.Connection:
        """A connection in WAL mode. Several first commands on a fresh $CEI_HOME race to
        switch it to WAL, which SQLite refuses at once (not after the busy timeout) to all but
        one: _while_busy tries again."""
        conn = sqlite3.connect(
            str(self.db_path),
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        except BaseException:
            conn.close()
            raise
        return conn

    # -- plumbing -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite when the last one closes)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, taking SQLite's write lock at once, committed on exit.
        A storage fault (a full disk) is a StoreError and the transaction is rolled back."""
        with self._lock, _faults(self.home, "write"):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    with suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock, _faults(self.home, "read"):
            return list(self._conn.execute(sql, params))

    def _migrate(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CeiError(
                    f"{self.db_path} has schema version {version}, newer than this cei "
                    f"understands ({SCHEMA_VERSION}); upgrade cei"
                )
            while version < SCHEMA_VERSION:
                MIGRATIONS[version](conn)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")

    def _tighten_db_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            path = self.db_path.with_name(DB_NAME + suffix)
            try:
                if path.stat().st_mode & 0o777 != 0o600:
                    path.chmod(0o600)
            except FileNotFoundError:
                continue

    # -- runs -----------------------------------------------------------------------------

    def run_dir(self, run: str) -> Path:
        """The run's private directory for logs and local nodes (created 0700)."""
        _check_run_name(run, kept=True)
        path = self.home / "runs" / run
        _ensure_private_dir(path)
        return path

    def create_run(self, name: str, plan_name: str, plan_path: str | Path,
                   launch: dict[str, Any] | None = None) -> RunRecord:
        """Record a new run in status `launching`; a name already in use is refused.

        `launch` says how it was launched (RunRecord.launch), secrets scrubbed."""
        _check_run_name(name)
        stamp = now()
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE name = ?", (name,)).fetchone():
                raise RunExistsError(
                    f"a run named {name!r} already exists (see `cei status {name}`; "
                    f"terminate it first or choose another name)"
                )
            conn.execute(
                "INSERT INTO runs (name, plan, plan_path, status, created, updated, launch) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, plan_name, str(plan_path), RUN_LAUNCHING, stamp, stamp, encode(launch)),
            )
        return RunRecord(name, plan_name, str(plan_path), RUN_LAUNCHING, stamp, stamp,
                         decode(encode(launch)))

    def find_run(self, name: str) -> RunRecord | None:
        """The run named `name`, or None."""
        rows = self._read("SELECT * FROM runs WHERE name = ?", (name,))
        return _run_record(rows[0]) if rows else None

    def get_run(self, name: str) -> RunRecord:
        """The run named `name`; UnknownRunError suggests close names and `cei list`."""
        record = self.find_run(name)
        if record is not None:
            return record
        import difflib  # only on this error path

        names = [row["name"] for row in self._read("SELECT name FROM runs")
                 if ARCHIVE_MARK in name or ARCHIVE_MARK not in row["name"]]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownRunError(f"no run named {name!r}{hint} (`cei list` shows every run)")

    def list_runs(self) -> list[RunRecord]:
        """Every run, oldest first."""
        return [_run_record(r) for r in self._read("SELECT * FROM runs ORDER BY created, name")]

    def set_run_status(self, name: str, status: str) -> None:
        """Move a run to `status` (one of records.RUN_STATUSES)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE runs SET status = ?, updated = ? WHERE name = ?", (status, now(), name)
            )
        if cursor.rowcount == 0:
            self.get_run(name)

    def delete_run(self, name: str) -> None:
        """Forget a finished run (rows and run directory).

        Refused while any resource of the run may still exist in a cloud, and while another
        live process holds the run's lock.
        """
        self.get_run(name)
        with self._write() as conn:
            self._check_finished(conn, name)
            self._node_writes += 1
            for table, column in _RUN_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (name,))
        _remove_tree(self.home / "runs" / name)

    def archive_run(self, name: str) -> str:
        """Keep a finished run, its history and logs, under NAME@N (N counting the earlier
        runs of that name from 1), so that a new run can have its name. Returns NAME@N.

        Refused like delete_run while the run may still have resources or is held.
        """
        self.get_run(name)
        with self._write() as conn:
            self._check_finished(conn, name)
            taken = {row["name"] for row in conn.execute(
                "SELECT name FROM runs WHERE substr(name, 1, ?) = ?",
                (len(name) + 1, name + ARCHIVE_MARK))}
            archived = next(f"{name}{ARCHIVE_MARK}{n}" for n in range(1, len(taken) + 2)
                            if f"{name}{ARCHIVE_MARK}{n}" not in taken)
            self._node_writes += 1
            conn.execute("DELETE FROM locks WHERE run = ?", (name,))
            for table, column in _RUN_TABLES:
                conn.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?",
                             (archived, name))
        kept = self.home / "runs" / name
        if kept.exists():
            with _faults(self.home, "write"):
                kept.rename(self.home / "runs" / archived)
        return archived

    def runs_named(self, name: str) -> list[RunRecord]:
        """Every run that had `name`: the archived ones (oldest first), then the current."""
        rows = self._read("SELECT * FROM runs WHERE name = ? OR substr(name, 1, ?) = ?",
                          (name, len(name) + 1, name + ARCHIVE_MARK))
        return sorted((_run_record(r) for r in rows), key=lambda r: (r.name == name, r.created))

    def _check_finished(self, conn: sqlite3.Connection, name: str) -> None:
        """Refuse to let go of a run that may still have resources, or that a live process
        holds."""
        live = [
            row["resource_id"] or f"intent {row['id']} of {row['node']}"
            for row in conn.execute(
                "SELECT id, node, resource_id, state FROM resources WHERE run = ? ORDER BY id",
                (name,),
            )
            if row["state"] not in RESOURCE_GONE_STATES
        ]
        if live:
            raise UsageError(
                f"run {name!r} still has resources that may exist: {', '.join(live)}; "
                f"run `cei terminate {name}` first"
            )
        holder = conn.execute("SELECT * FROM locks WHERE run = ?", (name,)).fetchone()
        if holder is not None:
            self._refuse_if_live(name, holder)

    # -- locks ----------------------------------------------------------------------------

    @contextmanager
    def locked(self, name: str, wait: float = 0.0) -> Iterator[None]:
        """Hold the run's lock for the with-block; nested use within this process is fine.

        RunLockedError if another live process holds it (after trying for `wait` seconds);
        a lock left by a dead process (or by a pid since reused, told apart by its start
        time) is taken over.
        """
        key = (str(self.db_path.resolve()), name)
        with _held_guard:
            nested = _held_locks.get(key, 0) > 0
            if nested:
                _held_locks[key] += 1
        if not nested:
            self._acquire(name, wait)
            with _held_guard:
                _held_locks[key] = _held_locks.get(key, 0) + 1
        try:
            yield
        finally:
            with _held_guard:
                _held_locks[key] -= 1
                last = _held_locks[key] == 0
                if last:
                    del _held_locks[key]
            if last:
                self._release(name)

    def lock_holder(self, name: str) -> Holder | None:
        """Who holds the run's lock, if a live process (or one on another host) does."""
        rows = self._read("SELECT * FROM locks WHERE run = ?", (name,))
        if not rows:
            return None
        holder = Holder.of(rows[0])
        return holder if not holder.here() or holder.alive() else None

    def _refuse_if_live(self, name: str, row: sqlite3.Row) -> None:
        holder = Holder.of(row)
        if holder == self._me:
            return
        if not holder.here():
            raise RunLockedError(
                f"run {name!r} is locked by {holder.describe()} since {row['acquired']}"
            )
        if holder.alive():
            raise RunLockedError(
                f"run {name!r} is being changed by another cei process (pid {holder.pid}, "
                f"since {row['acquired']}); wait for it or stop it"
            )

    def _acquire(self, name: str, wait: float) -> None:
        deadline = time.monotonic() + wait
        while True:
            try:
                with self._write() as conn:
                    row = conn.execute("SELECT * FROM locks WHERE run = ?", (name,)).fetchone()
                    if row is not None:
                        self._refuse_if_live(name, row)
                    conn.execute("DELETE FROM locks WHERE run = ?", (name,))
                    me = self._me
                    conn.execute(
                        "INSERT INTO locks (run, pid, starttime, host, acquired) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (name, me.pid, me.starttime, me.host, now()),
                    )
                return
            except RunLockedError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(LOCK_POLL)

    def _release(self, name: str) -> None:
        with self._write() as conn:
            conn.execute(
                "DELETE FROM locks WHERE run = ? AND pid = ? AND host = ?",
                (name, self._me.pid, self._me.host),
            )

    def _upsert(self, table: str, columns: Sequence[str], values: Sequence[Any],
                key: tuple[str, ...], keep: tuple[str, ...] = ()) -> None:
        """Insert a row or, when `key` exists, update every column but the key and `keep`."""
        assignments = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key + keep)
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))}) "
                f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {assignments}",
                values,
            )

    # -- nodes ----------------------------------------------------------------------------

    def save_node(self, record: NodeRecord) -> NodeRecord:
        """Insert or replace the node (by run and node name); returns it as stored."""
        if record.state not in NODE_STATES:
            raise ValueError(f"unknown node state {record.state!r}")
        values = []
        for name in _NODE_FIELDS:
            value = getattr(record, name)
            if name in _NODE_JSON:
                value = encode(value, cloud=name == "cloud")
            elif name == "updated":
                value = now()
            values.append(value)
        self._upsert("nodes", _NODE_COLUMNS, values, key=("run", "node"))
        self._node_writes += 1
        return self.get_node(record.run, record.node)

    def update_node(self, run: str, node: str, **changes: Any) -> NodeRecord:
        """Change some fields of a stored node; unknown field names raise ValueError."""
        unknown = sorted(set(changes) - _NODE_UPDATABLE)
        if unknown:
            raise ValueError(f"unknown node field(s): {', '.join(unknown)}")
        if "state" in changes and changes["state"] not in NODE_STATES:
            raise ValueError(f"unknown node state {changes['state']!r}")
        assignments = ["updated = ?"]
        values: list[Any] = [now()]
        for name, value in changes.items():
            assignments.append(f"{'idx' if name == 'index' else name} = ?")
            values.append(encode(value, cloud=name == "cloud") if name in _NODE_JSON else value)
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE nodes SET {', '.join(assignments)} WHERE run = ? AND node = ?",
                (*values, run, node),
            )
            self._node_writes += 1
        if cursor.rowcount == 0:
            raise KeyError(f"no node {node!r} in run {run!r}")
        return self.get_node(run, node)

    def nodes(self, run: str) -> list[NodeRecord]:
        """The run's nodes in launch order (level, service, index).

        Kept from the last read while no node was written here and nothing at all was
        committed by another process (SQLite's data_version): a controller reads them every
        tick, and decoding every row each time was most of what a tick cost.
        """
        with self._lock, _faults(self.home, "read"):
            version = (self._conn.execute("PRAGMA data_version").fetchone()[0],
                       self._node_writes)
            cached = self._nodes_cache.get(run)
            if cached is not None and cached[0] == version:
                return list(cached[1])
            rows = self._read(
                "SELECT * FROM nodes WHERE run = ? ORDER BY level, service, idx, node", (run,)
            )
            records = [_node_record(row) for row in rows]
            self._nodes_cache[run] = (version, records)
            return list(records)

    def get_node(self, run: str, node: str) -> NodeRecord:
        """One node of a run; KeyError when the run has no such node."""
        rows = self._read("SELECT * FROM nodes WHERE run = ? AND node = ?", (run, node))
        if not rows:
            raise KeyError(f"no node {node!r} in run {run!r}")
        return _node_record(rows[0])

    # -- resources ------------------------------------------------------------------------

    def record_intent(
        self, run: str, node: str, provider: str, cloud: dict[str, Any], token: str
    ) -> int:
        """Commit that `node` is about to be created with idempotency `token`; returns its id.

        Committed before returning, so a crash during the provider call still leaves a trace
        that terminate can follow (find by token/tag).
        """
        stamp = now()
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO resources (run, node, driver, cloud, token, resource_id, state, "
                "created, updated) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?)",
                (run, node, provider, encode(cloud, cloud=True), token, RESOURCE_INTENT, stamp,
                 stamp),
            )
        intent_id = cursor.lastrowid
        assert intent_id is not None
        return intent_id

    def record_resource_id(self, intent_id: int, resource_id: str) -> None:
        """Attach the cloud's id to an intent as soon as the provider returns it."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE resources SET resource_id = ?, updated = ?, "
                "state = CASE WHEN state = ? THEN ? ELSE state END WHERE id = ?",
                (resource_id, now(), RESOURCE_INTENT, RESOURCE_CREATED, intent_id),
            )
        if cursor.rowcount == 0:
            raise KeyError(f"no resource intent {intent_id}")

    def set_intent_state(self, intent_id: int, state: str) -> None:
        """Close an intent that never got an id (e.g. "not-created" after a sweep found nothing)."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE resources SET state = ?, updated = ? WHERE id = ?",
                (state, now(), intent_id),
            )
        if cursor.rowcount == 0:
            raise KeyError(f"no resource intent {intent_id}")

    def set_resource_state(self, run: str, resource_id: str, state: str) -> None:
        """Record the state of a resource the cloud reported (e.g. running, terminated)."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE resources SET state = ?, updated = ? WHERE run = ? AND resource_id = ?",
                (state, now(), run, resource_id),
            )
        if cursor.rowcount == 0:
            raise KeyError(f"no resource {resource_id!r} in run {run!r}")

    def resources(self, run: str) -> list[ResourceRecord]:
        """Every resource the run ever created or meant to create, in creation order."""
        rows = self._read("SELECT * FROM resources WHERE run = ? ORDER BY id", (run,))
        return [
            ResourceRecord(
                id=row["id"],
                run=row["run"],
                node=row["node"],
                driver=row["driver"],
                cloud=decode(row["cloud"]),
                token=row["token"],
                resource_id=row["resource_id"],
                state=row["state"],
                created=row["created"],
                updated=row["updated"],
            )
            for row in rows
        ]

    # -- processes ------------------------------------------------------------------------

    def save_process(self, record: ProcessRecord) -> ProcessRecord:
        """Insert or replace a process (by run and name); `created` is kept on replace."""
        if record.state not in PROCESS_STATES:
            raise ValueError(f"unknown process state {record.state!r}")
        stamp = now()
        values = []
        for name in _PROCESS_FIELDS:
            value = getattr(record, name)
            if name == "definition":
                value = encode(value)
            elif name in ("created", "updated"):
                value = stamp
            values.append(value)
        self._upsert("processes", _PROCESS_FIELDS, values, key=("run", "name"), keep=("created",))
        return self.get_process(record.run, record.name)

    def update_process(self, run: str, name: str, **changes: Any) -> ProcessRecord:
        """Change some fields of a stored process; unknown field names raise ValueError."""
        unknown = sorted(set(changes) - _PROCESS_UPDATABLE)
        if unknown:
            raise ValueError(f"unknown process field(s): {', '.join(unknown)}")
        if "state" in changes and changes["state"] not in PROCESS_STATES:
            raise ValueError(f"unknown process state {changes['state']!r}")
        assignments = ["updated = ?"]
        values: list[Any] = [now()]
        for field_name, value in changes.items():
            assignments.append(f"{field_name} = ?")
            values.append(encode(value) if field_name == "definition" else value)
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE processes SET {', '.join(assignments)} WHERE run = ? AND name = ?",
                (*values, run, name),
            )
        if cursor.rowcount == 0:
            raise KeyError(f"no process {name!r} in run {run!r}")
        return self.get_process(run, name)

    def find_process(self, run: str, name: str) -> ProcessRecord | None:
        """The run's process named `name`, or None."""
        rows = self._read("SELECT * FROM processes WHERE run = ? AND name = ?", (run, name))
        return _process_record(rows[0]) if rows else None

    def get_process(self, run: str, name: str) -> ProcessRecord:
        """The run's process named `name`; KeyError when there is none."""
        record = self.find_process(run, name)
        if record is None:
            raise KeyError(f"no process {name!r} in run {run!r}")
        return record

    def processes(self, run: str) -> list[ProcessRecord]:
        """The run's processes, oldest first."""
        rows = self._read(
            "SELECT * FROM processes WHERE run = ? ORDER BY created, name", (run,)
        )
        return [_process_record(row) for row in rows]

    # -- events ---------------------------------------------------------------------------

    def append_event(
        self, run: str, kind: str, node: str | None, data: dict[str, Any]
    ) -> EventRecord:
        """Append to the run's history with the next sequence number."""
        encoded = encode(data)
        stamp = now()
        with self._write() as conn:
            seq = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run = ?", (run,)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO events (run, seq, time, kind, node, data) VALUES (?, ?, ?, ?, ?, ?)",
                (run, seq, stamp, kind, node, encoded),
            )
        return EventRecord(run, seq, stamp, kind, node, decode(encoded))

    def events(self, run: str, after: int = 0) -> list[EventRecord]:
        """The run's events in order; `after` skips those up to that seq (for following)."""
        rows = self._read(
            "SELECT * FROM events WHERE run = ? AND seq > ? ORDER BY seq", (run, after)
        )
        return [
            EventRecord(
                row["run"], row["seq"], row["time"], row["kind"], row["node"], decode(row["data"])
            )
            for row in rows
        ]


BUSY_RETRY_FOR = 30.0  # seconds to keep trying while another process holds the database


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _while_busy(step: Callable[[], T]) -> T:
    """`step()`, tried again (with a growing pause, for BUSY_RETRY_FOR seconds at most)
    while the database is merely busy."""
    deadline = time.monotonic() + BUSY_RETRY_FOR
    pause = 0.01
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


@contextmanager
def _faults(home: Path, doing: str) -> Iterator[None]:
    """A storage fault while `doing` becomes one clear StoreError (exit 1), not a traceback."""
    try:
        yield
    except sqlite3.Error as exc:
        text = str(exc).lower()
        hint = (" (is the disk full? Free some space, then run the command again; "
                "`cei terminate RUN` finishes a run this left unfinished)"
                if "full" in text or "i/o" in text else "")
        raise StoreError(f"the state store in {home} cannot {doing}: {exc}{hint}") from None
    except OSError as exc:
        raise StoreError(f"the state store in {home} cannot {doing}: "
                         f"{exc.strerror or exc}: {exc.filename or home}") from None


def _check_run_name(name: str, kept: bool = False) -> None:
    """A name a new run may have (`kept`: or a kept earlier run's NAME@N)."""
    if not (_KEPT_RUN_NAME if kept else _RUN_NAME).fullmatch(name):
        raise UsageError(
            f"invalid run name {name!r}: use letters, digits, '.', '_' and '-' "
            f"(starting with a letter or digit, at most 128 characters)"
        )


def _remove_tree(path: Path) -> None:
    """Remove a run directory; symlinks inside are removed, never followed."""
    import shutil  # only when a run is deleted

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)


def _run_record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        name=row["name"],
        plan=row["plan"],
        plan_path=row["plan_path"],
        status=row["status"],
        created=row["created"],
        updated=row["updated"],
        launch=decode(row["launch"]),
    )


def _process_record(row: sqlite3.Row) -> ProcessRecord:
    values = {name: row[name] for name in _PROCESS_FIELDS}
    values["definition"] = decode(values["definition"])
    return ProcessRecord(**values)


def _node_record(row: sqlite3.Row) -> NodeRecord:
    values: dict[str, Any] = {}
    for name, column in zip(_NODE_FIELDS, _NODE_COLUMNS, strict=True):
        value = row[column]
        values[name] = decode(value) if name in _NODE_JSON else value
    return NodeRecord(**values)
