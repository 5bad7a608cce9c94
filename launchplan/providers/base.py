"""The provider interface: create, describe, destroy, find, and what a provider can do.

Providers know no plan and no SSH. Each cloud's quirks stay inside its own module; what the
engine, the dispatcher and the CLI must know about a cloud they learn from its Capabilities,
never from its driver's name, so that a new cloud is one new module.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from launchplan.errors import CeiError, Interrupted, StepTimeout

# Node states a provider reports, normalised across clouds.
PENDING = "pending"
RUNNING = "running"
STOPPED = "stopped"
TERMINATED = "terminated"  # gone, or going away
ERROR = "error"  # the cloud (or the local node's cloud-init) reports a failure
UNKNOWN = "unknown"


@dataclass(frozen=True)
class NodeRequest:
    """What the engine asks a provider to create."""

    run: str
    service: str
    node: str  # "db/1"
    token: str  # idempotency token: the same token never makes a second node
    options: Mapping[str, Any]  # CloudSpec.options (image, size, credentials, ...)
    userdata: bytes | None = None  # complete user-data as cloud-init reads it
    tags: Mapping[str, str] = field(default_factory=dict)  # includes cei:run/service/node


@dataclass(frozen=True)
class NodeInfo:
    resource_id: str
    state: str
    address: str | None = None  # the address cei should SSH to
    port: int = 22
    hostname: str | None = None
    private_address: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None  # provider's message when state is ERROR


@dataclass(frozen=True)
class Capabilities:
    """What a provider does, so that callers ask instead of comparing driver names."""

    # It creates (and destroys) machines; False for hosts that already exist, which cei never
    # creates, describes, destroys or sweeps, and whose host key must already be known.
    creates_machines: bool = True
    # cei waits for cloud-init once SSH answers (the local cloud applies user-data first).
    runs_cloud_init: bool = True
    # The provider picks each node's SSH port (NodeInfo.port); otherwise the plan's applies.
    port_per_node: bool = False
    # It can hand a node user-data at creation (cei's pinned host key travels in it).
    takes_userdata: bool = True
    # Largest user-data the cloud accepts, in bytes (None: no limit); cei gzips past it.
    userdata_limit: int | None = None
    # Nodes carry cei's tags, so find() works by tag (otherwise by cei's node-name prefix).
    tags: bool = True
    # The cloud itself makes a create with a known token idempotent (otherwise the provider
    # looks for the token's node before creating).
    client_token: bool = True
    # console_output() can read the node's console (host_key_policy: console).
    console: bool = True
    # Nodes know no key of the user: when the plan names no ssh_key, cei makes one per run.
    generated_login_key: bool = False
    # Nodes run on this machine and share its files and its Python.
    on_this_machine: bool = False
    # Seconds between describe() calls while waiting for a node to run.
    poll_interval: float = 1.0
    # create_many(), destroy_many() and states() make one cloud call for many nodes, so the
    # engine hands them a whole level at once; otherwise it creates and destroys each node in
    # its own thread, which lets one node boot while the next is still being made.
    batches: bool = False


@dataclass(frozen=True)
class Problem:
    """One thing `check()` found wrong, by the option it concerns ("image",
    ("create_args", "networks"), ...) so the caller can point at the plan line."""

    option: tuple[str, ...]
    message: str


class Provider(ABC):
    """One cloud (or the local cloud, or existing hosts) behind a uniform verb set."""

    driver: ClassVar[str]
    CAPABILITIES: ClassVar[Capabilities] = Capabilities()

    def __init__(self, options: Mapping[str, Any], run_dir: Path) -> None:
        self.options = options
        self.run_dir = run_dir  # $CEI_HOME/runs/RUN: where a provider may keep local files

    @property
    def capabilities(self) -> Capabilities:
        """What this provider can do; a driver family whose members differ refines it."""
        return self.CAPABILITIES

    def check(self) -> list[Problem]:
        """Read-only: what the cloud profile names (image, size, networks, key pairs,
        credentials) that the cloud does not have or refuses. Nothing is created."""
        return []

    @abstractmethod
    def create(self, request: NodeRequest) -> NodeInfo:
        """Start creating a node; returns as soon as the cloud has given it an id."""

    def create_many(
        self,
        requests: Sequence[NodeRequest],
        created: Callable[[NodeRequest, NodeInfo], None],
        parallel: int = 1,
        cancel: threading.Event | None = None,
    ) -> list[NodeInfo | CeiError]:
        """Create several nodes, with at most `parallel` cloud calls at once: in the order of
        `requests`, each node's info or the error that stopped it (Interrupted for those not
        asked for once `cancel` is set). `created` is called (from any thread) with each
        node's info as soon as the cloud has given its id, before that thread's next call, so
        the caller records every id at once. This default creates one node at a time;
        drivers whose cloud makes many nodes in one call override it (and declare
        `batches`)."""
        results: list[NodeInfo | CeiError] = []
        for request in requests:
            try:
                if cancel is not None and cancel.is_set():
                    raise Interrupted(f"interrupted before creating node {request.node}")
                info = self.create(request)
            except CeiError as exc:
                results.append(exc)
                continue
            created(request, info)
            results.append(info)
        return results

    @abstractmethod
    def describe(self, resource_id: str) -> NodeInfo:
        """Current state and addresses; TERMINATED for a node that no longer exists."""

    def states(self, resource_ids: Sequence[str]) -> dict[str, str]:
        """The state of several nodes at once (a health check needs no addresses); drivers
        with a cheaper batch call override this."""
        return {rid: self.describe(rid).state for rid in resource_ids}

    @abstractmethod
    def destroy(self, resource_id: str) -> None:
        """Destroy the node. Idempotent: destroying a destroyed node succeeds."""

    def destroy_many(self, resource_ids: Sequence[str]) -> dict[str, CeiError]:
        """Destroy several nodes, each as destroy() would; the errors by id (empty: all are
        gone). This default destroys one at a time; drivers with a batch call override it."""
        errors: dict[str, CeiError] = {}
        for resource_id in resource_ids:
            try:
                self.destroy(resource_id)
            except CeiError as exc:
                errors[resource_id] = exc
        return errors

    @abstractmethod
    def find(self, run: str) -> list[NodeInfo]:
        """Every live node of the run, found by its `cei:run` tag (not by stored ids)."""

    def console_output(self, resource_id: str) -> str | None:
        """The node's console text (cloud-init prints host key fingerprints there), None where
        the cloud has no console or it is empty so far (host_key_policy: console)."""
        return None

    def wait_running(
        self,
        resource_id: str,
        timeout: float,
        cancel: threading.Event | None = None,
        interval: float | None = None,
    ) -> NodeInfo:
        """Wait until the node runs, describing it every `interval` seconds (default: the
        provider's poll interval). Drivers with native waiters override this."""
        interval = interval or self.capabilities.poll_interval
        deadline = time.monotonic() + timeout
        while True:
            info = self.describe(resource_id)
            if info.state in (RUNNING, ERROR, TERMINATED):
                return info
            if time.monotonic() >= deadline:
                raise StepTimeout(
                    f"node {resource_id} was still {info.state} after {timeout:g}s "
                    "(waiting for the provider to report it running)"
                )
            if cancel is not None and cancel.wait(interval):
                return info
            if cancel is None:
                time.sleep(interval)
