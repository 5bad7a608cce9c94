"""Running the real `cei` command against a private $CEI_HOME, and finding node processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

PLANS = Path(__file__).parent / "plans"
REPO = Path(__file__).resolve().parents[2]

# Runs the test twice: runs recorded in SQLite, then in PostgreSQL (fixture store_backend).
both_stores = pytest.mark.parametrize("store_backend", ["sqlite", "postgresql"], indirect=True)


def cei(home: Path, *args: str, timeout: float = 180, check: int | None = None,
        env: dict[str, str] | None = None,
        netns: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `cei ARGS` (inside network namespace `netns` when given) with $CEI_HOME at home."""
    env = {**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(REPO), **(env or {})}
    prefix = ["ip", "netns", "exec", netns] if netns else []
    proc = subprocess.run([*prefix, sys.executable, "-m", "launchplan", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, (
            f"cei {' '.join(args)} exited {proc.returncode}, expected {check}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@contextmanager
def cei_running(home: Path, *args: str, stdout: int = subprocess.PIPE
                ) -> Iterator[subprocess.Popen[str]]:
    """`cei ARGS` started in the background with $CEI_HOME at home (for a test to signal it),
    killed and reaped on leaving if it is still running."""
    env = {**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "launchplan", *args], env=env,
                            stdout=stdout, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def cei_json(home: Path, *args: str, check: int = 0) -> Any:
    return json.loads(cei(home, *args, "--json", check=check).stdout)


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def node_processes(home: Path) -> list[int]:
    """Pids of every process working in, started from, or pointing into $CEI_HOME/runs.

    Local nodes work in their node directory; whatever they start inherits that directory (or
    the stage directory below it) and the node's CEI_NODE_ROOT.
    """
    marker = str(home.resolve() / "runs")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if cwd.startswith(marker) or marker.encode() in cmdline or marker.encode() in environ:
            found.append(int(entry))
    return found


def wait_for(predicate: Callable[[], Any], timeout: float, what: str = "condition",
             interval: float = 0.05) -> Any:
    """Poll until `predicate` returns something truthy (and return it); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")
