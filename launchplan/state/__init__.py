"""The state store: runs, nodes, resources, events and locks in SQLite under $CEI_HOME."""

from launchplan.state.records import (
    NODE_STATES,
    RESOURCE_GONE_STATES,
    RUN_STATUSES,
    EventRecord,
    NodeRecord,
    ProcessRecord,
    ResourceRecord,
    RunRecord,
)
from launchplan.state.store import Store, default_home, scrub_secrets

__all__ = [
    "NODE_STATES",
    "RESOURCE_GONE_STATES",
    "RUN_STATUSES",
    "EventRecord",
    "NodeRecord",
    "ProcessRecord",
    "ResourceRecord",
    "RunRecord",
    "Store",
    "default_home",
    "scrub_secrets",
]
