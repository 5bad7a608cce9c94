"""What `cei watch` shows: plain lines for its events, and the live view's table."""

from __future__ import annotations

import io

from rich.console import Console

from launchplan.cli.output import describe
from launchplan.cli.watchview import WatchView
from launchplan.levels.events import Event


def test_plain_lines_for_the_controller_s_events() -> None:
    decision = Event("elastic.decision", "r", message="cpu average 83.0 > 70: 3 -> 5",
                     data={"service": "engine"})
    assert describe(decision) == "  engine: cpu average 83.0 > 70: 3 -> 5"
    lost = Event("elastic.health", "r", node="engine/1", state="lost",
                 message="engine/1 lost: no heartbeat for 31s; replacing it")
    assert describe(lost) == "  engine/1 lost: no heartbeat for 31s; replacing it"
    request = Event("elastic.request", "r", state="done", message="done", data={"request": 4})
    assert describe(request) == "  request 4 done: done"
    handed = Event("elastic.request", "r", state="handed", message="handed to the controller")
    assert describe(handed) == "  request handed: handed to the controller"
    assert describe(Event("elastic.state", "r", data={"services": []})) is None


def test_live_view_shows_each_service_and_the_recent_events() -> None:
    out = io.StringIO()
    view = WatchView("cei watch r", Console(file=out, width=160, force_terminal=False))
    try:
        view(Event("elastic.state", "r", data={"services": [{
            "service": "engine", "policy": "sensor", "min": 1, "desired": 5, "healthy": 3,
            "max": 8, "launching": 2, "retiring": 0, "sample": 83.04, "settled": False,
            "reason": "cpu average 83.0 > 70: 3 -> 5", "backoff": 8.0, "unhealthy": []}]}))
        view(Event("elastic.action", "r", message="launching engine/3, engine/4",
                   data={"service": "engine"}))
    finally:
        view.close()
    text = out.getvalue()
    assert "engine" in text and "sensor" in text and "83.0" in text
    assert "backing off 8s; cpu average 83.0 > 70: 3 -> 5" in text
    assert "engine: launching engine/3, engine/4" in text
