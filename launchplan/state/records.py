"""The rows of the state store as plain dataclasses, with their JSON columns already decoded.

Records are frozen: change a node through `Store.update_node` (or `dataclasses.replace` and
`Store.save_node`) so that what the caller holds never silently diverges from the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Run statuses the engine moves a run through.
RUN_LAUNCHING = "launching"
RUN_READY = "ready"
RUN_FAILED = "failed"
RUN_INTERRUPTED = "interrupted"
RUN_TERMINATING = "terminating"
RUN_TERMINATED = "terminated"
RUN_TEARDOWN_INCOMPLETE = "teardown-incomplete"
RUN_STATUSES = frozenset(
    {
        RUN_LAUNCHING,
        RUN_READY,
        RUN_FAILED,
        RUN_INTERRUPTED,
        RUN_TERMINATING,
        RUN_TERMINATED,
        RUN_TEARDOWN_INCOMPLETE,
    }
)

# Node states of the engine's node state machine.
NODE_PENDING = "pending"
NODE_CREATING = "creating"
NODE_BOOTING = "booting"
NODE_CONTEXTUALIZING = "contextualizing"
NODE_READY = "ready"
NODE_FAILED = "failed"
NODE_RETIRING = "retiring"  # chosen by a scale-down: drained, then terminated
NODE_TERMINATING = "terminating"
NODE_TERMINATED = "terminated"
NODE_STATES = frozenset(
    {
        NODE_PENDING,
        NODE_CREATING,
        NODE_BOOTING,
        NODE_CONTEXTUALIZING,
        NODE_READY,
        NODE_FAILED,
        NODE_RETIRING,
        NODE_TERMINATING,
        NODE_TERMINATED,
    }
)
# States of a node on its way to ready: only the process launching it may change it.
NODE_LAUNCHING_STATES = frozenset(
    {NODE_PENDING, NODE_CREATING, NODE_BOOTING, NODE_CONTEXTUALIZING}
)

# Resource states. A resource starts as an intent (committed before the provider is called),
# becomes "created" once its id is known, then takes the provider's states (running, ...).
RESOURCE_INTENT = "intent"
RESOURCE_CREATED = "created"
RESOURCE_TERMINATED = "terminated"
# The provider confirmed that nothing exists for this intent (create failed before any id).
RESOURCE_NOT_CREATED = "not-created"
# States in which a resource no longer exists in the cloud; any other state counts as live.
RESOURCE_GONE_STATES = frozenset({RESOURCE_TERMINATED, RESOURCE_NOT_CREATED})


@dataclass(frozen=True)
class RunRecord:
    """One launch of a plan under a run name."""

    name: str
    plan: str
    plan_path: str
    status: str
    created: str
    updated: str
    # how it was launched: {"overrides": {--var values, secrets scrubbed}, "vars_files": [...],
    # "plan_sha256": digest of the plan file}, so later commands render new nodes the same way
    launch: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeRecord:
    """What cei knows about one node of a run: where it is, how to reach it, how far it got."""

    run: str
    node: str
    service: str
    index: int
    level: int
    level_name: str
    driver: str
    cloud: dict[str, Any] = field(default_factory=dict)
    state: str = NODE_PENDING
    resource_id: str | None = None
    token: str | None = None
    address: str | None = None
    port: int | None = None
    hostname: str | None = None
    ssh_user: str | None = None
    ssh_key: str | None = None
    host_key: str | None = None
    host_key_fingerprint: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    programs: dict[str, Any] = field(default_factory=dict)
    last_error: str | None = None
    updated: str = ""


@dataclass(frozen=True)
class ResourceRecord:
    """A cloud resource the run created (or meant to create); kept after teardown for audit."""

    id: int
    run: str
    node: str
    driver: str
    cloud: dict[str, Any]
    token: str
    resource_id: str | None
    state: str
    created: str
    updated: str


# Process states the dispatcher records (the agent's states plus "waiting": no node yet).
PROCESS_WAITING = "waiting"
PROCESS_PENDING = "pending"
PROCESS_RUNNING = "running"
PROCESS_EXITED = "exited"
PROCESS_FAILED = "failed"
PROCESS_TERMINATED = "terminated"
PROCESS_STATES = frozenset(
    {
        PROCESS_WAITING,
        PROCESS_PENDING,
        PROCESS_RUNNING,
        PROCESS_EXITED,
        PROCESS_FAILED,
        PROCESS_TERMINATED,
    }
)
# States in which a process holds (or waits for) a slot on an engine node.
PROCESS_ACTIVE_STATES = frozenset({PROCESS_WAITING, PROCESS_PENDING, PROCESS_RUNNING})


@dataclass(frozen=True)
class ProcessRecord:
    """A process the dispatcher placed (or is to place) on an engine node's agent.

    `round` goes up each time the process is rescheduled onto another node after its node was
    lost; `restarts` is what the agent reports for the current placement.
    """

    run: str
    name: str
    definition: dict[str, Any]
    engine: str
    node: str | None = None
    state: str = PROCESS_WAITING
    pid: int | None = None
    exit_code: int | None = None
    restarts: int = 0
    round: int = 0
    last_error: str | None = None
    created: str = ""
    updated: str = ""


@dataclass(frozen=True)
class EventRecord:
    """One entry of a run's append-only history; `seq` increases by one per event of a run."""

    run: str
    seq: int
    time: str
    kind: str
    node: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class ElasticRecord:
    """The desired state of one elastic service of a run, and what its controller last did.

    `spec` is the service's ElasticSpec as a dict; `decision` the last decision ({"time",
    "desired", "reason", "inputs"}); `last_action` (epoch seconds) starts the cooldown;
    `failures` counts launch failures in a row and `backoff_until` (epoch seconds) holds the
    next launch off after them.
    """

    run: str
    service: str
    level: int
    spec: dict[str, Any]
    min: int
    desired: int
    max: int
    decision: dict[str, Any] = field(default_factory=dict)
    last_action: float | None = None
    failures: int = 0
    backoff_until: float | None = None
    updated: str = ""


# Requests that `cei scale` and `cei repair` hand to a running controller.
REQUEST_PENDING = "pending"
REQUEST_DONE = "done"
REQUEST_FAILED = "failed"
REQUEST_STATES = frozenset({REQUEST_PENDING, REQUEST_DONE, REQUEST_FAILED})


@dataclass(frozen=True)
class RequestRecord:
    run: str
    id: int
    kind: str  # scale | repair
    target: str | None  # the service or node it is about
    args: dict[str, Any]
    state: str = REQUEST_PENDING
    result: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    updated: str = ""


@dataclass(frozen=True)
class LeaseRecord:
    """The controller lease of a run: one `cei watch` (or direct scale/repair) acts at a time."""

    run: str
    pid: int
    starttime: int | None
    host: str
    acquired: str
    expires: float  # epoch seconds; another host may take the lease over after it


@dataclass(frozen=True)
class LockRecord:
    """A run's lock: the process changing the run. `expires` (epoch seconds) moves on while
    the holder lives; None on a lock an older cei took, which never expires by itself."""

    run: str
    pid: int
    starttime: int | None
    host: str
    acquired: str
    expires: float | None


@dataclass(frozen=True)
class RunKeyRecord:
    """A key pair cei made for a run: the public half, and the private half sealed under
    CEI_STATE_KEY (None: it was not set, and the private half stayed on `host`)."""

    run: str
    name: str
    public_key: str
    sealed_key: str | None
    host: str
    created: str
