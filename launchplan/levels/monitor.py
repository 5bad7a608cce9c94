"""A node's monitor: what it needs on the node, the command that starts it, its heartbeats.

The monitor is the agent zipapp's `monitor` command (launchplan/agent/monitor.py): it prints a
heartbeat line every period over one SSH channel that stays open. An engine node's monitor
reports its agent; another node's runs its ready program. Program command lines go to files of
mode 0600 in the stage directory, never into the monitor's argv. A node without python3 gets a
shell loop that reports the ready program alone (no sensors).
"""

from __future__ import annotations

import json
import math
import posixpath
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launchplan.levels.agents import PYTHON, PYZ_NAME, agent_zipapp
from launchplan.levels.nodelog import NodeLog
from launchplan.levels.programs import Stage
from launchplan.plan.model import ProgramSpec
from launchplan.remote import shell_command
from launchplan.state import NodeRecord

if TYPE_CHECKING:
    from launchplan.remote import Session

READY_FILE = "monitor-ready.sh"
METRICS_FILE = "monitor-metrics.sh"
OK = "ok"  # the agent answers / the ready program passes (agent/monitor.py)
MAX_LINE = 1 << 20  # a longer heartbeat line is not one of ours


@dataclass(frozen=True)
class Heartbeat:
    """One heartbeat as the controller keeps it; `received` is this machine's monotonic time."""

    received: float
    seq: int
    health: str
    detail: str = ""
    sensors: Mapping[str, float] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    metrics_error: str | None = None
    agent: Mapping[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.health == OK

    def value(self, metric: str) -> float | None:
        """The metric's value in this beat: a metrics program's first, then the sensors'."""
        value = self.metrics.get(metric, self.sensors.get(metric))
        return None if value is None or not math.isfinite(value) else float(value)


def parse_heartbeat(line: bytes, received: float | None = None) -> Heartbeat | None:
    """A heartbeat from one line of monitor output; None for anything else."""
    if len(line) > MAX_LINE:
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("health"), str):
        return None
    agent = doc.get("agent")
    return Heartbeat(
        received=time.monotonic() if received is None else received,
        seq=int(doc.get("seq") or 0),
        health=doc["health"],
        detail=str(doc.get("detail") or ""),
        sensors=_numbers(doc.get("sensors")),
        metrics=_numbers(doc.get("metrics")),
        metrics_error=str(doc["metrics_error"]) if doc.get("metrics_error") else None,
        agent=agent if isinstance(agent, dict) else None,
    )


def _numbers(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def monitor_command(session: Session, node: NodeRecord, run_dir: Path, period: float,
                    metrics_every: float, log: NodeLog) -> str:
    """Put what the node's monitor needs in its stage directory; the line that starts it:
    a heartbeat every `period` seconds, the metrics program run at most every
    `metrics_every` seconds."""
    env = node.programs["env"]
    stage = Stage(session, env["CEI_STAGE"], env, log)
    agent = node.programs.get("agent")
    python = str(agent.get("python") or PYTHON) if agent else PYTHON
    if agent:
        pyz = str(agent["pyz"])
        argv = [python, pyz, "monitor", "--agent", "--home", str(agent["home"])]
    else:
        pyz = posixpath.join(stage.path, PYZ_NAME)
        session.upload(agent_zipapp(run_dir), pyz, 0o700)
        argv = [python, pyz, "monitor"]
    argv += ["--period", f"{period:g}"]
    ready_file = None
    for kind, name in (("ready", READY_FILE), ("metrics", METRICS_FILE)):
        spec = node.programs.get(kind)
        if not spec or (kind == "ready" and agent):
            continue
        program = ProgramSpec.from_dict(spec)
        path = posixpath.join(stage.path, name)
        session.put((stage.command_line(kind, program) + "\n").encode(), path, 0o600)
        argv += [f"--{kind}", path, f"--{kind}-timeout", f"{program.timeout:g}"]
        if kind == "ready":
            ready_file = path
        else:
            argv += ["--metrics-every", f"{metrics_every:g}"]
    fallback = _shell_monitor(ready_file, period)
    return (f"if command -v {shlex.quote(python)} >/dev/null 2>&1; then "
            f"{shell_command(argv)}; else {fallback}; fi")


def _shell_monitor(ready_file: str | None, period: float) -> str:
    """Heartbeats from POSIX sh alone: the ready program's verdict, no sensors."""
    check = (f"if sh {shlex.quote(ready_file)} >/dev/null 2>&1; then h=ok; "
             "else h=failing; fi; " if ready_file else "h=ok; ")
    return ("i=0; while :; do " + check
            + "printf '{\"v\": 1, \"seq\": %d, \"health\": \"%s\"}\\n' \"$i\" \"$h\" || exit 0; "
            + f"i=$((i+1)); sleep {period:g}; done")
