"""What the store needs of a database, so that everything but the dialect is shared.

Each backend runs plain SQL with `?` placeholders and returns rows as dicts. A statement on its
own commits at once and is atomic by itself (the store writes most things in one statement:
an upsert, an update, an insert that returns what it made). Read-then-write sequences (a lock
taken over, a run deleted, a run imported, a migration) run as a transaction holding a named
lock (a run's name), so that two of them on the same run, from any machine, happen one after
the other: on SQLite the database's write lock (BEGIN IMMEDIATE), on PostgreSQL a
transaction-level advisory lock on the name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from launchplan.errors import StoreError
from launchplan.state.location import POSTGRESQL, StateLocation

Row = dict[str, Any]
SCHEMA_LOCK = "cei:schema"  # the lock name migrations take


@dataclass(frozen=True)
class Result:
    """What one statement gave back: its rows (RETURNING or SELECT) and the rows it changed."""

    rows: list[Row] = field(default_factory=list)
    rowcount: int = 0

    def one(self) -> Row | None:
        return self.rows[0] if self.rows else None


class Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement; StateUnavailableError when the database cannot be reached."""


class Database(ABC):
    """The store's way into one database, shared by the engine's threads."""

    # DDL of an integer key the database assigns (resources.id, requests.id), and of text
    # that compares and sorts by code point.
    autoid: str
    text: str

    def __init__(self, location: StateLocation) -> None:
        self.location = location

    @abstractmethod
    def connection(self) -> AbstractContextManager[Connection]:
        """A connection to use for a while: each statement on it commits by itself."""

    def synced(self) -> AbstractContextManager[Connection]:
        """A connection whose commits are on disk when they return, and with them every
        commit before (PostgreSQL's are, with the server's default synchronous_commit)."""
        return self.connection()

    @abstractmethod
    def transaction(self, lock: str) -> AbstractContextManager[Connection]:
        """A transaction holding the lock named `lock`, committed on exit (rolled back on an
        error); whoever takes the same lock meanwhile waits."""

    @abstractmethod
    def current_version(self) -> int | None:
        """The schema version as it is now, read without any lock (None: not known yet)."""

    @abstractmethod
    def schema_version(self, conn: Connection) -> int:
        """The schema version inside a migration's transaction (0: an empty database)."""

    @abstractmethod
    def set_schema_version(self, conn: Connection, version: int) -> None: ...

    def data_version(self) -> int | None:
        """A number that changes whenever another connection commits, or None when the
        database cannot tell cheaply (then nothing read may be kept for later)."""
        return None

    @abstractmethod
    def close(self) -> None: ...


def storage_fault(place: Path, doing: str, cause: str) -> StoreError:
    """The one clear message (exit 1, no traceback) for a store that cannot `doing` (open,
    read, write) its files in `place`: a read-only or missing $CEI_HOME, a full disk, a
    damaged or too long busy SQLite file. (A PostgreSQL server that cannot be reached is
    StateUnavailableError instead: what was done waits for it to come back.)"""
    text = cause.lower()
    hint = (" (is the disk full? Free some space, then run the command again; "
            "`cei terminate RUN` finishes a run this left unfinished)"
            if "full" in text or "i/o" in text else "")
    return StoreError(f"the state store in {place} cannot {doing}: {cause}{hint}")


@contextmanager
def faults(place: Path, doing: str) -> Iterator[None]:
    """An OSError while `doing` something to the store's files in `place` is a StoreError."""
    try:
        yield
    except OSError as exc:
        raise storage_fault(place, doing, f"{exc.strerror or exc}: "
                                          f"{exc.filename or place}") from None


def connect(location: StateLocation) -> Database:
    """A way into the database `location` names (PostgreSQL's driver loads only here)."""
    if location.kind == POSTGRESQL:
        from launchplan.state.postgres import PostgresDatabase

        return PostgresDatabase(location)
    from launchplan.state.sqlite import SQLiteDatabase

    return SQLiteDatabase(location)
