"""Hosts that already exist: nothing is created or destroyed, cei only reaches them over SSH.

The engine passes the host in the request's options under the key `host` (a service's `host:`,
one entry per node when it is a list); the host itself is the resource id. SSH settings
(ssh_user, ssh_key, ssh_port) are the engine's business, not the provider's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from launchplan.errors import UsageError
from launchplan.providers.base import RUNNING, Capabilities, NodeInfo, NodeRequest, Provider

HOST_OPTION = "host"


class StaticProvider(Provider):
    """Existing hosts: create reports the host as running, destroy leaves it alone."""

    driver: ClassVar[str] = "static"
    # An existing host was booted long ago: it takes no user-data, has no console cei can
    # read, and its cloud-init (if any) is not cei's to wait for.
    CAPABILITIES: ClassVar[Capabilities] = Capabilities(
        creates_machines=False,
        runs_cloud_init=False,
        takes_userdata=False,
        tags=False,
        client_token=False,
        console=False,
    )

    def create(self, request: NodeRequest) -> NodeInfo:
        """The node is the host named in options["host"]; nothing happens to it."""
        host = str(request.options.get(HOST_OPTION) or "").strip()
        if not host:
            raise UsageError(
                f"static: node {request.node} has no host (set `host:` on service "
                f"{request.service})"
            )
        if request.userdata:
            raise UsageError(
                f"static: node {request.node} is an existing host ({host}) and cannot "
                "receive user-data; remove `userdata:` from service "
                f"{request.service} or give it a cloud"
            )
        return self._info(host, dict(request.tags))

    def describe(self, resource_id: str) -> NodeInfo:
        return self._info(resource_id, {})

    def destroy(self, resource_id: str) -> None:
        """Never touches the host: cei did not create it."""

    def find(self, run: str) -> list[NodeInfo]:
        """Nothing is ever created, so nothing is ever left to sweep."""
        return []

    @staticmethod
    def _info(host: str, tags: Mapping[str, str]) -> NodeInfo:
        return NodeInfo(resource_id=host, state=RUNNING, address=host, hostname=host, tags=tags)
