"""The state store: runs, nodes, resources, events and run locks, in SQLite or PostgreSQL.

Which database is the CEI_STATE URL's (location.py): by default SQLite at $CEI_HOME/cei.db,
else a PostgreSQL database several machines share. The behaviour is the same on both: every
write is a short transaction committed at once, taken under one writers' lock (database.py).
Within a process one connection is shared by the engine's worker threads behind a lock.
Nothing secret is ever written: every dict is scrubbed before it is encoded.

When the database cannot be reached, a write that records what was done (a resource's id, a
node's state, an event) is kept in order and written as soon as the database is back
(`flush_pending`), and StateUnavailableError tells the caller to stop.
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
from launchplan.state.database import Database, Row, connect
from launchplan.state.holders import Holder
from launchplan.state.location import parse_location, state_url
from launchplan.state.locks import RunLocks, _lock_record
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
from launchplan.state.runkeys import RunKeys
from launchplan.state.schema import migrate

T = TypeVar("T")
Work = Callable[[Database], Any]

_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def default_home() -> Path:
    """Where the store lives: $CEI_HOME, or ~/.cei (the contract of ARCHITECTURE.md)."""
    configured = os.environ.get("CEI_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".cei"


def _ensure_private_dir(path: Path) -> None:
    """Create `path` 0700, or tighten it back to 0700 when it exists with a looser mode."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != 0o700:
        path.chmod(0o700)


# Columns of `nodes` in NodeRecord field order ("index" is an SQL keyword, stored as idx).
_NODE_FIELDS = tuple(f.name for f in fields(NodeRecord))
_NODE_COLUMNS = tuple("idx" if name == "index" else name for name in _NODE_FIELDS)
_NODE_JSON = {"cloud", "outputs", "programs"}
_NODE_UPDATABLE = frozenset(_NODE_FIELDS) - {"run", "node", "updated"}
_PROCESS_FIELDS = tuple(f.name for f in fields(ProcessRecord))
_PROCESS_UPDATABLE = frozenset(_PROCESS_FIELDS) - {"run", "name", "created", "updated"}
# Every table that holds a run's rows, and the column naming the run (deleted in this order).
RUN_TABLES = (("elastic", "run"), ("requests", "run"), ("leases", "run"), ("run_keys", "run"),
              ("processes", "run"), ("events", "run"), ("resources", "run"), ("nodes", "run"),
              ("runs", "name"))


