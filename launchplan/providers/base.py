"""The provider interface: create, describe, destroy, find. Nothing else.

Providers know no plan and no SSH. Each cloud's quirks stay inside its own module.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from launchplan.errors import StepTimeout

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


class Provider(ABC):
    """One cloud (or the local cloud, or existing hosts) behind a uniform verb set."""

    driver: ClassVar[str]
    # Largest user-data the cloud accepts, in bytes (None: no limit). cei gzips past it.
    userdata_limit: ClassVar[int | None] = None
    # Whether cei should wait for cloud-init on the node (the local cloud applies user-data
    # before its SSH server answers, so waiting there is pointless).
    runs_cloud_init: ClassVar[bool] = True

    def __init__(self, options: Mapping[str, Any], run_dir: Path) -> None:
        self.options = options
        self.run_dir = run_dir  # $CEI_HOME/runs/RUN: where a provider may keep local files

    @abstractmethod
    def create(self, request: NodeRequest) -> NodeInfo:
        """Start creating a node; returns as soon as the cloud has given it an id."""

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
        interval: float = 1.0,
    ) -> NodeInfo:
        """Wait until the node runs. Drivers with native waiters override this."""
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
