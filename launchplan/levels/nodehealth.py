"""A node's health as its stored state says, and the checks behind it.

Light on purpose: `cei status --cached` reports from the store alone and imports only this,
not the live checks (health.py) that bring SSH, providers and the plan loader with them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from launchplan.levels import states
from launchplan.state import NodeRecord


@dataclass(frozen=True)
class Check:
    """One check of a node's health, with what it took; `cei status --junit` reports each."""

    check: str  # state (the stored one) | cloud (it still runs) | ready (its program passes)
    passed: bool
    duration: float = 0.0
    message: str = ""
    status: int | None = None  # a program's exit status
    stderr_tail: str = ""
    stdout_tail: str = ""


@dataclass
class NodeHealth:
    node: str
    service: str
    level: str
    state: str
    healthy: bool
    address: str | None
    resource_id: str | None
    outputs: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    checks: list[Check] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)



def stored_health(node: NodeRecord, healthy: bool | None = None, message: str = "",
                  checks: list[Check] | None = None) -> NodeHealth:
    """A node's health as the store has it (healthy: ready), or with `healthy`, `message`
    and the `checks` a live check found."""
    ready = node.state == states.READY
    ok = ready if healthy is None else healthy
    why = "" if ready else node.state + (f": {node.last_error}" if node.last_error else "")
    stored = Check("state", ready, message=why)
    return NodeHealth(
        node=node.node, service=node.service, level=node.level_name, state=node.state,
        healthy=ok, address=node.address, resource_id=node.resource_id,
        outputs=dict(node.outputs), message=message or (node.last_error or ""),
        checks=[stored, *(checks or [])],
    )
