"""Node sensors read from /proc: CPU, memory, network bytes, load average."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

PROC = "/proc"
MIN_CPU_INTERVAL = 0.25


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


class SensorReader:
    """Reads all sensors; CPU percent is measured since an earlier sample.

    `sample()` is called periodically by the agent; `read()` uses the newest stored sample that
    is at least MIN_CPU_INTERVAL old, or takes two samples that far apart when there is none.
    """

    def __init__(self, proc: str = PROC) -> None:
        self.proc = proc
        self._samples: list[CpuSample] = []

    def sample(self) -> None:
        """Store a CPU sample (keeps the last two)."""
        self._samples = [*self._samples[-1:], cpu_sample(self.proc)]

    def read(self) -> dict[str, Any]:
        """Every sensor as one JSON-ready document."""
        now = cpu_sample(self.proc)
        earlier = [s for s in self._samples if now.when - s.when >= MIN_CPU_INTERVAL]
        if earlier:
            before = earlier[-1]
        else:
            before = now
            time.sleep(MIN_CPU_INTERVAL)
            now = cpu_sample(self.proc)
        self._samples = [before, now]
        return {
            "time": time.time(),
            "cpu": {
                "percent": cpu_percent(before, now),
                "count": os.cpu_count() or 1,
                "interval": round(now.when - before.when, 3),
            },
            "memory": memory(self.proc),
            "network": network(self.proc),
            "load": loadavg(self.proc),
        }
