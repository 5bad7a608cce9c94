"""A process's CPU time as Linux counts it, for benchmarks that time servers they start."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU seconds of process `pid` and all its threads, from /proc; with
    `reaped_children`, also those of the children it has waited for (an sshd's sessions)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    counted = fields[11:15] if reaped_children else fields[11:13]  # utime stime cutime cstime
    return sum(int(field) for field in counted) / os.sysconf("SC_CLK_TCK")
