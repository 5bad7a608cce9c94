"""One open SSH session per node, shared by everyone who talks to it in one command.

A controller's monitors, its dispatcher and its retirements all reach the same node; with a
pool they share one connection instead of opening one each. paramiko runs several channels
on one connection at once, so sharing needs no more locking than the pool's own.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from launchplan.levels.runtime import RunContext
from launchplan.state import NodeRecord

if TYPE_CHECKING:
    from launchplan.remote import Session


class SessionPool:
    """Sessions by node name; `forget` drops (and closes) one that failed."""

    def __init__(self, ctx: RunContext, ssh_wait: float) -> None:
        self.ctx = ctx
        self.ssh_wait = ssh_wait
        self._sessions: dict[str, Session] = {}
        self._opening: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, node: NodeRecord) -> Session:
        """The node's open session (opened now, within `ssh_wait` seconds, if there is none).

        Callers asking for the same node at once wait for one connection, not one each."""
        with self._lock:
            opening = self._opening.setdefault(node.node, threading.Lock())
        with opening:
            with self._lock:
                session = self._sessions.get(node.node)
            if session is not None and session.target.host == node.address \
                    and session.alive:
                return session
            opened = self.ctx.open_session(node, retry_for=self.ssh_wait)
            with self._lock:
                self._sessions[node.node] = opened
        if session is not None:
            session.close()
        return opened

    def forget(self, node: str) -> None:
        with self._lock:
            session = self._sessions.pop(node, None)
        if session is not None:
            session.close()

    def close(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.close()
