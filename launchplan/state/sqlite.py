"""The SQLite backend: one file (0600) in WAL mode with a busy timeout.

Commits are durable against a crash of any process (a killed cei loses nothing it committed)
but, to spare an fsync per write, only some are against a crash of the machine: the
connection runs with `synchronous = NORMAL`, under which WAL mode appends a commit to the
-wal file without fsyncing it (the file is fsynced when a checkpoint copies it back). The
records that a cloud resource is about to be, or was, made go through `synced()`, which
switches the connection to `synchronous = FULL` for their commit: SQLite then fsyncs the
-wal file on that commit, and since the file is written in commit order, every commit before
it is on disk too (the node rows and events leading up to a create are never lost while its
intent is kept).

Several cei processes share the file. Within a process one connection serves every thread, one
at a time. A transaction takes SQLite's write lock at once (BEGIN IMMEDIATE): it serialises
every writer, which holds whatever lock a transaction names.

A storage fault (a read-only directory, a full disk, a damaged file, a database busy for
longer than the busy timeout) is one StoreError naming the file's directory and the cause.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from launchplan.errors import StoreError
from launchplan.state.database import Connection, Database, Result, faults, storage_fault
from launchplan.state.location import StateLocation

BUSY_TIMEOUT_MS = 10_000
BUSY_RETRY_FOR = 30.0  # seconds to keep opening while other processes hold the database
_SYNC_USUAL = "NORMAL"  # no fsync per commit: a machine crash may lose the last few
_SYNC_DURABLE = "FULL"  # fsync of the -wal file on commit: see synced()

T = TypeVar("T")


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


def _private_file(path: Path) -> None:
    """Create `path` 0600 before SQLite opens it (SQLite gives -wal/-shm the db's mode)."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    if path.stat().st_mode & 0o777 != 0o600:
        path.chmod(0o600)


def _doing(sql: str) -> str:
    """What a statement does to the store, as a fault's message says it."""
    words = sql.split(None, 1)
    first = words[0].upper() if words else ""
    return "read" if first == "SELECT" or (first == "PRAGMA" and "=" not in sql) else "write"


def _busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def _while_busy(step: Callable[[], T]) -> T:
    """`step()`, tried again (with a growing pause, for BUSY_RETRY_FOR seconds at most)
    while the database is merely busy."""
    deadline = time.monotonic() + BUSY_RETRY_FOR
    pause = 0.01
    while True:
        try:
            return step()
        except sqlite3.Error as exc:
            if not _busy(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


class _SQLiteConnection:
    def __init__(self, conn: sqlite3.Connection, place: Path) -> None:
        self.conn = conn
        self.place = place

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        try:
            cursor = self.conn.execute(sql, tuple(params))
            rows = cursor.fetchall() if cursor.description else []
        except sqlite3.Error as exc:
            raise storage_fault(self.place, _doing(sql), str(exc)) from None
        return Result(rows, cursor.rowcount)

    def rollback(self) -> None:
        """End a failed transaction; one the fault already ended needs nothing more."""
        if self.conn.in_transaction:
            with suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")


class SQLiteDatabase(Database):
    autoid = "INTEGER PRIMARY KEY AUTOINCREMENT"
    text = "TEXT"

    def __init__(self, location: StateLocation) -> None:
        super().__init__(location)
        assert location.path is not None
        self.path = location.path
        self._lock = threading.RLock()
        place = self.path.parent
        with faults(place, "open"):
            _private_file(self.path)
            try:
                conn = _while_busy(self._open)
            except sqlite3.Error as exc:
                raise storage_fault(place, "open", str(exc)) from None
        self._conn = _SQLiteConnection(conn, place)

    def _open(self) -> sqlite3.Connection:
        """A connection in WAL mode. Several first commands on a fresh $CEI_HOME race to
        switch it to WAL, which SQLite refuses at once (not after the busy timeout) to all but
        one: _while_busy tries again."""
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None, check_same_thread=False)
        try:
            conn.row_factory = _dict_row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {_SYNC_USUAL}")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        with self._lock:
            yield self._conn

    @contextmanager
    def synced(self) -> Iterator[Connection]:
        """The connection with `synchronous = FULL` for what is done with it (then back to
        NORMAL): each commit fsyncs the -wal file, and with it all earlier commits. A
        connection that cannot switch back stays FULL: slower, never less safe."""
        with self._lock:
            self._conn.execute(f"PRAGMA synchronous = {_SYNC_DURABLE}")
            try:
                yield self._conn
            finally:
                with suppress(StoreError):
                    self._conn.execute(f"PRAGMA synchronous = {_SYNC_USUAL}")

    @contextmanager
    def transaction(self, lock: str) -> Iterator[Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.rollback()
                raise
        self.tighten()

    def current_version(self) -> int:
        with self.connection() as conn:
            return self.schema_version(conn)

    def schema_version(self, conn: Connection) -> int:
        row = conn.execute("PRAGMA user_version").one()
        return int(row["user_version"]) if row else 0

    def set_schema_version(self, conn: Connection, version: int) -> None:
        conn.execute(f"PRAGMA user_version = {int(version)}")

    def data_version(self) -> int:
        with self.connection() as conn:
            row = conn.execute("PRAGMA data_version").one()
        return int(row["data_version"]) if row else 0

    def tighten(self) -> None:
        """Keep the database and its -wal/-shm companions 0600 (SQLite may create them)."""
        for suffix in ("", "-wal", "-shm"):
            path = self.path.with_name(self.path.name + suffix)
            try:
                if path.stat().st_mode & 0o777 != 0o600:
                    with faults(self.path.parent, "write"):
                        path.chmod(0o600)
            except FileNotFoundError:
                continue

    def close(self) -> None:
        with self._lock:
            self._conn.conn.close()
