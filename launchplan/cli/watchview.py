"""The live terminal view of `cei watch`: each elastic service's counts, and what happened."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from launchplan.cli.output import describe
from launchplan.levels.events import ELASTIC_STATE, Event

RECENT = 12


class WatchView:
    """A rich Live view fed by the controller's events (from its worker threads too)."""

    def __init__(self, title: str, console: Console | None = None) -> None:
        self.title = title
        self.console = console or Console()
        self._services: list[dict[str, Any]] = []
        self._recent: deque[str] = deque(maxlen=RECENT)
        self._ticks = 0
        self._lock = threading.Lock()
        self._live = Live(self, console=self.console, refresh_per_second=4, transient=False)
        self._live.start()

    def __call__(self, event: Event) -> None:
        with self._lock:
            if event.kind == ELASTIC_STATE:
                self._services = list(event.data.get("services") or [])
                self._ticks += 1
                return
            line = describe(event)
            if line:
                stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
                self._recent.append(f"{stamp} {line.strip()}")

    def __rich__(self) -> RenderableType:
        with self._lock:
            table = Table(title=f"{self.title}  [dim]tick {self._ticks}[/dim]", expand=False)
            for column in ("service", "policy", "min", "desired", "healthy", "max",
                           "launching", "retiring", "sample", "last decision"):
                table.add_column(column, overflow="fold")
            for svc in self._services:
                healthy = Text(str(svc.get("healthy")),
                               style="green" if svc.get("settled") else "yellow")
                sample = svc.get("sample")
                table.add_row(str(svc.get("service")), str(svc.get("policy")),
                              str(svc.get("min")), str(svc.get("desired")), healthy,
                              str(svc.get("max")), str(svc.get("launching")),
                              str(svc.get("retiring")),
                              "" if sample is None else f"{sample:.1f}",
                              _reason(svc))
            parts: list[RenderableType] = [table]
            if not self._services:
                parts.append(Text("no elastic services yet (waiting for the first tick, or "
                                  "the plan has none)", style="dim"))
            parts.extend(Text(line, style="dim") for line in self._recent)
            return Group(*parts)

    def close(self) -> None:
        self._live.stop()


def _reason(svc: dict[str, Any]) -> str:
    reason = str(svc.get("reason") or "")
    if svc.get("backoff") is not None:
        reason = f"backing off {svc['backoff']:.0f}s; {reason}"
    if svc.get("unhealthy"):
        reason = f"unhealthy: {', '.join(svc['unhealthy'])}; {reason}"
    return reason[:90]
