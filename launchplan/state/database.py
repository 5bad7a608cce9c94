"""What the store needs of a database, so that everything but the dialect is shared.

Each backend runs plain SQL with `?` placeholders, returns rows as dicts, and opens write
transactions that hold one writers' lock for the whole database, as SQLite's BEGIN IMMEDIATE
does: read-then-write sequences (a run name's check and insert, an event's next sequence
number, a lock's take-over) are therefore atomic on both backends without retries.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from launchplan.state.location import POSTGRESQL, StateLocation

Row = dict[str, Any]


@dataclass(frozen=True)
class Result:
    """What one statement gave back: its rows (RETURNING or SELECT) and the rows it changed."""

    rows: list[Row] = field(default_factory=list)
    rowcount: int = 0

    def one(self) -> Row | None:
        return self.rows[0] if self.rows else None


class Database(ABC):
    """One connection to the store's database; the store serialises its use across threads."""

    # DDL of an integer key the database assigns (resources.id, requests.id), and of text
    # that compares and sorts by code point.
    autoid: str
    text: str

    def __init__(self, location: StateLocation) -> None:
        self.location = location

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement; StateUnavailableError when the database cannot be reached."""

    @abstractmethod
    def begin(self) -> None:
        """Start a write transaction holding the writers' lock (waits for other writers)."""

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def rollback(self) -> None:
        """Undo the open transaction, if any; never raises for a lost connection."""

    @abstractmethod
    def schema_version(self) -> int:
        """The schema version recorded in the database (0: empty), inside a transaction."""

    @abstractmethod
    def set_schema_version(self, version: int) -> None: ...

    def data_version(self) -> int | None:
        """A number that changes whenever another connection commits, or None when the
        database cannot tell cheaply (then nothing read may be kept for later)."""
        return None

    @abstractmethod
    def close(self) -> None: ...


def connect(location: StateLocation) -> Database:
    """A connection to the database `location` names (PostgreSQL's driver loads only here)."""
    if location.kind == POSTGRESQL:
        from launchplan.state.postgres import PostgresDatabase

        return PostgresDatabase(location)
    from launchplan.state.sqlite import SQLiteDatabase

    return SQLiteDatabase(location)