class Store(ControlTables, RunLocks, RunKeys):
    """The state store of `home` (created 0700 with runs/), in the database `url` names.

    `url` None means CEI_STATE's (unset: SQLite at `home`/cei.db); "" is that SQLite file
    whatever CEI_STATE says.
    """

    def __init__(self, home: Path | str, url: str | None = None) -> None:
        self.home = Path(home).expanduser()
        _ensure_private_dir(self.home)
        _ensure_private_dir(self.home / "runs")
        self.location = parse_location(state_url() if url is None else url, self.home)
        self._me = Holder.me()
        self._lock = threading.RLock()
        self._node_writes = 0  # node writes through this connection (see nodes())
        self._nodes_cache: dict[str, tuple[tuple[int, int], list[NodeRecord]]] = {}
        self._pending: list[Work] = []
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
        with self._lock:
            if not self._closed:
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
                with self._lock:
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

    def _settle(self) -> None:
        """Write the waiting writes in order (the caller holds the store's lock)."""
        db = self._usable()
        while self._pending:
            db.begin()
            try:
                self._pending[0](db)
                db.commit()
            except BaseException:
                db.rollback()
                raise
            self._pending.pop(0)

    @contextmanager
    def _write(self) -> Iterator[Database]:
        """One short write transaction under the writers' lock, committed on exit."""
        with self._lock:
            self._settle()
            db = self._usable()
            db.begin()
            try:
                yield db
                db.commit()
            except BaseException:
                db.rollback()
                raise

    def _durable(self, work: Work) -> Any:
        """A write that records what was done; when the database cannot be reached it waits,
        in order, to be written once it is back, and StateUnavailableError is raised."""
        with self._lock:
            try:
                with self._write() as db:
                    return work(db)
            except StateUnavailableError:
                if not self._closed:
                    self._pending.append(work)
                raise

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        with self._lock:
            self._settle()
            return self._usable().execute(sql, params).rows

    # -- runs -----------------------------------------------------------------------------

    def run_dir(self, run: str) -> Path:
        """The run's private directory for logs and local nodes (created 0700)."""
        _check_run_name(run)
        path = self.home / "runs" / run
        _ensure_private_dir(path)
        return path

    def create_run(self, name: str, plan_name: str, plan_path: str | Path,
                   launch: dict[str, Any] | None = None) -> RunRecord:
        """Record a new run in status `launching`; a name already in use is refused.

        `launch` says how it was launched (RunRecord.launch), secrets scrubbed."""
        _check_run_name(name)
        stamp = now()
        with self._write() as db:
            if db.execute("SELECT 1 AS found FROM runs WHERE name = ?", (name,)).rows:
                raise RunExistsError(
                    f"a run named {name!r} already exists (see `cei status {name}`; "
                    f"terminate it first or choose another name)"
                )
            db.execute(
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

        names = [row["name"] for row in self._read("SELECT name FROM runs")]
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
        stamp = now()
        changed = self._durable(lambda db: db.execute(
            "UPDATE runs SET status = ?, updated = ? WHERE name = ?", (status, stamp, name)
        ).rowcount)
        if changed == 0:
            self.get_run(name)

    def delete_run(self, name: str) -> None:
        """Forget a finished run (rows and run directory) so that its name can be reused.

        Refused while any resource of the run may still exist in a cloud, and while another
        live process holds the run's lock.
        """
        self.get_run(name)
        with self._write() as db:
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
            self._node_writes += 1
            for table, column in RUN_TABLES:
                db.execute(f"DELETE FROM {table} WHERE {column} = ?", (name,))
        _remove_tree(self.home / "runs" / name)

    def _upsert(self, table: str, columns: Sequence[str], values: Sequence[Any],
                key: tuple[str, ...], keep: tuple[str, ...] = ()) -> None:
        """Insert a row or, when `key` exists, update every column but the key and `keep`."""
        assignments = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key + keep)
        sql = (f"INSERT INTO {table} ({', '.join(columns)}) "
               f"VALUES ({', '.join('?' * len(columns))}) "
               f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {assignments}")
        row = tuple(values)
        self._durable(lambda db: db.execute(sql, row))

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
        self._node_writes += 1
        self._upsert("nodes", _NODE_COLUMNS, values, key=("run", "node"))
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
        sql = f"UPDATE nodes SET {', '.join(assignments)} WHERE run = ? AND node = ?"
        params = (*values, run, node)
        self._node_writes += 1
        if self._durable(lambda db: db.execute(sql, params).rowcount) == 0:
            raise KeyError(f"no node {node!r} in run {run!r}")
        return self.get_node(run, node)

    def nodes(self, run: str) -> list[NodeRecord]:
        """The run's nodes in launch order (level, service, index).

        Kept from the last read while no node was written here and the database says nothing
        at all was committed by another connection (Database.data_version; SQLite can tell,
        PostgreSQL cannot, so there they are always read): a controller reads them every
        tick, and decoding every row each time was most of what a tick cost.
        """
        with self._lock:
            self._settle()
            changes = self._usable().data_version()
            version = None if changes is None else (changes, self._node_writes)
            cached = self._nodes_cache.get(run)
            if version is not None and cached is not None and cached[0] == version:
                return list(cached[1])
            rows = self._read(
                "SELECT * FROM nodes WHERE run = ? ORDER BY level, service, idx, node", (run,)
            )
            records = [_node_record(row) for row in rows]
            if version is not None:
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
        that terminate can follow (find by token/tag). Never kept for later: when the database
        cannot be reached, StateUnavailableError stops the create before it starts.
        """
        stamp = now()
        with self._write() as db:
            row = db.execute(
                "INSERT INTO resources (run, node, driver, cloud, token, resource_id, state, "
                "created, updated) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?) RETURNING id",
                (run, node, provider, encode(cloud, cloud=True), token, RESOURCE_INTENT, stamp,
                 stamp),
            ).one()
        assert row is not None
        return int(row["id"])

    def record_resource_id(self, intent_id: int, resource_id: str) -> None:
        """Attach the cloud's id to an intent as soon as the provider returns it."""
        params = (resource_id, now(), RESOURCE_INTENT, RESOURCE_CREATED, intent_id)
        if self._durable(lambda db: db.execute(
            "UPDATE resources SET resource_id = ?, updated = ?, "
            "state = CASE WHEN state = ? THEN ? ELSE state END WHERE id = ?", params
        ).rowcount) == 0:
            raise KeyError(f"no resource intent {intent_id}")

    def set_intent_state(self, intent_id: int, state: str) -> None:
        """Close an intent that never got an id (e.g. "not-created" after a sweep found nothing)."""
        params = (state, now(), intent_id)
        if self._durable(lambda db: db.execute(
            "UPDATE resources SET state = ?, updated = ? WHERE id = ?", params
        ).rowcount) == 0:
            raise KeyError(f"no resource intent {intent_id}")

    def set_resource_state(self, run: str, resource_id: str, state: str) -> None:
        """Record the state of a resource the cloud reported (e.g. running, terminated)."""
        params = (state, now(), run, resource_id)
        if self._durable(lambda db: db.execute(
            "UPDATE resources SET state = ?, updated = ? WHERE run = ? AND resource_id = ?",
            params
        ).rowcount) == 0:
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
        sql = f"UPDATE processes SET {', '.join(assignments)} WHERE run = ? AND name = ?"
        params = (*values, run, name)
        if self._durable(lambda db: db.execute(sql, params).rowcount) == 0:
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

        def append(db: Database) -> int:
            row = db.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 AS seq FROM events WHERE run = ?", (run,)
            ).one()
            assert row is not None
            db.execute(
                "INSERT INTO events (run, seq, time, kind, node, data) VALUES (?, ?, ?, ?, ?, ?)",
                (run, row["seq"], stamp, kind, node, encoded),
            )
            return int(row["seq"])

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


def _check_run_name(name: str) -> None:
    if not _RUN_NAME.fullmatch(name):
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


def _node_record(row: Row) -> NodeRecord:
    values: dict[str, Any] = {}
    for name, column in zip(_NODE_FIELDS, _NODE_COLUMNS, strict=True):
        value = row[column]
        values[name] = decode(value) if name in _NODE_JSON else value
    return NodeRecord(**values)
