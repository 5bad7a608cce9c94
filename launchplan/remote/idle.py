"""Connections kept open between nodes, for the next node on the same existing host.

An existing host often runs a service in several levels (a database in the first, its
application in the second), and `cei terminate` reaches it once per service again. Without this
each node's work ended by closing its connection, and the next node on that host paid the TCP
and SSH handshakes and the login again: several round trips, and a key exchange's CPU on both
ends. A session given back here goes to the next node whose SSH target is equal (address, port,
user, keys, pinned host key, route): a new connection would have been checked against exactly
that, and this one was.

One node at a time: a session is taken by one node and given back when it is done, never shared
by nodes working at once (a server limits the channels of one connection). A session idle for
longer than `idle_for` seconds is closed instead of handed out (firewalls drop quiet
connections, and the host may have rebooted meanwhile), as is every session when the pool
closes. Nothing here knows paramiko: a session only has to say whether it is `alive`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from launchplan.remote.target import SSHTarget

if TYPE_CHECKING:
    from launchplan.remote.session import Session

IDLE_FOR = 30.0  # seconds a session may wait for its next node


class IdleSessions:
    """Open sessions waiting for their next node, by SSH target. At most `limit` wait (the
    command's --parallel: as many as it has nodes at work); past it the oldest is closed.
    Thread-safe."""

    def __init__(self, limit: int, idle_for: float = IDLE_FOR,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._idle_for = idle_for
        self._limit = limit
        self._clock = clock
        self._waiting: list[tuple[float, Session]] = []  # oldest first
        self._lock = threading.Lock()
        self._closed = False

    def take(self, target: SSHTarget) -> Session | None:
        """A live session to `target`, now the caller's alone; None when there is none."""
        with self._lock:
            stale = self._expire()
            found = None
            for index in range(len(self._waiting) - 1, -1, -1):  # the most recent first
                session = self._waiting[index][1]
                if session.target == target:
                    del self._waiting[index]
                    if session.alive:
                        found = session
                        break
                    stale.append(session)
        _close(stale)
        return found

    def give(self, session: Session) -> None:
        """Keep `session` for the next node on its target (or close it: pool closed, or the
        session dead)."""
        with self._lock:
            stale = self._expire()
            if self._closed or not session.alive:
                stale.append(session)
            else:
                self._waiting.append((self._clock(), session))
                while len(self._waiting) > self._limit:
                    stale.append(self._waiting.pop(0)[1])
        _close(stale)

    def close(self) -> None:
        """Close every waiting session; sessions given back later are closed at once."""
        with self._lock:
            self._closed = True
            stale = [session for _, session in self._waiting]
            self._waiting.clear()
        _close(stale)

    def _expire(self) -> list[Session]:
        """Take out the sessions idle for too long (the caller closes them, unlocked)."""
        oldest = self._clock() - self._idle_for
        kept = [(since, s) for since, s in self._waiting if since >= oldest]
        stale = [s for since, s in self._waiting if since < oldest]
        self._waiting = kept
        return stale


def _close(sessions: list[Session]) -> None:
    for session in sessions:
        session.close()
