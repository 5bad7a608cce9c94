"""The embedded transport: queues in one SQLite database (WAL mode) in the bus directory.

Why SQLite and not a broker of our own on a Unix socket: there is nothing to start, supervise or
find. Every process on the machine that opens the directory shares the queues, a process may
die at any instruction without losing or repeating anything, and a commit in WAL mode with
synchronous=NORMAL writes no fsync, so a batch costs a few tens of microseconds. The kombu
filesystem transport it replaces wrote one file per message and served 2.5k msg/s.

Layout of DIR (mode 0700): `queues.db` (and its -wal and -shm files, mode 0600) holds one table,
one row per published message (a JSON list of documents; `publish_many` makes one row of many);
`holders/` holds one lock file per consumer.

Order: a row's id is one more than the largest id in the table when it is written, so rows of
one publisher are read in the order it wrote them, and a row given back keeps its place.

Claims and redelivery: a consumer claims rows by writing its holder id into them; `commit`
deletes the rows of a batch and inserts the rows it publishes in one transaction (exactly once).
A consumer holds an exclusive flock on `holders/ID` for as long as it lives, and the kernel
drops that lock when it dies however it dies. Before it claims rows of a queue, a consumer
checks the holders of that queue's claimed rows and gives back the rows of those whose lock it
can take, so they are delivered again before anything newer; a consumer waiting on an empty
queue checks once a second. The lock file is locked before it is renamed into `holders/`, so a
live holder's file is never seen unlocked.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from launchplan.demo.messaging import Batch, Bus
from launchplan.errors import MessagingError

DATABASE = "queues.db"
HOLDERS = "holders"
RECOVER_EVERY = 1.0  # an idle consumer looks for the claims of dead ones this often
POLL_FIRST, POLL_MAX = 0.0005, 0.05  # an empty queue is polled again after this, doubling

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    docs INTEGER NOT NULL,
    body TEXT NOT NULL,
    holder TEXT
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, id) WHERE holder IS NULL;
CREATE INDEX IF NOT EXISTS messages_held ON messages (queue, holder) WHERE holder IS NOT NULL;
"""


def _open_database(folder: Path) -> sqlite3.Connection:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # messages may carry secrets
    (folder / HOLDERS).mkdir(mode=0o700, exist_ok=True)
    path = folder / DATABASE
    # SQLite gives the -wal and -shm files the mode of the database file
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    return db


