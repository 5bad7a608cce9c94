"""Connections kept open between nodes, as OpenSSH's ControlPersist keeps a master connection.

An existing host often runs a service in several levels (a database in the first, its
application in the second), and `cei terminate` reaches it once per service again. Where the
user's ssh config shares connections to a host (ControlMaster with ControlPersist), a node's
session is given back here when the node is done, and the next node whose SSH target is equal
(address, port, user, keys, pinned host key, route: what a new connection would have been
checked against, and this one was) takes it, without the TCP and SSH handshakes and the login.
Without that setting a node's session is closed at once: every node logs in anew, as `ssh`
would, so that what a boot changed for the login (a group the user joined) holds for the next.

One node at a time: a session is taken by one node and given back when it is done, never shared
by nodes working at once (a server limits the channels of one connection). A session that has
waited its target's `persist` seconds, or has died, is closed instead of handed out, as is
every session when the pool closes. Nothing here knows paramiko: a session only has to say
whether it is `alive`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from launchplan.remote.target import SSHTarget

if TYPE_CHECKING:
    from launchplan.remote.session import Session


class IdleSessions:
    """Open sessions waiting for their next node, by SSH target. At most `limit` wait (the
    command's --parallel: as many as it has nodes at work); past it the oldest is closed.
    Thread-safe."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._clock = clock
        self._waiting: list[tuple[float, Session]] = []  # (until when, session), oldest first
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
        """Keep `session` for the next node on its target for the target's `persist` seconds
        (or close it: not to be kept, pool closed, session dead)."""
        with self._lock:
            stale = self._expire()
            if self._closed or session.target.persist <= 0 or not session.alive:
                stale.append(session)
            else:
                self._waiting.append((self._clock() + session.target.persist, session))
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
        """Take out the sessions that waited long enough (the caller closes them, unlocked)."""
        now = self._clock()
        stale = [s for until, s in self._waiting if until <= now]
        self._waiting = [(until, s) for until, s in self._waiting if until > now]
        return stale


def _close(sessions: list[Session]) -> None:
    for session in sessions:
        session.close()
