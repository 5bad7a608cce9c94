"""The static provider: existing hosts, never created or destroyed."""

from __future__ import annotations

from pathlib import Path

import pytest

from launchplan.errors import UsageError
from launchplan.providers import get_provider
from launchplan.providers.base import RUNNING, NodeRequest
from launchplan.providers.static import HOST_OPTION, StaticProvider


def _request(options: dict, userdata: bytes | None = None) -> NodeRequest:
    return NodeRequest(
        run="r1",
        service="web",
        node="web/0",
        token="t1",
        options=options,
        userdata=userdata,
        tags={"cei:run": "r1", "cei:service": "web", "cei:node": "web/0"},
    )


@pytest.fixture
def provider(tmp_path: Path) -> StaticProvider:
    made = get_provider("static", {"ssh_user": "admin"}, tmp_path)
    assert isinstance(made, StaticProvider)
    return made


def test_create_returns_the_host_as_running(provider: StaticProvider) -> None:
    info = provider.create(_request({HOST_OPTION: "192.0.2.10", "ssh_user": "admin"}))
    assert info.resource_id == "192.0.2.10"
    assert info.state == RUNNING
    assert info.address == "192.0.2.10"
    assert info.tags["cei:node"] == "web/0"


def test_describe_reports_the_host(provider: StaticProvider) -> None:
    info = provider.describe("db.example.org")
    assert (info.resource_id, info.state, info.address) == (
        "db.example.org",
        RUNNING,
        "db.example.org",
    )


def test_destroy_and_find_touch_nothing(provider: StaticProvider) -> None:
    provider.destroy("192.0.2.10")
    provider.destroy("192.0.2.10")
    assert provider.find("r1") == []


def test_missing_host_is_a_usage_error(provider: StaticProvider) -> None:
    with pytest.raises(UsageError, match="has no host"):
        provider.create(_request({}))


def test_userdata_for_an_existing_host_is_refused(provider: StaticProvider) -> None:
    with pytest.raises(UsageError, match="cannot receive user-data"):
        provider.create(_request({HOST_OPTION: "192.0.2.10"}, userdata=b"#cloud-config\n"))


def test_static_nodes_do_not_wait_for_cloud_init() -> None:
    assert StaticProvider.CAPABILITIES.runs_cloud_init is False
