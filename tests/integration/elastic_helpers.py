"""Running `cei watch` beside a test, and reading what it did from the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchplan.providers.localnode.procinfo import read_json
from launchplan.state import NodeRecord, Store
from tests.integration.cli_helpers import REPO

STOP_WAIT = 60.0


@dataclass
class Watch:
    proc: subprocess.Popen[bytes]
    log: Path

    def lines(self) -> list[dict[str, Any]]:
        """The NDJSON the watch wrote so far (a torn last line is skipped)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def start_watch(home: Path, run: str, *args: str) -> Watch:
    log = home.parent / f"watch-{run}-{len(list(home.parent.glob('watch-*')))}.ndjson"
    env = {**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(REPO)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "launchplan", "watch", run, "--interval", "0.5", "--json",
             *args], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    return Watch(proc, log)


def stop_watch(watch: Watch) -> int:
    """Ctrl-C the watch (it finishes the step in flight) and wait; SIGKILL if it hangs."""
    if watch.proc.poll() is None:
        watch.proc.send_signal(signal.SIGINT)
        try:
            watch.proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            watch.proc.kill()
            watch.proc.wait(STOP_WAIT)
    return watch.proc.returncode


@contextmanager
def watching(home: Path, run: str, *args: str) -> Iterator[Watch]:
    watch = start_watch(home, run, *args)
    try:
        yield watch
    finally:
        stop_watch(watch)


def nodes(home: Path, run: str, service: str | None = None) -> list[NodeRecord]:
    with Store(home) as store:
        return [n for n in store.nodes(run) if service is None or n.service == service]


def ready(home: Path, run: str, service: str) -> list[str]:
    return sorted(n.node for n in nodes(home, run, service) if n.state == "ready")


def desired(home: Path, run: str, service: str) -> int:
    with Store(home) as store:
        record = store.find_elastic(run, service)
    assert record is not None, f"{service} of {run} is not elastic"
    return record.desired


def history(home: Path, run: str, kind: str) -> list[dict[str, Any]]:
    """The run's stored events of `kind`: data with message and state folded in."""
    with Store(home) as store:
        return [{**e.data, "node": e.node} for e in store.events(run) if e.kind == kind]


def local_node_pid(home: Path, run: str, node: str) -> int:
    status = read_json(home / "runs" / run / "nodes" / node.replace("/", "-") / "status.json")
    assert status is not None and status.get("pid"), f"no status for local node {node}"
    return int(status["pid"])


def stage_file(home: Path, run: str, node: str, service: str, name: str) -> Path:
    """A file in a local node's stage directory (its home is under the run directory)."""
    slug = node.replace("/", "-")
    index = node.split("/")[1]
    return home / "runs" / run / "nodes" / slug / "home" / ".cei" / run / service / index / name
