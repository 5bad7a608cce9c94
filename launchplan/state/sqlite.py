"""The SQLite backend: one file (0600) in WAL mode with a busy timeout, fsynced on commit.

Several cei processes share the file. Within a process one connection serves every thread, one
at a time. A transaction takes SQLite's write lock at once (BEGIN IMMEDIATE): it serialises
every writer, which holds whatever lock a transaction names.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from launchplan.state.database import Connection, Database, Result
from launchplan.state.location import StateLocation

BUSY_TIMEOUT_MS = 10_000


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


class _SQLiteConnection:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        cursor = self.conn.execute(sql, tuple(params))
        rows = cursor.fetchall() if cursor.description else []
        return Result(rows, cursor.rowcount)


class SQLiteDatabase(Database):
    autoid = "INTEGER PRIMARY KEY AUTOINCREMENT"
    text = "TEXT"

    def __init__(self, location: StateLocation) -> None:
        super().__init__(location)
        assert location.path is not None
        self.path = location.path
        _private_file(self.path)
        self._lock = threading.RLock()
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None, check_same_thread=False)
        conn.row_factory = _dict_row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        self._conn = _SQLiteConnection(conn)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        with self._lock:
            yield self._conn

    @contextmanager
    def transaction(self, lock: str) -> Iterator[Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.conn.in_transaction:
                    self._conn.execute("ROLLBACK")
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
                    path.chmod(0o600)
            except FileNotFoundError:
                continue

    def close(self) -> None:
        with self._lock:
            self._conn.conn.close()