class SqliteBus(Bus):
    """A Bus on the SQLite queue database in `folder`."""

    def __init__(self, url: str, folder: Path, prefetch: int = 64) -> None:
        super().__init__(url)
        self._folder = folder
        try:
            self._db = _open_database(folder)
        except (OSError, sqlite3.Error) as exc:
            raise MessagingError(f"cannot open the embedded transport in {folder}: {exc}") from exc
        self._prefetch = prefetch
        self._holder: str | None = None
        self._lock_fd: int | None = None
        self._recovered = 0.0
        self._version: int | None = None  # PRAGMA data_version when a poll last found nothing
        self._inbox: dict[str, deque[tuple[int | None, deque[Any]]]] = {}

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def declare(self, *queues: str) -> None:
        """Nothing to do: every queue keeps what is published to it."""

    def purge(self, queue: str) -> int:
        inbox = self._inbox.pop(queue, deque())
        unread = sum(len(docs) for _, docs in inbox)
        mine = [row for row, _ in inbox if row is not None]
        with self._transaction() as db:
            waiting = db.execute("DELETE FROM messages WHERE queue = ? AND holder IS NULL "
                                 "RETURNING docs", (queue,)).fetchall()
            db.executemany("DELETE FROM messages WHERE id = ?", [(row,) for row in mine])
        return unread + sum(docs for (docs,) in waiting)

    def publish_many(self, queue: str, documents: Sequence[Any]) -> None:
        if documents:
            self._version = None  # our own commits leave data_version as it is
            self._db.execute("INSERT INTO messages (queue, docs, body) VALUES (?, ?, ?)",
                             (queue, len(documents), json.dumps(list(documents))))

    def _holder_id(self) -> str:
        """This consumer's id, its lock file locked and in place (made at the first claim)."""
        if self._holder is None:
            holder = uuid.uuid4().hex
            holders = self._folder / HOLDERS
            staging = holders / f".{holder}"
            fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(staging, holders / holder)
            self._holder, self._lock_fd = holder, fd
            for stale in holders.iterdir():
                if not stale.name.startswith(".") and stale.name != holder:
                    self._release_if_dead(stale.name)
        return self._holder

    def _claim(self, queue: str) -> list[tuple[int, list[Any]]]:
        """Rows of `queue` that no one holds, oldest first, now held here."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version and time.monotonic() - self._recovered < RECOVER_EVERY:
            return []  # nothing was committed since the last look found the queue empty
        self._recover(queue)
        holder = self._holder_id()
        with self._transaction() as db:
            rows = db.execute(
                "UPDATE messages SET holder = ? WHERE id IN (SELECT id FROM messages "
                "WHERE queue = ? AND holder IS NULL ORDER BY id LIMIT ?) RETURNING id, body",
                (holder, queue, self._prefetch)).fetchall()
        if not rows:
            self._version = version
            return []
        rows.sort()
        return [(row, json.loads(body)) for row, body in rows]

    def _recover(self, queue: str) -> None:
        """Give back the rows of `queue` held by consumers that died, before any newer row
        of it is claimed, so that they keep their place."""
        self._recovered = time.monotonic()
        holders = [h for (h,) in self._db.execute(
            "SELECT DISTINCT holder FROM messages WHERE queue = ? AND holder IS NOT NULL",
            (queue,)) if h != self._holder]
        for holder in holders:
            self._release_if_dead(holder)

    def _release_if_dead(self, holder: str) -> None:
        """If `holder` is dead, give back its rows and remove its lock file."""
        lock = self._folder / HOLDERS / holder
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            fd = None  # its lock is gone: another consumer found it dead first
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # alive
            finally:
                os.close(fd)
        with self._transaction() as db:
            db.execute("UPDATE messages SET holder = NULL WHERE holder = ?", (holder,))
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()

    def _poll(self, queue: str, timeout: float) -> list[tuple[int, list[Any]]]:
        """Claimed rows of `queue`, polling for at most `timeout` seconds; [] if none came."""
        deadline = time.monotonic() + max(0.0, timeout)
        pause = POLL_FIRST
        while True:
            rows = self._claim(queue)
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                return rows
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, POLL_MAX)

    def get(self, queue: str, timeout: float) -> Any | None:
        inbox = self._inbox.setdefault(queue, deque())
        while not inbox or not inbox[0][1]:
            if inbox:
                inbox.popleft()
                continue
            inbox.extend((row, deque(docs)) for row, docs in self._poll(queue, timeout))
            if not inbox:
                return None
        row, docs = inbox[0]
        if row is not None:
            # handed out means acknowledged: the row goes before its first document does
            self._db.execute("DELETE FROM messages WHERE id = ?", (row,))
            inbox[0] = (None, docs)
        return docs.popleft()

    def take(self, queue: str, timeout: float) -> Batch | None:
        rows = self._poll(queue, timeout)
        if not rows:
            return None
        return Batch(queue, [doc for _, docs in rows for doc in docs], [row for row, _ in rows])

    def commit(self, batch: Batch, queue: str, documents: Sequence[Any]) -> None:
        rows: list[int] = batch.handle
        with self._transaction() as db:
            deleted = db.executemany("DELETE FROM messages WHERE id = ? AND holder = ?",
                                     [(row, self._holder) for row in rows]).rowcount
            if deleted != len(rows):
                raise MessagingError(f"{len(rows) - deleted} messages of a batch from "
                                     f"{batch.queue} were given to another consumer")
            self.publish_many(queue, documents)

    def close(self) -> None:
        """Give back what this consumer holds, then let go of its lock and the database."""
        if self._holder is not None:
            with contextlib.suppress(sqlite3.Error), self._transaction() as db:
                db.execute("UPDATE messages SET holder = NULL WHERE holder = ?",
                           (self._holder,))
            with contextlib.suppress(FileNotFoundError):
                (self._folder / HOLDERS / self._holder).unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._inbox.clear()
        self._db.close()
