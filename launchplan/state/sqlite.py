"""The SQLite backend: one file (0600) in WAL mode with a busy timeout, fsynced on commit.

Several cei processes share the file; BEGIN IMMEDIATE takes SQLite's write lock at the start of
each write transaction, which is the writers' lock of database.py.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launchplan.state.database import Database, Result
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


class SQLiteDatabase(Database):
    autoid = "INTEGER PRIMARY KEY AUTOINCREMENT"
    text = "TEXT"

    def __init__(self, location: StateLocation) -> None:
        super().__init__(location)
        assert location.path is not None
        self.path = location.path
        _private_file(self.path)
        self._conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000,
                                     isolation_level=None, check_same_thread=False)
        self._conn.row_factory = _dict_row
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        cursor = self._conn.execute(sql, tuple(params))
        rows = cursor.fetchall() if cursor.description else []
        return Result(rows, cursor.rowcount)

    def begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._conn.execute("COMMIT")
        self.tighten()

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()["user_version"])

    def set_schema_version(self, version: int) -> None:
        self._conn.execute(f"PRAGMA user_version = {int(version)}")

    def data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()["data_version"])

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
        self._conn.close()
