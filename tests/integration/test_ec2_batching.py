"""EC2 at scale: a level costs a fixed number of API calls, and batched creates are crash-safe.

The emulator counts the EC2 requests it is sent, by action; a budget that grew with the number
of nodes (one DescribeInstances per node before each RunInstances, one wait and one terminate
per node, as before) fails here.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from launchplan.errors import ProviderError
from launchplan.providers import ec2
from launchplan.providers.base import NodeInfo, NodeRequest
from launchplan.providers.ec2 import EC2Provider
from launchplan.providers.tags import BATCH, NODE, TOKEN, client_token, node_tags
from tests.integration.cli_helpers import cei

if TYPE_CHECKING:
    from tests.integration.cloud_emulator import EC2Emulator

pytestmark = pytest.mark.integration

USERDATA = b"#cloud-config\nruncmd:\n  - [echo, batch]\n"
# Per level of a launch: one paged DescribeInstances for nodes made before, one round of
# DescribeInstances for every node's wait (the emulator's instances run at once).
LAUNCH_DESCRIBES_PER_LEVEL = 2


def _plan(directory: Path, emulator: EC2Emulator, image: str, count: int) -> Path:
    """Two levels of `count` nodes, no programs: `db` carries no host key of its own, so its
    nodes' user-data are identical; `web` pins a host key per node (the default)."""
    plan = {
        "plan": "budget",
        "clouds": {"aws": {"driver": "ec2", "region": emulator.region,
                           "endpoint_url": emulator.endpoint, "image": image,
                           "size": "t3.micro"}},
        "defaults": {"cloud": "aws", "timeout": 120},
        "levels": [{"services": {"db": {"count": count, "host_key_policy": "console"}}},
                   {"services": {"web": {"count": count}}}],
    }
    path = directory / "budget.yml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def _calls(emulator: EC2Emulator) -> Counter[str]:
    calls = emulator.actions
    emulator.middleware.reset_counters()
    return calls


@pytest.mark.parametrize("count", [3, 24])
def test_a_level_costs_a_fixed_number_of_calls(
    count: int, tmp_path: Path, ec2_emulator: EC2Emulator, ec2_image: str
) -> None:
    home = tmp_path / "home"
    plan = _plan(tmp_path, ec2_emulator, ec2_image, count)
    _calls(ec2_emulator)
    cei(home, "launch", str(plan), "--name", "b1", check=0)
    launch = _calls(ec2_emulator)
    # db: one RunInstances for all its nodes; web: one each, since each carries its own key
    assert launch["RunInstances"] == 1 + count, launch
    assert launch["DescribeInstances"] <= 2 * LAUNCH_DESCRIBES_PER_LEVEL, launch
    assert launch["CreateTags"] <= count, launch  # each db node tagged as itself
    assert launch["TerminateInstances"] == 0, launch

    instances = ec2_emulator.instances(**{"tag:cei:run": ["b1"]})
    tags = [{t["Key"]: t["Value"] for t in i["Tags"]} for i in instances]
    assert sorted(t[NODE] for t in tags) == sorted(
        [f"db/{i}" for i in range(count)] + [f"web/{i}" for i in range(count)])
    assert all(t["Name"] == f"b1/{t[NODE]}" for t in tags)

    cei(home, "terminate", "b1", check=0)
    down = _calls(ec2_emulator)
    assert down["TerminateInstances"] <= 2, down  # one per level
    # the sweep by the run's tag, once per cloud profile (host_key_policy sets the two apart)
    assert down["DescribeInstances"] <= 2, down
    assert down["DescribeInstanceStatus"] <= 1, down  # the check that all is gone
    assert down["RunInstances"] == 0, down
    assert all(i["State"]["Name"] == "terminated" for i in ec2_emulator.instances())


def _requests(options: dict, count: int) -> list[NodeRequest]:
    return [NodeRequest(run="r1", service="db", node=f"db/{i}", token=f"tok-db-{i}",
                        options=options, userdata=USERDATA, tags=node_tags("r1", "db", f"db/{i}"))
            for i in range(count)]


class Crash(Exception):
    """cei dies: here, as soon as the batch's first id is known, before any is recorded."""


def _crash(request: NodeRequest, info: NodeInfo) -> None:
    raise Crash(info.resource_id)


def test_a_batched_create_retried_after_a_crash_makes_nothing_twice(
    tmp_path: Path, ec2_emulator: EC2Emulator, ec2_image: str
) -> None:
    options = ec2_emulator.ec2_options(image=ec2_image, size="t3.micro")
    requests = _requests(options, 4)
    with pytest.raises(Crash):
        EC2Provider(options, tmp_path).create_many(requests, _crash)
    made = ec2_emulator.instances()
    assert len(made) == 4
    assert all(NODE not in {t["Key"] for t in i["Tags"]} for i in made)  # not tagged yet

    reported: dict[str, str] = {}

    def created(request: NodeRequest, info: NodeInfo) -> None:
        reported[request.node] = info.resource_id

    again = EC2Provider(options, tmp_path).create_many(requests, created)
    assert sorted(reported.values()) == sorted(i["InstanceId"] for i in made)
    assert [a.resource_id for a in again if isinstance(a, NodeInfo)] == [
        reported[r.node] for r in requests]
    for instance in ec2_emulator.instances():
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        index = instance["AmiLaunchIndex"]
        assert tags[NODE] == f"db/{index}"
        assert tags[TOKEN] == client_token(f"tok-db-{index}")
        assert BATCH in tags
    # one node asked for alone (a fresh process, the same token) is found too
    assert EC2Provider(options, tmp_path).create(requests[2]).resource_id == reported["db/2"]
    assert ec2_emulator.actions["RunInstances"] == 1
    assert len(ec2_emulator.instances()) == 4


