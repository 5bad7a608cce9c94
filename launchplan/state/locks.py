"""Run locks: one process changes a run at a time, whichever machine it runs on.

A lock is a row naming its holder (host, pid, start time) with an expiry that the holder
renews from a background thread while it holds the lock. A lock held on this host is live
while its holder runs (told apart from a reused pid by the start time); one held on another
host is live until it expires, so the lock of a machine that died is taken over a minute
later, and `cei unlock` clears one at once after confirmation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from launchplan.errors import RunLockedError, StateUnavailableError
from launchplan.state.codec import now
from launchplan.state.database import Connection, Row
from launchplan.state.holders import Holder
from launchplan.state.location import StateLocation
from launchplan.state.records import LockRecord

LOCK_TTL = 60.0  # seconds a lock from another host stays live without being renewed
RENEW_EVERY = LOCK_TTL / 4
LOCK_POLL = 0.1  # seconds between attempts when a lock is waited for

# Locks held by this process, per (database, run): nested locked() calls only count.
_held_locks: dict[tuple[str, str], int] = {}
_held_guard = threading.Lock()


def holder_live(holder: Holder, expires: float | None, me: Holder) -> bool:
    """Whether a lock or lease row still binds `me`: its holder is me, runs on this host, or
    is on another host and has not let it expire (None: a lock that never expires)."""
    if holder == me:
        return True
    if holder.here():
        return holder.alive()
    return expires is None or expires > time.time()


def _lock_record(row: Row) -> LockRecord:
    return LockRecord(run=row["run"], pid=row["pid"], starttime=row["starttime"],
                      host=row["host"], acquired=row["acquired"], expires=row["expires"])


class RunLocks:
    """The run-lock half of Store (a mixin: it uses the store's transactions)."""

    _me: Holder
    location: StateLocation

    if TYPE_CHECKING:

        def _write(self, lock: str) -> AbstractContextManager[Connection]: ...

        def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]: ...

        def _run(self, work: Callable[[Connection], Any]) -> Any: ...

        def _durable(self, work: Callable[[Connection], Any]) -> Any: ...

    def _init_locks(self) -> None:
        self._renewed: set[str] = set()
        self._renew_guard = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._renew_stop = threading.Event()

    @contextmanager
    def locked(self, name: str, wait: float = 0.0) -> Iterator[None]:
        """Hold the run's lock for the with-block; nested use within this process is fine.

        RunLockedError if another live process holds it (after trying for `wait` seconds);
        a lock left by a dead process on this host, or expired on another, is taken over.
        """
        key = (self.location.key, name)
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

    def lock_record(self, name: str) -> LockRecord | None:
        """The run's lock row as it is, live or not (what `cei unlock` shows)."""
        rows = self._read("SELECT * FROM locks WHERE run = ?", (name,))
        return _lock_record(rows[0]) if rows else None

    def lock_holder(self, name: str) -> Holder | None:
        """Who holds the run's lock, if its holder is live (see holder_live)."""
        record = self.lock_record(name)
        if record is None:
            return None
        holder = Holder(record.host, record.pid, record.starttime)
        return holder if holder_live(holder, record.expires, self._me) else None

    def break_lock(self, record: LockRecord) -> bool:
        """Delete the lock `record` shows, if it is still that one (not since taken again)."""
        deleted: int = self._run(lambda db: db.execute(
            "DELETE FROM locks WHERE run = ? AND pid = ? AND host = ? AND acquired = ?",
            (record.run, record.pid, record.host, record.acquired)).rowcount)
        return deleted == 1

    def _refuse_if_live(self, name: str, record: LockRecord) -> None:
        holder = Holder(record.host, record.pid, record.starttime)
        if holder == self._me or not holder_live(holder, record.expires, self._me):
            return
        if holder.here():
            raise RunLockedError(
                f"run {name!r} is being changed by another cei process (pid {holder.pid}, "
                f"since {record.acquired}); wait for it or stop it")
        until = ("it never expires by itself" if record.expires is None
                 else f"it expires in {record.expires - time.time():.0f}s unless renewed")
        raise RunLockedError(
            f"run {name!r} is locked by {holder.describe()} since {record.acquired} ({until});"
            f" if that process is gone, `cei unlock {name}` clears it")

    def _acquire(self, name: str, wait: float) -> None:
        deadline = time.monotonic() + wait
        me = self._me
        while True:
            try:
                with self._write(name) as db:
                    row = db.execute("SELECT * FROM locks WHERE run = ?", (name,)).one()
                    if row is not None:
                        self._refuse_if_live(name, _lock_record(row))
                    db.execute("DELETE FROM locks WHERE run = ?", (name,))
                    db.execute(
                        "INSERT INTO locks (run, pid, starttime, host, acquired, expires) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (name, me.pid, me.starttime, me.host, now(), time.time() + LOCK_TTL))
                break
            except RunLockedError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(LOCK_POLL)
        with self._renew_guard:
            self._renewed.add(name)
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._renew_locks, daemon=True,
                                                 name="cei-lock-renewer")
                self._renewer.start()

    def _release(self, name: str) -> None:
        me = self._me
        with self._renew_guard:
            self._renewed.discard(name)
        self._durable(lambda db: db.execute(
            "DELETE FROM locks WHERE run = ? AND pid = ? AND host = ?", (name, me.pid, me.host)))

    def _renew_locks(self) -> None:
        """Push the expiry of every lock this store holds forward, until it holds none."""
        me = self._me
        while not self._renew_stop.wait(RENEW_EVERY):
            with self._renew_guard:
                names = sorted(self._renewed)
                if not names:
                    self._renewer = None
                    return
            for name in names:
                try:
                    with self._write(name) as db:  # not while another takes it over
                        db.execute(
                            "UPDATE locks SET expires = ? WHERE run = ? AND pid = ? AND host = ?",
                            (time.time() + LOCK_TTL, name, me.pid, me.host))
                except StateUnavailableError:
                    break  # tried again at the next round; the lock lives for LOCK_TTL
        with self._renew_guard:
            self._renewer = None

    def _stop_renewing(self) -> None:
        self._renew_stop.set()
