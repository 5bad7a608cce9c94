"""The level engine: launch, health and teardown of runs. It emits events and never prints."""

from launchplan.levels.events import Emit, Event
from launchplan.levels.health import NodeHealth, check_run
from launchplan.levels.launch import DEFAULT_PARALLEL, Launcher, LaunchResult
from launchplan.levels.runtime import RunContext
from launchplan.levels.teardown import TerminateResult, Terminator

__all__ = [
    "DEFAULT_PARALLEL",
    "Emit",
    "Event",
    "LaunchResult",
    "Launcher",
    "NodeHealth",
    "RunContext",
    "TerminateResult",
    "Terminator",
    "check_run",
]
