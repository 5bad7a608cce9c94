"""Events: the only way the engine tells the world what happens.

The same stream drives the live view, the NDJSON output and the tests; the engine persists
each one in the run's history before handing it on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1

# kinds
RUN_STARTED = "run.started"
RUN_FINISHED = "run.finished"
LEVEL_STARTED = "level.started"
LEVEL_FINISHED = "level.finished"
NODE_STATE = "node.state"
NODE_PROGRAM = "node.program"  # a boot/ready/terminate program finished (status, tails)
RESOURCE = "resource"  # a cloud resource was created, found or destroyed
WARNING = "warning"
# the controller (cei watch / scale / repair)
ELASTIC_DECISION = "elastic.decision"  # a policy changed a desired count (inputs, reason)
ELASTIC_HEALTH = "elastic.health"  # a node was judged lost, failed or unhealthy
ELASTIC_ACTION = "elastic.action"  # nodes launched, retired, replaced, rolled back
ELASTIC_BACKOFF = "elastic.backoff"  # launches failed: the next waits this long
ELASTIC_REQUEST = "elastic.request"  # a scale, repair or stop request taken up or finished
ELASTIC_STATE = "elastic.state"  # each tick's summary per service (not kept in the history)


@dataclass(frozen=True)
class Event:
    kind: str
    run: str
    node: str | None = None
    state: str | None = None
    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"v": SCHEMA_VERSION, "event": self.kind, "run": self.run,
                               "time": round(self.time, 3)}
        if self.node is not None:
            doc["node"] = self.node
        if self.state is not None:
            doc["state"] = self.state
        if self.message:
            doc["message"] = self.message
        if self.data:
            doc["data"] = dict(self.data)
        return doc


Emit = Callable[[Event], None]


def discard(_event: Event) -> None:
    """An emitter for callers that do not watch."""
