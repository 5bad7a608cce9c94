"""Process identity from /proc, and atomic JSON files: shared by the node and its provider.

A PID alone is not an identity (PIDs are recycled), so a node is recognised by its PID, its
start time (field 22 of /proc/PID/stat) and its command line naming the node directory. Stdlib
only: the provider imports this without loading the node's SSH server.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# Every command a node runs carries this variable; after a node is killed hard, its leftover
# commands are found by it (and only by it) in /proc/PID/environ.
NODE_ROOT_ENV = "CEI_NODE_ROOT"
# The node factory's: the PID of the cei process whose requests it serves (see __main__.py).
PARENT_ENV = "CEI_LOCAL_CLOUD_PARENT"


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (after the parenthesised command name), None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw.rsplit(b")", 1)[1].decode("ascii", "replace").split()


def starttime(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (stat field 22), None if gone."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])


def _running(pid: int) -> list[str] | None:
    """_stat_fields of PID if it runs (a zombie, or a process being reaped, does not)."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X", "x"):
        return None
    return fields


def is_alive(pid: int, started: int | None) -> bool:
    """True if PID runs (not a zombie) and is the same process that started at `started`."""
    fields = _running(pid)
    return fields is not None and started is not None and int(fields[19]) == started


def cwd_is(pid: int, directory: Path) -> bool:
    """True if PID's working directory is `directory` (a node lives in its home/)."""
    try:
        return os.readlink(f"/proc/{pid}/cwd") == str(directory)
    except OSError:
        return False


def is_node_process(pid: int | None, started: int | None, node_dir: Path) -> bool:
    """The identity check: alive, same start time, and working in the node's home/."""
    if not pid or pid <= 1:
        return False
    return is_alive(pid, started) and cwd_is(pid, node_dir.resolve() / "home")


def _others() -> list[int]:
    """Every PID but this process's."""
    me = os.getpid()
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit() and int(e.name) != me]


def _environ(pid: int) -> list[bytes]:
    """PID's environment as NAME=VALUE items (empty when gone or not this user's)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return fh.read().split(b"\0")
    except OSError:
        return []


def processes_with_env(name: str, value: str) -> list[int]:
    """PIDs (of this user; others are unreadable) whose environment has NAME=VALUE exactly."""
    wanted = f"{name}={value}".encode()
    return [pid for pid in _others() if wanted in _environ(pid)]


def orphaned_factories(run_dir: Path) -> list[int]:
    """Node factories working in `run_dir` whose cei process is gone: their parent is no longer
    the PID their PARENT_ENV names (the nodes they made work in their own directories)."""
    prefix = f"{PARENT_ENV}=".encode()
    found = []
    for pid in _others():
        if not cwd_is(pid, run_dir):
            continue
        parents = [item[len(prefix):] for item in _environ(pid) if item.startswith(prefix)]
        fields = _running(pid)
        if parents and fields is not None and fields[1].encode() != parents[0]:
            found.append(pid)
    return found


def write_json_atomic(path: Path, data: Any, mode: int = 0o600) -> None:
    """Write JSON so that readers see the old or the new file, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when it is missing or not (yet) valid."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
