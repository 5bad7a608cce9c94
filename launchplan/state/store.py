"""The state store: runs, nodes, resources, events and run locks, in SQLite or PostgreSQL.

Which database is the CEI_STATE URL's (location.py): by default SQLite at $CEI_HOME/cei.db,
else a PostgreSQL database several machines share. The behaviour is the same on both: every
write commits at once, most in one statement that is atomic by itself, the few that read
before they write in a transaction holding the run's lock (database.py). The engine's worker
threads share the store (and its connections). Nothing secret is ever written: every dict is
scrubbed before it is encoded. Nodes (nodes.py) and cloud resources (resources.py) have
modules of their own; the records of cloud resources are on disk before their call returns,
other commits survive any crash of a process (sqlite.py says why not every commit is fsynced).

When the database cannot be reached, a write that records what was done (a resource's id, a
node's state, an event) is kept in order and written as soon as the database is back
(`flush_pending`), and StateUnavailableError tells the caller to stop. SQLite files that
cannot be read or written are a StoreError (database.faults).

A terminated run whose name is used again is kept as NAME@N (archive_run), everything of it
renamed in every table of RUN_TABLES.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from launchplan.errors import (
    RunExistsError,
    StateUnavailableError,
    UnknownRunError,
    UsageError,
)
from launchplan.state.codec import decode, encode, now
from launchplan.state.control import ControlTables
from launchplan.state.database import Connection, Database, Row, connect, faults
from launchplan.state.holders import Holder
from launchplan.state.location import parse_location, state_url
from launchplan.state.locks import RunLocks, _lock_record
from launchplan.state.nodes import NodeTables
from launchplan.state.records import (
    PROCESS_STATES,
    RESOURCE_GONE_STATES,
    RUN_LAUNCHING,
    RUN_STATUSES,
    EventRecord,
    NodeRecord,
    ProcessRecord,
    RunRecord,
)
from launchplan.state.resources import ResourceTables
from launchplan.state.runkeys import RunKeys
from launchplan.state.schema import migrate

T = TypeVar("T")
Work = Callable[[Connection], Any]

APPEND_TRIES = 100  # an event's sequence number taken by other writers this often: give up
ARCHIVE_MARK = "@"  # NAME@N: the Nth earlier run of NAME, kept (never a name users give)
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


_PROCESS_FIELDS = tuple(f.name for f in fields(ProcessRecord))
_PROCESS_UPDATABLE = frozenset(_PROCESS_FIELDS) - {"run", "name", "created", "updated"}
# Every table that holds a run's rows, and the column naming the run (deleted in this order).
RUN_TABLES = (("elastic", "run"), ("requests", "run"), ("leases", "run"), ("run_keys", "run"),
              ("processes", "run"), ("events", "run"), ("resources", "run"), ("nodes", "run"),
              ("runs", "name"))


class Store(NodeTables, ResourceTables, ControlTables, RunLocks, RunKeys):
    """The state store of `home` (created 0700 with runs/), in the database `url` names.

    `url` None means CEI_STATE's (unset: SQLite at `home`/cei.db); "" is that SQLite file
    whatever CEI_STATE says. A home that cannot be made, or a SQLite file that cannot be
    read or written, is a StoreError (see database.faults).
    """

    def __init__(self, home: Path | str, url: str | None = None) -> None:
        self.home = Path(home).expanduser()
        with faults(self.home, "open"):
            _ensure_private_dir(self.home)
            _ensure_private_dir(self.home / "runs")
        self.location = parse_location(state_url() if url is None else url, self.home)
        self._me = Holder.me()
        self._node_writes = 0  # node writes through this store (see nodes())
        self._nodes_cache: dict[str, tuple[tuple[int, int], list[NodeRecord]]] = {}
        self._cache_lock = threading.Lock()
        self._pending: list[tuple[Work, bool]] = []
        self._pending_lock = threading.RLock()
        self._closed = False
        self._init_locks()
        self._db = connect(self.location)
        try:
            migrate(self._db)
        except BaseException:
            self._db.close()
            raise

    # -- plumbing -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; writes still waiting for the database are given up."""
        self._stop_renewing()
        with self._pending_lock:
            if self._closed:
                return
            self._closed = True
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending_writes(self) -> int:
        """How many writes wait for the database to come back."""
        return len(self._pending)

    def flush_pending(self, wait: float, interval: float = 1.0) -> int:
        """Write what waits for the database, trying for `wait` seconds; returns what is left."""
        deadline = time.monotonic() + wait
        while True:
            try:
                self._settle()
                return 0
            except StateUnavailableError:
                if time.monotonic() + interval > deadline:
                    return len(self._pending)
                time.sleep(interval)

    def _usable(self) -> Database:
        if self._closed:
            raise StateUnavailableError(f"the store of {self.location.label} is closed")
        return self._db

    def _apply(self, work: Work, synced: bool) -> Any:
        db = self._usable()
        with db.synced() if synced else db.connection() as conn:
            return work(conn)

    def _settle(self) -> None:
        """Write the waiting writes, in order, before anything else is read or written."""
        if not self._pending:
            return
        with self._pending_lock:
            while self._pending:
                self._apply(*self._pending[0])
                self._pending.pop(0)

    def _run(self, work: Work, synced: bool = False) -> Any:
        """`work(conn)`: one statement, atomic by itself, committed at once (several that
        must see each other go in a transaction: _write). `synced`: on disk when it returns,
        even against a crash of the machine (Database.synced), for the records of cloud
        resources; other commits survive any crash of a process."""
        self._settle()
        return self._apply(work, synced)

    def _durable(self, work: Work, synced: bool = False) -> Any:
        """_run for a write that records what was done: when the database cannot be reached
        it waits, in order, to be written once it is back, and StateUnavailableError is
        raised to stop the caller."""
        try:
            return self._run(work, synced)
        except StateUnavailableError:
            with self._pending_lock:
                if not self._closed:
                    self._pending.append((work, synced))
            raise

    @contextmanager
    def _write(self, lock: str) -> Iterator[Connection]:
        """A transaction holding `lock` (a run's name), for several statements in a row."""
        self._settle()
        with self._usable().transaction(lock) as conn:
            yield conn

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        rows: list[Row] = self._run(lambda conn: conn.execute(sql, params).rows)
        return rows

    # -- runs -----------------------------------------------------------------------------

    def run_dir(self, run: str) -> Path:
        """The run's private directory for logs and local nodes (created 0700)."""
        check_run_name(run, kept=True)
        path = self.home / "runs" / run
        _ensure_private_dir(path)
        return path

    def create_run(self, name: str, plan_name: str, plan_path: str | Path,
                   launch: dict[str, Any] | None = None) -> RunRecord:
        """Record a new run in status `launching`; a name already in use is refused.

        `launch` says how it was launched (RunRecord.launch), secrets scrubbed."""
        check_run_name(name)
        stamp = now()
        values = (name, plan_name, str(plan_path), RUN_LAUNCHING, stamp, stamp, encode(launch))
        if not self._run(lambda db: db.execute(
            "INSERT INTO runs (name, plan, plan_path, status, created, updated, launch) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING RETURNING name", values
        ).rows):
            raise RunExistsError(
                f"a run named {name!r} already exists (see `cei status {name}`; "
                f"terminate it first or choose another name)"
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

    def node_states(self) -> dict[str, dict[str, int]]:
        """For every run, how many of its nodes are in each state (one query for `cei list`)."""
        counts: dict[str, dict[str, int]] = {}
        for row in self._read("SELECT run, state, COUNT(*) AS n FROM nodes GROUP BY run, state"):
            counts.setdefault(row["run"], {})[row["state"]] = int(row["n"])
        return counts

    def set_run_status(self, name: str, status: str) -> None:
        """Move a run to `status` (one of records.RUN_STATUSES)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        if self._update("runs", {"status": status}, {"name": name}) is None:
            self.get_run(name)

    def delete_run(self, name: str) -> None:
        """Forget a finished run (rows and run directory).

        Refused while any resource of the run may still exist in a cloud, and while another
        live process holds the run's lock.
        """
        self.get_run(name)
        with self._write(name) as db:
            self._check_finished(db, name)
            self._node_writes += 1
            for table, column in RUN_TABLES:
                db.execute(f"DELETE FROM {table} WHERE {column} = ?", (name,))
        _remove_tree(self.home / "runs" / name)

    def archive_run(self, name: str) -> str:
        """Keep a finished run, its history and logs, under NAME@N (N counting the earlier
        runs of that name from 1), so that a new run can have its name. Returns NAME@N.

        Refused like delete_run while the run may still have resources or is held; the
        transaction holds the lock of NAME, which every archive of NAME takes, so two
        numbering the same NAME at once take turns.
        """
        self.get_run(name)
        prefix = name + ARCHIVE_MARK
        with self._write(name) as db:
            self._check_finished(db, name)
            taken = {row["name"] for row in db.execute(
                "SELECT name FROM runs WHERE substr(name, 1, ?) = ?",
                (len(prefix), prefix)).rows}
            archived = next(f"{prefix}{n}" for n in range(1, len(taken) + 2)
                            if f"{prefix}{n}" not in taken)
            self._node_writes += 1
            db.execute("DELETE FROM locks WHERE run = ?", (name,))
            for table, column in RUN_TABLES:
                db.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?",
                           (archived, name))
        kept = self.home / "runs" / name
        if kept.exists():
            with faults(self.home, "write"):
                kept.rename(self.home / "runs" / archived)
        return archived

    def runs_named(self, name: str) -> list[RunRecord]:
        """Every run that had `name`: the archived ones (oldest first), then the current."""
        prefix = name + ARCHIVE_MARK
        rows = self._read("SELECT * FROM runs WHERE name = ? OR substr(name, 1, ?) = ?",
                          (name, len(prefix), prefix))
        return sorted((_run_record(r) for r in rows), key=lambda r: (r.name == name, r.created))

    def _check_finished(self, db: Connection, name: str) -> None:
        """Refuse to let go of a run that may still have resources, or that another live
        process holds (inside a transaction holding the run's lock)."""
        live = [
            row["resource_id"] or f"intent {row['id']} of {row['node']}"
            for row in db.execute(
                "SELECT id, node, resource_id, state FROM resources WHERE run = ? ORDER BY id",
                (name,),
            ).rows
            if row["state"] not in RESOURCE_GONE_STATES
        ]
        if live:
            raise UsageError(
                f"run {name!r} still has resources that may exist: {', '.join(live)}; "
                f"run `cei terminate {name}` first"
            )
        row = db.execute("SELECT * FROM locks WHERE run = ?", (name,)).one()
        if row is not None:
            self._refuse_if_live(name, _lock_record(row))

    def _upsert(self, table: str, columns: Sequence[str], values: Sequence[Any],
                key: tuple[str, ...], keep: tuple[str, ...] = ()) -> Row:
        """Insert a row or, when `key` exists, update every column but the key and `keep`;
        returns the row as stored."""
        assignments = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key + keep)
        sql = (f"INSERT INTO {table} ({', '.join(columns)}) "
               f"VALUES ({', '.join('?' * len(columns))}) "
               f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {assignments} RETURNING *")
        row = tuple(values)
        stored: Row = self._durable(lambda db: db.execute(sql, row).rows[0])
        return stored

    def _update(self, table: str, changes: dict[str, Any], where: dict[str, Any]) -> Row | None:
        """Set `changes` (and `updated`) on the row `where` names; the row as stored, or None
        when there is none."""
        assignments = ", ".join(f"{column} = ?" for column in ["updated", *changes])
        condition = " AND ".join(f"{column} = ?" for column in where)
        sql = f"UPDATE {table} SET {assignments} WHERE {condition} RETURNING *"
        params = (now(), *changes.values(), *where.values())
        stored: Row | None = self._durable(lambda db: db.execute(sql, params).one())
        return stored

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
        return _process_record(self._upsert("processes", _PROCESS_FIELDS, values,
                                            key=("run", "name"), keep=("created",)))

    def update_process(self, run: str, name: str, **changes: Any) -> ProcessRecord:
        """Change some fields of a stored process; unknown field names raise ValueError."""
        unknown = sorted(set(changes) - _PROCESS_UPDATABLE)
        if unknown:
            raise ValueError(f"unknown process field(s): {', '.join(unknown)}")
        if "state" in changes and changes["state"] not in PROCESS_STATES:
            raise ValueError(f"unknown process state {changes['state']!r}")
        columns = {field_name: encode(value) if field_name == "definition" else value
                   for field_name, value in changes.items()}
        row = self._update("processes", columns, {"run": run, "name": name})
        if row is None:
            raise KeyError(f"no process {name!r} in run {run!r}")
        return _process_record(row)

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
        """Append to the run's history with the next sequence number.

        One statement takes the number and inserts; when another writer took the same number
        first (PostgreSQL lets two such statements run at once), it takes the next."""
        encoded = encode(data)
        stamp = now()

        def append(db: Connection) -> int:
            for _ in range(APPEND_TRIES):
                row = db.execute(
                    "INSERT INTO events (run, seq, time, kind, node, data) "
                    "SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ? FROM events WHERE run = ? "
                    "ON CONFLICT (run, seq) DO NOTHING RETURNING seq",
                    (run, stamp, kind, node, encoded, run)).one()
                if row is not None:
                    return int(row["seq"])
            raise StateUnavailableError(f"could not append to the history of run {run!r}: "
                                        f"{APPEND_TRIES} writers took each next number first")

        seq = self._durable(append)
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


def check_run_name(name: str, kept: bool = False) -> None:
    """A name a new run may have (`kept`: or a kept earlier run's NAME@N); UsageError if not."""
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


def _run_record(row: Row) -> RunRecord:
    return RunRecord(
        name=row["name"],
        plan=row["plan"],
        plan_path=row["plan_path"],
        status=row["status"],
        created=row["created"],
        updated=row["updated"],
        launch=decode(row["launch"]),
    )


def _process_record(row: Row) -> ProcessRecord:
    values = {name: row[name] for name in _PROCESS_FIELDS}
    values["definition"] = decode(values["definition"])
    return ProcessRecord(**values)
