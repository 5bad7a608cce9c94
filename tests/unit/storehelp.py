"""Looking at a store's database directly, the same way on both backends (tests only)."""

from __future__ import annotations

import json
from typing import Any

from launchplan.state import Store
from launchplan.state.location import SQLITE
from launchplan.state.store import RUN_TABLES


def execute(store: Store, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Run one statement in a write transaction of `store`'s own database."""
    with store._write("tests") as conn:
        conn.execute(sql, params)


def lock_rows(store: Store) -> list[dict[str, Any]]:
    return store._read("SELECT * FROM locks ORDER BY run")


def store_url(store: Store) -> str:
    """The URL that opens the same database from another process."""
    location = store.location
    return f"sqlite://{location.path}" if location.kind == SQLITE else str(location.conninfo)


def raw_contents(store: Store) -> bytes:
    """Everything the database holds: SQLite's files as they are on disk (the WAL too), or
    every row of every table of a PostgreSQL database, as text."""
    if store.location.kind == SQLITE:
        assert store.location.path is not None
        path = store.location.path
        files = [path, path.with_name(path.name + "-wal")]
        return b"".join(f.read_bytes() for f in files if f.exists())
    tables = [table for table, _ in RUN_TABLES] + ["locks", "cei_schema"]
    rows = {table: store._read(f"SELECT * FROM {table}") for table in tables}
    return json.dumps(rows, default=str).encode()
