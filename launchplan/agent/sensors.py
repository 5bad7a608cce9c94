"""Node sensors read from /proc: CPU, memory, network bytes, load average.

On a local-cloud node (many nodes share this machine), CPU and memory are the node's own:
those of the processes whose environment carries the node's root, the way a VM's /proc would
count only its own. Network and load stay the machine's.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

PROC = "/proc"
MIN_CPU_INTERVAL = 0.25
# Set on every process of a local-cloud node (launchplan.providers.localnode.procinfo; the
# agent runs on nodes with the standard library alone, so it names the variable itself).
NODE_ROOT_ENV = "CEI_NODE_ROOT"


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU jiffies at a moment: busy and total over all CPUs."""

    when: float
    busy: int
    total: int


def cpu_sample(proc: str = PROC) -> CpuSample:
    """Read the aggregate `cpu` line of /proc/stat (guest time is already in user/nice)."""
    with open(os.path.join(proc, "stat")) as fh:
        fields = fh.readline().split()
    values = [int(v) for v in fields[1:9]]
    values += [0] * (8 - len(values))
    user, nice, system, idle, iowait, irq, softirq, steal = values
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return CpuSample(time.monotonic(), total - idle - iowait, total)


def cpu_percent(before: CpuSample, after: CpuSample) -> float:
    """Busy share of CPU time between two samples, 0..100."""
    total = after.total - before.total
    if total <= 0:
        return 0.0
    return round(max(0.0, min(100.0, 100.0 * (after.busy - before.busy) / total)), 2)


def memory(proc: str = PROC) -> dict[str, Any]:
    """MemTotal and MemAvailable in bytes, and the used percentage."""
    info: dict[str, int] = {}
    with open(os.path.join(proc, "meminfo")) as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                info[key] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    total = info.get("MemTotal", 0)
    available = info.get("MemAvailable", info.get("MemFree", 0))
    used = 100.0 * (total - available) / total if total else 0.0
    return {"total_bytes": total, "available_bytes": available, "used_percent": round(used, 2)}


def network(proc: str = PROC) -> dict[str, Any]:
    """Bytes received and sent, summed over every interface except loopback."""
    rx = tx = 0
    names = []
    with open(os.path.join(proc, "net", "dev")) as fh:
        for line in fh.readlines()[2:]:
            name, _, data = line.partition(":")
            name = name.strip()
            fields = data.split()
            if name == "lo" or len(fields) < 9:
                continue
            names.append(name)
            rx += int(fields[0])
            tx += int(fields[8])
    return {"rx_bytes": rx, "tx_bytes": tx, "interfaces": sorted(names)}


def loadavg(proc: str = PROC) -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    with open(os.path.join(proc, "loadavg")) as fh:
        return [float(v) for v in fh.read().split()[:3]]


class NodeScope:
    """The processes of one local-cloud node: CPU time used and memory held by them alone.

    Every process's environment is read once (it never changes); a process seen for the first
    time counts from zero only if it started after the previous sample, so CPU time spent
    before the node was first measured is not charged to the first interval.
    """

    def __init__(self, root: str, proc: str = PROC) -> None:
        self.proc = proc
        self._marker = f"{NODE_ROOT_ENV}={root}".encode()
        self._members: dict[int, tuple[int, bool]] = {}  # pid -> (start time, member?)
        self._ticks: dict[tuple[int, int], int] = {}  # (pid, start time) -> CPU ticks seen
        self._busy = 0
        self._last_uptime: float | None = None
        self.hz = os.sysconf("SC_CLK_TCK")

    def _member(self, pid: int, started: int) -> bool:
        known = self._members.get(pid)
        if known is None or known[0] != started:
            try:
                with open(os.path.join(self.proc, str(pid), "environ"), "rb") as fh:
                    member = self._marker in fh.read().split(b"\0")
            except OSError:
                member = False
            known = self._members[pid] = (started, member)
        return known[1]

    def sample(self) -> tuple[CpuSample, int]:
        """(cumulative CPU sample of the node's processes, their resident bytes)."""
        with open(os.path.join(self.proc, "uptime")) as fh:
            uptime = float(fh.read().split()[0])
        page = os.sysconf("SC_PAGE_SIZE")
        ticks: dict[tuple[int, int], int] = {}
        resident = 0
        seen = set()
        for entry in os.scandir(self.proc):
            if not entry.name.isdigit():
                continue
            try:
                with open(os.path.join(entry.path, "stat")) as fh:
                    fields = fh.read().rpartition(")")[2].split()
            except OSError:
                continue
            if len(fields) < 22 or fields[0] in ("Z", "X"):
                continue
            pid, started = int(entry.name), int(fields[19])
            seen.add(pid)
            if not self._member(pid, started):
                continue
            ticks[(pid, started)] = int(fields[11]) + int(fields[12])  # utime + stime
            resident += int(fields[21]) * page
        since = None if self._last_uptime is None else self._last_uptime * self.hz
        for key, used in ticks.items():
            before = self._ticks.get(key)
            if before is not None:
                self._busy += max(0, used - before)
            elif since is not None and key[1] >= since:
                self._busy += used
        self._ticks = ticks
        self._members = {pid: v for pid, v in self._members.items() if pid in seen}
        self._last_uptime = uptime
        total = int(uptime * self.hz) * (os.cpu_count() or 1)
        return CpuSample(time.monotonic(), self._busy, total), resident


class SensorReader:
    """Reads all sensors; CPU percent is measured since an earlier sample.

    `sample()` is called periodically by the agent; `read()` uses the newest stored sample that
    is at least MIN_CPU_INTERVAL old, or takes two samples that far apart when there is none.
    """

    def __init__(self, proc: str = PROC, node_root: str | None = None) -> None:
        self.proc = proc
        root = os.environ.get(NODE_ROOT_ENV) if node_root is None else node_root
        self.scope = NodeScope(root, proc) if root else None
        self._samples: list[CpuSample] = []
        self._resident = 0

    def _cpu(self) -> CpuSample:
        if self.scope is None:
            return cpu_sample(self.proc)
        sample, self._resident = self.scope.sample()
        return sample

    def sample(self) -> None:
        """Store a CPU sample (keeps the last two)."""
        self._samples = [*self._samples[-1:], self._cpu()]

    def read(self) -> dict[str, Any]:
        """Every sensor as one JSON-ready document."""
        now = self._cpu()
        earlier = [s for s in self._samples if now.when - s.when >= MIN_CPU_INTERVAL]
        if earlier:
            before = earlier[-1]
        else:
            before = now
            time.sleep(MIN_CPU_INTERVAL)
            now = self._cpu()
        self._samples = [before, now]
        mem = memory(self.proc)
        if self.scope is not None and mem["total_bytes"]:
            mem = {"total_bytes": mem["total_bytes"], "used_bytes": self._resident,
                   "used_percent": round(100.0 * self._resident / mem["total_bytes"], 2)}
        return {
            "time": time.time(),
            "scope": "node" if self.scope is not None else "machine",
            "cpu": {
                "percent": cpu_percent(before, now),
                "count": os.cpu_count() or 1,
                "interval": round(now.when - before.when, 3),
            },
            "memory": mem,
            "network": network(self.proc),
            "load": loadavg(self.proc),
        }
