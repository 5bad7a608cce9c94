"""The provider contract: the same behaviours asked of every provider, against real parts.

local (real node processes), ec2 (boto3 on the moto server over HTTP), libcloud with its EC2
driver on the same server, libcloud's Dummy driver (a cloud with no user-data, metadata or
client token), and static (existing hosts). What differs between them is what their
capabilities declare, and the tests ask those, never a driver's name. A new driver joins by
adding a Backend here (docs/clouds.md, "Writing a driver").
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from libcloud.common.exceptions import RateLimitReachedError
from libcloud.compute.base import Node, NodeImage, NodeSize
from libcloud.compute.drivers.dummy import DummyNodeDriver

from launchplan.errors import CeiError, Interrupted
from launchplan.providers import Capabilities, Provider, get_provider
from launchplan.providers.base import (
    ERROR,
    PENDING,
    RUNNING,
    TERMINATED,
    NodeInfo,
    NodeRequest,
)
from launchplan.providers.libcloud import LibcloudProvider
from launchplan.providers.retry import Backoff
from launchplan.providers.tags import node_tags
from tests.integration.cli_helpers import node_processes
from tests.integration.cloud_emulator import EC2Emulator

pytestmark = pytest.mark.integration

WAIT = 60.0  # seconds any provider may take to report a node running
USERDATA = b"#cloud-config\nruncmd:\n  - [echo, contract]\n"


class CloudDummyDriver(DummyNodeDriver):
    """libcloud's Dummy driver as one small cloud: its nodes are shared by every driver
    instance (as a cloud's are by every client), keep the names they are given and get ids
    never reused; `pending_throttles` makes the next calls fail as rate-limited."""

    name = "cei-contract-dummy"
    nodes: ClassVar[list[Node]] = []
    ids: ClassVar[Iterator[int]] = itertools.count(100)
    pending_throttles: ClassVar[int] = 0
    throttled: ClassVar[int] = 0

    def __init__(self, creds: Any) -> None:
        super().__init__(creds)
        self.nl = CloudDummyDriver.nodes

    @classmethod
    def _throttle(cls) -> None:
        if cls.pending_throttles > 0:
            cls.pending_throttles -= 1
            cls.throttled += 1
            raise RateLimitReachedError()

    def list_nodes(self) -> list[Node]:
        self._throttle()
        return list(self.nl)

    def create_node(self, name: str, size: NodeSize, image: NodeImage) -> Node:
        self._throttle()
        node = super().create_node(name, size, image)
        node.id, node.name = str(next(self.ids)), name
        return node

    def destroy_node(self, node: Node) -> bool:
        self._throttle()
        return bool(super().destroy_node(node))


@dataclass
class Backend:
    """One provider under the contract, and the hooks its test double offers."""

    name: str
    make: Callable[[str], Provider]  # a fresh provider (as after a crash) for a run
    options: dict[str, Any]
    missing_id: str  # an id of the right shape that never existed
    throttle: Callable[[int], None] | None = None
    throttled: Callable[[], int] | None = None

    def request(self, run: str, node: str, token: str, userdata: bytes | None = None
                ) -> NodeRequest:
        service = node.split("/")[0]
        return NodeRequest(run=run, service=service, node=node, token=token,
                           options=self.options, userdata=userdata,
                           tags=node_tags(run, service, node))


def _local(tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    home = tmp_path / "home"

    def cleanup() -> None:
        for pid in node_processes(home):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    request.addfinalizer(cleanup)
    return Backend("local", lambda run: get_provider("local", {}, home / "runs" / run), {},
                   "r1/db/99")


def _ec2(request: pytest.FixtureRequest, driver: str) -> Backend:
    emulator: EC2Emulator = request.getfixturevalue("ec2_emulator")
    image = request.getfixturevalue("ec2_image")
    if driver == "ec2":
        options = emulator.ec2_options(image=image, size="t3.micro")
    else:
        options = emulator.libcloud_options(image=image, size="t2.micro")
        request.getfixturevalue("monkeypatch").setattr(
            LibcloudProvider, "backoff", Backoff(attempts=6, base=0.05, cap=0.2))
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return Backend(driver, lambda run: get_provider(driver, options, tmp_path), options,
                   "i-0123456789abcdef0", emulator.throttle, lambda: emulator.throttled)


def _dummy(request: pytest.FixtureRequest) -> Backend:
    from libcloud.compute import providers

    registry: Any = providers  # its stubs want Provider enums; a new name is a plain string
    registry.set_driver(CloudDummyDriver.name, __name__, CloudDummyDriver.__name__)
    CloudDummyDriver.nodes.clear()
    CloudDummyDriver.pending_throttles = CloudDummyDriver.throttled = 0
    request.addfinalizer(lambda: registry.DRIVERS.pop(CloudDummyDriver.name, None))
    request.getfixturevalue("monkeypatch").setattr(
        LibcloudProvider, "backoff", Backoff(attempts=6, base=0.05, cap=0.2))
    options = {"provider": CloudDummyDriver.name, "credentials": {"key": "0"},
               "image": "1", "size": "1"}
    tmp_path: Path = request.getfixturevalue("tmp_path")

    def throttle(count: int) -> None:
        CloudDummyDriver.pending_throttles = count

    return Backend("libcloud-dummy", lambda run: get_provider("libcloud", options, tmp_path),
                   options, "99999", throttle, lambda: CloudDummyDriver.throttled)


def _static(tmp_path: Path) -> Backend:
    options = {"host": "192.0.2.10"}
    return Backend("static", lambda run: get_provider("static", options, tmp_path), options,
                   "192.0.2.99")


BACKENDS = ("local", "ec2", "libcloud-ec2", "libcloud-dummy", "static")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    name = request.param
    if name == "local":
        return _local(tmp_path, request)
    if name in ("ec2", "libcloud-ec2"):
        return _ec2(request, "ec2" if name == "ec2" else "libcloud")
    if name == "libcloud-dummy":
        return _dummy(request)
    return _static(tmp_path)


@pytest.fixture(params=("ec2", "libcloud-ec2", "libcloud-dummy"))
def remote_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The backends whose cloud is an API that can throttle."""
    if request.param == "libcloud-dummy":
        return _dummy(request)
    return _ec2(request, "ec2" if request.param == "ec2" else "libcloud")


def userdata_for(capabilities: Capabilities) -> bytes | None:
    return USERDATA if capabilities.takes_userdata else None


def test_create_describe_and_wait(backend: Backend) -> None:
    provider = backend.make("r1")
    capabilities = provider.capabilities
    assert isinstance(capabilities, Capabilities) and capabilities.poll_interval > 0
    made = provider.create(backend.request("r1", "db/0", "t-1", userdata_for(capabilities)))
    assert made.resource_id and made.state in (PENDING, RUNNING)
    assert provider.describe(made.resource_id).resource_id == made.resource_id
    running = provider.wait_running(made.resource_id, timeout=WAIT)
    assert running.state == RUNNING, running.error
    assert running.address
    if capabilities.port_per_node:
        assert running.port > 0
    if capabilities.tags:
        assert node_tags("r1", "db", "db/0").items() <= running.tags.items()


def test_the_same_token_never_makes_a_second_node(backend: Backend) -> None:
    provider = backend.make("r1")
    userdata = userdata_for(provider.capabilities)
    first = provider.create(backend.request("r1", "db/0", "t-1", userdata))
    again = backend.make("r1").create(backend.request("r1", "db/0", "t-1", userdata))
    assert again.resource_id == first.resource_id
    if provider.capabilities.creates_machines:
        assert [n.resource_id for n in provider.find("r1")] == [first.resource_id]


def test_find_by_tag_from_a_fresh_provider(backend: Backend) -> None:
    """After a crash only the run's name is known: find() returns its live nodes, and never
    those of a run whose name merely starts with it."""
    userdata = userdata_for(backend.make("r1").capabilities)
    made = {backend.make("r1").create(backend.request("r1", node, f"t-{node}", userdata))
            .resource_id for node in ("db/0", "web/0")}
    other = backend.make("r1-b").create(backend.request("r1-b", "db/0", "t-other", userdata))
    fresh = backend.make("r1")
    found = fresh.find("r1")
    if not fresh.capabilities.creates_machines:
        assert found == []  # nothing was created, so nothing is left to sweep
        return
    assert {n.resource_id for n in found} == made
    assert other.resource_id not in made
    assert [n.resource_id for n in backend.make("r1-b").find("r1-b")] == [other.resource_id]
    if fresh.capabilities.tags:
        assert {n.tags["cei:node"] for n in found} == {"db/0", "web/0"}


def test_destroy_twice_and_an_id_that_never_existed(backend: Backend) -> None:
    provider = backend.make("r1")
    made = provider.create(backend.request("r1", "db/0", "t-1",
                                           userdata_for(provider.capabilities)))
    provider.destroy(made.resource_id)
    provider.destroy(made.resource_id)
    provider.destroy(backend.missing_id)
    assert provider.find("r1") == []
    if provider.capabilities.creates_machines:
        assert provider.describe(made.resource_id).state == TERMINATED
        assert provider.describe(backend.missing_id).state == TERMINATED
    else:  # an existing host outlives every run
        assert provider.describe(made.resource_id).state == RUNNING


def test_waiting_stops_when_cancelled(backend: Backend) -> None:
    provider = backend.make("r1")
    made = provider.create(backend.request("r1", "db/0", "t-1",
                                           userdata_for(provider.capabilities)))
    cancel = threading.Event()
    cancel.set()
    info = provider.wait_running(made.resource_id, timeout=WAIT, cancel=cancel, interval=30)
    assert info.resource_id == made.resource_id
    assert info.state in (PENDING, RUNNING, ERROR)


def test_user_data_only_where_the_provider_takes_it(backend: Backend) -> None:
    provider = backend.make("r1")
    request = backend.request("r1", "db/0", "t-1", USERDATA)
    if provider.capabilities.takes_userdata:
        assert provider.create(request).resource_id
        return
    with pytest.raises(CeiError, match="user-data"):
        provider.create(request)
    assert provider.find("r1") == []


def test_throttling_is_retried(remote_backend: Backend) -> None:
    assert remote_backend.throttle is not None and remote_backend.throttled is not None
    provider = remote_backend.make("r1")
    remote_backend.throttle(3)
    made = provider.create(remote_backend.request("r1", "db/0", "t-1",
                                                  userdata_for(provider.capabilities)))
    assert remote_backend.throttled() == 3
    assert [n.resource_id for n in provider.find("r1")] == [made.resource_id]


def test_create_many_and_destroy_many(backend: Backend) -> None:
    """The batch verbs: every id is reported through `created` before create_many returns,
    asking again makes nothing twice, and destroy_many is as idempotent as destroy."""
    provider = backend.make("r1")
    userdata = userdata_for(provider.capabilities)
    requests = [backend.request("r1", f"db/{i}", f"t-{i}", userdata) for i in range(3)]
    reported: dict[str, str] = {}

    def created(request: NodeRequest, info: NodeInfo) -> None:
        reported[request.node] = info.resource_id

    made = provider.create_many(requests, created, parallel=2)
    assert all(not isinstance(m, Exception) for m in made), made
    ids = [m.resource_id for m in made if not isinstance(m, Exception)]
    assert reported == {r.node: rid for r, rid in zip(requests, ids, strict=True)}
    again = backend.make("r1").create_many(requests, lambda r, info: None)
    assert [a.resource_id for a in again if not isinstance(a, Exception)] == ids
    fresh = backend.make("r1")
    if fresh.capabilities.creates_machines:
        assert sorted(n.resource_id for n in fresh.find("r1")) == sorted(ids)
        if fresh.capabilities.tags:
            assert {n.tags["cei:node"] for n in fresh.find("r1")} == {"db/0", "db/1", "db/2"}
    assert fresh.destroy_many([*ids, backend.missing_id]) == {}
    assert fresh.destroy_many(ids) == {}
    assert fresh.find("r1") == []


def test_create_many_asks_nothing_more_once_cancelled(backend: Backend) -> None:
    provider = backend.make("r1")
    cancel = threading.Event()
    cancel.set()
    requests = [backend.request("r1", f"db/{i}", f"t-{i}", userdata_for(provider.capabilities))
                for i in range(2)]
    made = provider.create_many(requests, lambda r, info: None, parallel=2, cancel=cancel)
    assert all(isinstance(m, Interrupted) for m in made), made
    assert provider.find("r1") == []
