"""Commands a node runs (user-data commands and SSH exec), each in its own process group.

The node keeps the group ids so that a closed channel, or the node's own stop, can end a
command and everything it started: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
TAIL_BYTES = 600  # stderr kept for an error message


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class ProcessGroups:
    """The process groups of a node's commands, while any of their processes live."""

    def __init__(self) -> None:
        self._pgids: set[int] = set()

    def add(self, pgid: int) -> None:
        self.prune()
        self._pgids.add(pgid)

    def prune(self) -> None:
        """Forget groups that have no process left (their ids may be reused)."""
        self._pgids = {pgid for pgid in self._pgids if _group_exists(pgid)}

    async def terminate(self, pgids: Sequence[int], grace: float = KILL_GRACE) -> None:
        """SIGTERM the groups, SIGKILL whatever is left after `grace` seconds."""
        live = [pgid for pgid in pgids if pgid in self._pgids and _group_exists(pgid)]
        for pgid in live:
            _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while live and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            live = [pgid for pgid in live if _group_exists(pgid)]
        for pgid in live:
            _signal_group(pgid, signal.SIGKILL)
        self.prune()

    async def terminate_all(self, grace: float = KILL_GRACE) -> None:
        await self.terminate(sorted(self._pgids), grace)


def describe_exit(label: str, status: int, stderr_tail: str) -> str:
    """`runcmd[1] exited 3: <stderr tail>`, the message a failed command leaves in status."""
    what = f"killed by signal {-status}" if status < 0 else f"exited {status}"
    tail = stderr_tail.strip()
    return f"{label} {what}: {tail}" if tail else f"{label} {what}"


async def run_logged(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    groups: ProcessGroups,
) -> tuple[int, str]:
    """Run argv with output appended to the console (fd 1 and 2); return (status, stderr tail).

    OSError (a program that does not exist, say) propagates to the caller.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=1,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(cwd),
        env=dict(env),
        start_new_session=True,
    )
    groups.add(proc.pid)
    tail = b""
    assert proc.stderr is not None
    while True:
        chunk = await proc.stderr.read(65536)
        if not chunk:
            break
        os.write(2, chunk)
        tail = (tail + chunk)[-TAIL_BYTES:]
    status = await proc.wait()
    return status, tail.decode("utf-8", "replace")
