"""Who holds a lock or a lease: a process named by host, pid and start time.

A pid alone is not an identity (pids are recycled), so a holder on this host is alive only if
its pid runs with the start time recorded when it took the lock. A holder on another host
cannot be checked from here: locks from there are respected, leases until they expire.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any


def process_starttime(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22), None if gone.

    Together with the pid it identifies a process across pid reuse. A zombie counts as gone.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    after_comm = text.rpartition(")")[2].split()
    # after_comm[0] is field 3 (state); field 22 (starttime) is therefore index 19.
    if len(after_comm) < 20 or after_comm[0] in ("Z", "X"):
        return None
    return int(after_comm[19])


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_alive(pid: int, starttime: int | None) -> bool:
    """True if the process that took a lock still runs (same pid and same start time)."""
    if os.path.exists("/proc/self/stat"):
        current = process_starttime(pid)
        return current is not None and (starttime is None or current == starttime)
    return _process_alive(pid)


@dataclass(frozen=True)
class Holder:
    """A process as a lock or lease row records it."""

    host: str
    pid: int
    starttime: int | None

    @classmethod
    def me(cls) -> Holder:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_starttime(pid))

    @classmethod
    def of(cls, row: Any) -> Holder:
        """The holder a lock or lease row names (any row with host, pid, starttime)."""
        return cls(str(row["host"]), int(row["pid"]), row["starttime"])

    def here(self) -> bool:
        return self.host == socket.gethostname()

    def alive(self) -> bool:
        """Whether it still runs; only answerable for a holder on this host."""
        return holder_alive(self.pid, self.starttime)

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host!r}"
