"""The state store: runs, nodes, resources, events, locks and the controller's state in SQLite
under $CEI_HOME."""

from launchplan.state.codec import scrub_secrets, secret_name
from launchplan.state.records import (
    NODE_STATES,
    RESOURCE_GONE_STATES,
    RUN_STATUSES,
    ElasticRecord,
    EventRecord,
    LeaseRecord,
    NodeRecord,
    ProcessRecord,
    RequestRecord,
    ResourceRecord,
    RunRecord,
)
from launchplan.state.store import Store, default_home

__all__ = [
    "NODE_STATES",
    "RESOURCE_GONE_STATES",
    "RUN_STATUSES",
    "ElasticRecord",
    "EventRecord",
    "LeaseRecord",
    "NodeRecord",
    "ProcessRecord",
    "RequestRecord",
    "ResourceRecord",
    "RunRecord",
    "Store",
    "default_home",
    "scrub_secrets",
    "secret_name",
]
