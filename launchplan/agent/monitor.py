"""`cei-agent.pyz monitor`: one heartbeat line of JSON per period, for cei's controller.

cei runs it over one long-lived SSH channel per node and reads the lines as they come, so the
controller costs no SSH session per node per tick. A heartbeat carries the node's health (its
agent answers, or its ready program passes), its sensors, the metrics its metrics program
prints, and, on an engine node, what the agent runs. The monitor ends when its reader goes
away (a write fails) or after `count` beats.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, TextIO

from .sensors import SensorReader
from .server import AgentUnavailable, request

OK = "ok"
FAILING = "failing"  # the ready program did not pass
AGENT_DOWN = "agent-down"
TAIL = 400
# What a heartbeat says of each supervised process (the dispatcher's record needs no more).
PROCESS_KEYS = ("name", "state", "pid", "exit_code", "signal", "restarts", "error")


def run_program(path: str, timeout: float) -> tuple[int, str]:
    """Run a program file (a shell line cei wrote) in its own session; (status, output tail).

    Past `timeout` its whole process group is killed and the status is 124, as timeout(1) says.
    """
    proc = subprocess.Popen(["/bin/sh", path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return 124, f"timed out after {timeout:g}s"
    return proc.returncode, out.decode("utf-8", "replace")


def metrics_of(output: str) -> dict[str, float]:
    """The numbers of the one JSON object a metrics program printed; ValueError otherwise."""
    doc = json.loads(output)
    if not isinstance(doc, dict):
        raise ValueError(f"a metrics program prints one JSON object, not {type(doc).__name__}")
    return {str(k): float(v) for k, v in doc.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Monitor:
    """Builds heartbeats; network rates come from the counters of the previous beat."""

    def __init__(self, home: str | None, ready: str | None, ready_timeout: float,
                 metrics: str | None, metrics_timeout: float, metrics_every: float = 0.0
                 ) -> None:
        self.home = home
        self.ready = ready
        self.ready_timeout = ready_timeout
        self.metrics = metrics
        self.metrics_timeout = metrics_timeout
        self.metrics_every = metrics_every  # run the program at most this often; reuse between
        self._measured: tuple[float, dict[str, Any]] | None = None
        self.reader = SensorReader()
        self.reader.sample()
        self._net: tuple[float, int, int] | None = None
        self.seq = 0

    def beat(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"v": 1, "seq": self.seq, "time": time.time()}
        self.seq += 1
        doc.update(self._health())
        doc["sensors"] = self._sensors()
        if self.metrics:
            doc.update(self._metrics())
        return doc

    def _metrics(self) -> dict[str, Any]:
        """{"metrics": ...} or {"metrics_error": ...}, from a run at most metrics_every old."""
        now = time.monotonic()
        if self._measured is not None and now - self._measured[0] < self.metrics_every:
            return self._measured[1]
        assert self.metrics is not None
        status, output = run_program(self.metrics, self.metrics_timeout)
        try:
            if status != 0:
                raise ValueError(f"exited with status {status}: {output[-TAIL:].strip()}")
            measured: dict[str, Any] = {"metrics": metrics_of(output)}
        except ValueError as exc:
            measured = {"metrics_error": str(exc)[:TAIL]}
        self._measured = (now, measured)
        return measured

    def _health(self) -> dict[str, Any]:
        if self.home:
            try:
                listing = request(self.home, "list", timeout=10.0)
            except (AgentUnavailable, OSError, ValueError) as exc:
                return {"health": AGENT_DOWN, "detail": str(exc)[:TAIL]}
            processes = [{k: p.get(k) for k in PROCESS_KEYS}
                         for p in listing.get("processes", [])]
            return {"health": OK, "agent": {"slots": listing.get("slots"),
                                            "processes": processes}}
        if self.ready:
            status, output = run_program(self.ready, self.ready_timeout)
            if status != 0:
                return {"health": FAILING,
                        "detail": f"ready program exited with status {status}: "
                                  f"{output[-TAIL:].strip()}"}
        return {"health": OK}

    def _sensors(self) -> dict[str, float]:
        read = self.reader.read()
        now = time.monotonic()
        rx, tx = int(read["network"]["rx_bytes"]), int(read["network"]["tx_bytes"])
        rates = (0.0, 0.0)
        if self._net is not None and now > self._net[0]:
            elapsed = now - self._net[0]
            rates = (max(0, rx - self._net[1]) / elapsed, max(0, tx - self._net[2]) / elapsed)
        self._net = (now, rx, tx)
        return {"cpu": float(read["cpu"]["percent"]),
                "memory": float(read["memory"]["used_percent"]),
                "net_in": round(rates[0], 1), "net_out": round(rates[1], 1),
                "load": float(read["load"][0])}


def run_monitor(monitor: Monitor, period: float, count: int | None = None,
                out: TextIO | None = None) -> int:
    """Write a heartbeat every `period` seconds until the reader goes away (or `count`)."""
    stream = out or sys.stdout
    next_at = time.monotonic()
    while count is None or monitor.seq < count:
        try:
            stream.write(json.dumps(monitor.beat(), sort_keys=True) + "\n")
            stream.flush()
        except (BrokenPipeError, OSError):
            return 0
        next_at = max(next_at + period, time.monotonic())
        time.sleep(max(0.0, next_at - time.monotonic()))
    return 0