def test_untagged_instances_a_retry_cannot_place_stop_it_from_making_nodes(
    tmp_path: Path, ec2_emulator: EC2Emulator, ec2_image: str
) -> None:
    """Asked for some of the nodes only, cei cannot tell which untagged instance is which:
    it makes none rather than risk making a node twice."""
    options = ec2_emulator.ec2_options(image=ec2_image, size="t3.micro")
    requests = _requests(options, 3)
    with pytest.raises(Crash):
        EC2Provider(options, tmp_path).create_many(requests, _crash)
    results = EC2Provider(options, tmp_path).create_many(requests[:2], lambda r, i: None)
    assert all(isinstance(r, ProviderError) and "interrupted create" in str(r)
               for r in results), results
    assert len(ec2_emulator.instances()) == 3


def test_nodes_with_their_own_user_data_are_made_one_call_each(
    tmp_path: Path, ec2_emulator: EC2Emulator, ec2_image: str
) -> None:
    options = ec2_emulator.ec2_options(image=ec2_image, size="t3.micro")
    requests = [NodeRequest(run="r1", service="web", node=f"web/{i}", token=f"tok-web-{i}",
                            options=options, userdata=USERDATA + f"# {i}\n".encode(),
                            tags=node_tags("r1", "web", f"web/{i}")) for i in range(3)]
    made = EC2Provider(options, tmp_path).create_many(requests, lambda r, i: None, parallel=3)
    assert all(isinstance(m, NodeInfo) for m in made)
    assert ec2_emulator.actions["RunInstances"] == 3
    assert ec2_emulator.actions["DescribeInstances"] == 1
    for instance in ec2_emulator.instances():
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert BATCH not in tags and tags[NODE].startswith("web/")


def test_a_create_keeps_a_connection_open_for_each_parallel_call(
    tmp_path: Path, ec2_emulator: EC2Emulator, ec2_image: str
) -> None:
    """Beyond botocore's pool of 10, each of `parallel` calls would open a connection and drop
    it after."""
    options = ec2_emulator.ec2_options(image=ec2_image, size="t3.micro")
    provider = EC2Provider(options, tmp_path)
    assert provider.client.meta.config.max_pool_connections == 10
    made = provider.create_many(_requests(options, 2), lambda r, i: None, parallel=16)
    assert all(isinstance(m, NodeInfo) for m in made)
    assert provider.client.meta.config.max_pool_connections == 16
    provider.create_many(_requests(options, 2), lambda r, i: None, parallel=4)
    assert provider.client.meta.config.max_pool_connections == 16  # never narrowed


def test_instances_are_described_while_the_rest_are_made(
    tmp_path: Path, ec2_emulator: EC2Emulator, ec2_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every EARLY_ROUND instances made start a round of DescribeInstances beside the creates,
    so the waits that follow find most answers in hand: still a call per round, never one per
    node, and each node's answer is its own."""
    monkeypatch.setattr(ec2, "EARLY_ROUND", 4)
    options = ec2_emulator.ec2_options(image=ec2_image, size="t3.micro")
    requests = [NodeRequest(run="r1", service="web", node=f"web/{i}", token=f"tok-web-{i}",
                            options=options, userdata=USERDATA + f"# {i}\n".encode(),
                            tags=node_tags("r1", "web", f"web/{i}")) for i in range(10)]
    provider = EC2Provider(options, tmp_path)
    made = provider.create_many(requests, lambda r, i: None, parallel=2)
    assert all(isinstance(m, NodeInfo) for m in made)
    assert ec2_emulator.actions["RunInstances"] == 10

    running = [provider.wait_running(m.resource_id, timeout=30, interval=0.1)
               for m in made if isinstance(m, NodeInfo)]
    assert [r.resource_id for r in running] == [m.resource_id for m in made
                                                if isinstance(m, NodeInfo)]
    assert all(r.state == "running" and r.address for r in running), running
    # the look for nodes made before, one or two early rounds (the 4th node made starts one,
    # the 8th another if the first is over), and one for the nodes made after the last:
    # without early rounds it would be 2
    assert 3 <= ec2_emulator.actions["DescribeInstances"] <= 1 + 10 // 4 + 1
    by_id = {i["InstanceId"]: i for i in ec2_emulator.instances()}
    assert all(r.address == by_id[r.resource_id]["PublicIpAddress"] for r in running)
