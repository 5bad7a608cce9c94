"""The live terminal view of a launch or teardown: levels and nodes as they change."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from launchplan.levels.events import Event

_STYLE = {
    "pending": "dim",
    "creating": "cyan",
    "booting": "cyan",
    "contextualizing": "blue",
    "ready": "green",
    "failed": "bold red",
    "terminating": "yellow",
    "terminated": "dim green",
}


@dataclass
class _Row:
    level: str
    node: str
    state: str = "pending"
    since: float = 0.0
    resource: str = ""
    note: str = ""


class LiveView:
    """A rich Live table fed by engine events (called from worker threads)."""

    def __init__(self, title: str, console: Console | None = None) -> None:
        self.title = title
        self.console = console or Console()
        self._rows: dict[str, _Row] = {}
        self._levels: dict[str, str] = {}
        self._notes: list[str] = []
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._live = Live(self, console=self.console, refresh_per_second=8, transient=False)
        self._live.start()

    def __call__(self, event: Event) -> None:
        with self._lock:
            data = event.data
            if event.kind == "level.started":
                self._levels[str(data.get("level"))] = "running"
            elif event.kind == "level.finished":
                self._levels[str(data.get("level"))] = str(event.state or data.get("state"))
            elif event.kind == "node.state" and event.node:
                row = self._rows.get(event.node)
                if row is None:
                    row = self._rows[event.node] = _Row(str(data.get("level", "")), event.node)
                row.state = event.state or row.state
                row.since = time.monotonic()
                if event.message:
                    row.note = event.message.splitlines()[0][:80]
            elif event.kind == "resource" and event.node in self._rows:
                self._rows[event.node].resource = str(data.get("resource_id", ""))
            elif event.kind == "warning":
                self._notes.append(f"{event.node + ': ' if event.node else ''}{event.message}")

    def __rich__(self) -> RenderableType:
        with self._lock:
            elapsed = time.monotonic() - self._started
            table = Table(title=f"{self.title}  [dim]{elapsed:5.1f}s[/dim]", expand=False)
            for column in ("level", "node", "state", "at", "resource", "note"):
                table.add_column(column, justify="right" if column == "at" else "left")
            for row in self._rows.values():
                table.add_row(row.level, row.node, Text(row.state, style=_STYLE.get(row.state, "")),
                              f"{row.since - self._started:.1f}s", row.resource, row.note)
            counts: dict[str, int] = {}
            for row in self._rows.values():
                counts[row.state] = counts.get(row.state, 0) + 1
            summary = Text("  ".join(f"{state}: {n}" for state, n in sorted(counts.items())),
                           style="dim")
            parts: list[RenderableType] = [table, summary]
            parts.extend(Text(f"warning: {note}", style="yellow") for note in self._notes[-5:])
            return Group(*parts)

    def close(self) -> None:
        self._live.stop()
