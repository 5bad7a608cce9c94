"""Heartbeats: one thread per watched node reads its monitor over one long-lived SSH channel.

The monitor (levels/monitor.py) pushes a line every period; the controller only reads what the
threads last heard, so a tick costs no SSH round trip. A channel that breaks is opened again
with capped backoff while the node is watched; what it last heard stays until then, so a node
that stays silent becomes lost by the health rules, not by one dropped connection.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from launchplan.elastic.health import Watch
from launchplan.errors import CeiError
from launchplan.levels.monitor import Heartbeat, monitor_command, parse_heartbeat
from launchplan.levels.nodelog import NodeLog, node_log_path
from launchplan.levels.runtime import RunContext
from launchplan.levels.sessions import SessionPool
from launchplan.state import NodeRecord

RETRY_FIRST = 0.5
RETRY_CAP = 10.0
KEEP = 32  # heartbeats kept per node


@dataclass(frozen=True)
class Cadence:
    """How often a node's monitor speaks, and how often it runs its metrics program."""

    heartbeat: float
    metrics: float


@dataclass(frozen=True)
class Heard:
    """A snapshot of what one node's watcher has heard."""

    watch: Watch
    last: Heartbeat | None
    connected: bool


class _Watcher:
    def __init__(self, ctx: RunContext, node: NodeRecord, sessions: SessionPool,
                 cadence: Cadence) -> None:
        self.ctx = ctx
        self.node = node
        self.sessions = sessions
        self.cadence = cadence
        self.since = time.monotonic()
        self.beats: deque[Heartbeat] = deque(maxlen=KEEP)
        self.last_ok: float | None = None
        self.connected = False
        self.error = ""
        self.contacted = threading.Event()  # a first heartbeat came, or a connection failed
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._partial = b""
        self._thread = threading.Thread(target=self._run, name=f"monitor {node.node}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = RETRY_FIRST
        log = NodeLog(node_log_path(self.ctx.run_dir, self.node.node))
        try:
            while not self._stop.is_set():
                try:
                    session = self.sessions.get(self.node)
                    command = monitor_command(session, self.node, self.ctx.run_dir,
                                              self.cadence.heartbeat, self.cadence.metrics, log)
                    self.connected = True
                    result = session.run(command, timeout=None, on_output=self._feed,
                                         cancel=self._stop)
                    self.error = f"the monitor exited with status {result.status}: " \
                                 f"{(result.stderr_tail or result.stdout_tail).strip()[-300:]}"
                    delay = RETRY_FIRST
                except CeiError as exc:
                    if self._stop.is_set():
                        break
                    self.error = str(exc)
                    self.sessions.forget(self.node.node)
                self.connected = False
                self.contacted.set()
                self._stop.wait(delay)
                delay = min(RETRY_CAP, delay * 2)
        finally:
            log.close()

    def _feed(self, stream: str, chunk: bytes) -> None:
        if stream != "stdout":
            return
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            beat = parse_heartbeat(line)
            if beat is None:
                continue
            with self._lock:
                self.beats.append(beat)
                if beat.ok:
                    self.last_ok = beat.received
                self.error = beat.detail
            self.contacted.set()

    def heard(self, gone: str | None) -> Heard:
        with self._lock:
            last = self.beats[-1] if self.beats else None
            watch = Watch(since=self.since, last_seen=last.received if last else None,
                          last_ok=self.last_ok, detail=self.error, gone=gone)
        return Heard(watch, last, self.connected)

    def since_time(self, after: float) -> list[Heartbeat]:
        with self._lock:
            return [b for b in self.beats if b.received > after]

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class HeartbeatCollector:
    """The watchers of the nodes the controller watches."""

    def __init__(self, ctx: RunContext, sessions: SessionPool) -> None:
        self.ctx = ctx
        self.sessions = sessions
        self._watchers: dict[str, _Watcher] = {}

    def sync(self, nodes: Iterable[tuple[NodeRecord, Cadence]]) -> None:
        """Watch exactly these nodes, at their cadence: start new watchers, stop others."""
        wanted = {node.node: (node, cadence) for node, cadence in nodes}
        for name in [n for n in self._watchers if n not in wanted]:
            self._watchers.pop(name).stop()
        for name, (node, cadence) in wanted.items():
            watcher = self._watchers.get(name)
            if watcher is not None and watcher.node.address != node.address:
                watcher.stop()
                watcher = None
            if watcher is None:
                self._watchers[name] = _Watcher(self.ctx, node, self.sessions, cadence)

    def watched(self, node: str) -> bool:
        return node in self._watchers

    def heard(self, node: str, gone: str | None = None) -> Heard:
        return self._watchers[node].heard(gone)

    def beats_after(self, node: str, after: float) -> list[Heartbeat]:
        watcher = self._watchers.get(node)
        return watcher.since_time(after) if watcher else []

    def wait_first(self, timeout: float) -> None:
        """Wait (at most `timeout` s) until every watcher has heard something or failed once."""
        deadline = time.monotonic() + timeout
        for watcher in list(self._watchers.values()):
            watcher.contacted.wait(max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float = 5.0) -> None:
        """Stop every watcher. The sessions close first: that ends every monitor's channel at
        once (stopping each monitor's process group politely costs seconds), and a monitor
        on the node exits at its next write."""
        watchers = list(self._watchers.values())
        self._watchers.clear()
        self.sessions.close()
        for watcher in watchers:
            watcher.stop()
        deadline = time.monotonic() + timeout
        for watcher in watchers:
            watcher.join(max(0.0, deadline - time.monotonic()))
