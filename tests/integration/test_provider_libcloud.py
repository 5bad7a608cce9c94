"""The libcloud provider with libcloud's EC2 driver against moto's EC2 API over HTTP."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from launchplan.errors import ProviderError, UsageError
from launchplan.providers import get_provider
from launchplan.providers.base import PENDING, RUNNING, NodeRequest
from launchplan.providers.libcloud import (
    LibcloudProvider,
    is_transient,
    name_prefix,
    node_name,
)
from launchplan.providers.libcloud_names import takes_objects
from launchplan.providers.retry import Backoff

if TYPE_CHECKING:
    from tests.integration.cloud_emulator import EC2Emulator

pytestmark = pytest.mark.integration

USERDATA = b"#cloud-config\nruncmd:\n  - [echo, hello]\n"


def _request(
    options: Mapping[str, Any], node: str = "db/0", token: str = "tok-db-0-1", **kw
) -> NodeRequest:
    service = node.split("/")[0]
    run = kw.pop("run", "r1")
    return NodeRequest(
        run=run,
        service=service,
        node=node,
        token=token,
        options=options,
        userdata=kw.pop("userdata", USERDATA),
        tags={"cei:run": run, "cei:service": service, "cei:node": node},
    )


@pytest.fixture
def options(ec2_emulator: EC2Emulator, ec2_image: str) -> dict:
    return ec2_emulator.libcloud_options(image=ec2_image, size="t2.micro", tags={"team": "cei"})


@pytest.fixture
def provider(options: dict, tmp_path: Path) -> LibcloudProvider:
    made = get_provider("libcloud", options, tmp_path)
    assert isinstance(made, LibcloudProvider)
    return made


def test_create_is_visible_through_the_ec2_api(
    provider: LibcloudProvider, options: dict, ec2_emulator: EC2Emulator, ec2_image: str
) -> None:
    info = provider.create(_request(options))
    assert info.resource_id.startswith("i-")
    assert info.state in (PENDING, RUNNING)

    [instance] = ec2_emulator.instances()
    assert instance["InstanceId"] == info.resource_id
    assert instance["ImageId"] == ec2_image
    assert instance["InstanceType"] == "t2.micro"
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["cei:run"] == "r1"
    assert tags["cei:service"] == "db"
    assert tags["cei:node"] == "db/0"
    assert tags["team"] == "cei"
    assert tags["Name"] == node_name("r1", "db/0")
    attribute = ec2_emulator.client().describe_instance_attribute(
        InstanceId=info.resource_id, Attribute="userData"
    )
    assert base64.b64decode(attribute["UserData"]["Value"]) == USERDATA


def test_binary_userdata_passes_unchanged(
    provider: LibcloudProvider, options: dict, ec2_emulator: EC2Emulator
) -> None:
    gzipped = b"\x1f\x8b\x08\x00\xff\xfe binary"
    info = provider.create(_request(options, userdata=gzipped))
    attribute = ec2_emulator.client().describe_instance_attribute(
        InstanceId=info.resource_id, Attribute="userData"
    )
    assert base64.b64decode(attribute["UserData"]["Value"]) == gzipped


def test_public_and_private_addresses(
    provider: LibcloudProvider, options: dict, tmp_path: Path
) -> None:
    info = provider.create(_request(options))
    running = provider.wait_running(info.resource_id, timeout=30, interval=0.1)
    assert running.state == RUNNING
    assert running.address
    assert running.private_address and running.private_address != running.address
    private = LibcloudProvider({**options, "address": "private"}, tmp_path)
    assert private.describe(info.resource_id).address == running.private_address


def test_throttling_past_the_attempts_is_a_transient_error(
    options: dict, tmp_path: Path, ec2_emulator: EC2Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LibcloudProvider, "backoff", Backoff(attempts=3, base=0.01, cap=0.05))
    ec2_emulator.throttle(10)
    with pytest.raises(ProviderError) as caught:
        LibcloudProvider(options, tmp_path).find("r1")
    assert caught.value.transient
    assert "RequestLimitExceeded" in str(caught.value)
    assert ec2_emulator.throttled == 3


def test_bad_image_is_a_fatal_error_with_the_api_message(
    options: dict, tmp_path: Path, ec2_emulator: EC2Emulator
) -> None:
    bad = {**options, "image": "ami-00000000deadbeef0"}
    with pytest.raises(ProviderError) as caught:
        LibcloudProvider(bad, tmp_path).create(_request(bad))
    assert not caught.value.transient
    assert "InvalidAMIID.NotFound" in str(caught.value)
    assert ec2_emulator.instances() == []


def test_unknown_provider_and_missing_key_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown compute provider"):
        LibcloudProvider({"provider": "no-such-cloud", "credentials": {"key": "k"}}, tmp_path).find(
            "r1"
        )
    with pytest.raises(UsageError, match="needs `provider`"):
        LibcloudProvider({}, tmp_path)
    with pytest.raises(UsageError, match="empty"):
        LibcloudProvider({"provider": "ec2", "credentials": {"key": ""}}, tmp_path).find("r1")


def test_names_and_classification() -> None:
    from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError

    assert node_name("r1", "db/0").startswith(name_prefix("r1"))
    assert not node_name("r1-b", "db/0").startswith(name_prefix("r1"))
    assert is_transient(RateLimitReachedError(code=429, message="slow down"))
    assert is_transient(BaseHTTPError(503, "RequestLimitExceeded: Request limit exceeded."))
    assert is_transient(BaseHTTPError(500, "InternalError"))
    assert is_transient(ConnectionResetError(104, "reset"))
    assert not is_transient(BaseHTTPError(400, "InvalidAMIID.NotFound: no such image"))


def test_console_output_through_the_ec2_driver(provider: LibcloudProvider, options: dict) -> None:
    info = provider.create(_request(options))
    text = provider.console_output(info.resource_id)
    assert text is not None and "Kernel command line" in text


def test_images_sizes_and_locations_by_id_or_name_with_a_hint(
    options: dict, tmp_path: Path, ec2_image: str
) -> None:
    named = {**options, "image": "cei-test-image"}
    kwargs = LibcloudProvider(named, tmp_path).create_kwargs(_request(named))
    assert kwargs["image"].id == ec2_image  # EC2: looked up by a name filter, never listed
    typo = {**options, "size": "t2.mikro"}
    with pytest.raises(ProviderError, match=r"no size 't2.mikro' by id or name \(did you mean "
                                            r"'t2.micro'\?\)"):
        LibcloudProvider(typo, tmp_path).create_kwargs(_request(typo))
    dummy = {"provider": "dummy", "credentials": {"key": "0"}, "image": "Slackware 4",
             "size": "Medium", "location": "London Loft"}
    kwargs = LibcloudProvider(dummy, tmp_path).create_kwargs(_request(dummy, userdata=None))
    assert (kwargs["image"].id, kwargs["size"].id, kwargs["location"].id) == ("3", "2", "2")
    with pytest.raises(ProviderError, match=r"no image 'Slackwar 4' by id or name \(did you "
                                            r"mean 'Slackware 4'\?\)"):
        bad = {**dummy, "image": "Slackwar 4"}
        LibcloudProvider(bad, tmp_path).create_kwargs(_request(bad, userdata=None))


@pytest.fixture
def vpc(ec2_emulator: EC2Emulator) -> dict[str, str]:
    """A VPC with a subnet named `private` and a security group `web` in it."""
    client = ec2_emulator.client()
    vpc_id = client.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = client.create_subnet(VpcId=vpc_id, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
    client.create_tags(Resources=[subnet], Tags=[{"Key": "Name", "Value": "private"}])
    group = client.create_security_group(GroupName="web", Description="cei test",
                                         VpcId=vpc_id)["GroupId"]
    return {"vpc": vpc_id, "subnet": subnet, "group": group}


def test_create_args_names_are_resolved_the_way_the_driver_expects(
    options: dict, tmp_path: Path, ec2_emulator: EC2Emulator, ec2_key_pair: str,
    vpc: dict[str, str]
) -> None:
    """EC2's create_node wants ex_subnet as a subnet object, ex_security_group_ids as ids and
    ex_keyname as a name: the plan names all three by name."""
    with_args = {**options, "create_args": {
        "ex_subnet": "private", "ex_security_group_ids": ["web"], "ex_keyname": ec2_key_pair,
        "ex_metadata": {"owner": "ops"}}}
    provider = LibcloudProvider(with_args, tmp_path)
    kwargs = provider.create_kwargs(_request(with_args))
    assert kwargs["ex_subnet"].id == vpc["subnet"]
    assert kwargs["ex_security_group_ids"] == [vpc["group"]]
    assert kwargs["ex_keyname"] == ec2_key_pair
    provider.create(_request(with_args))
    [instance] = ec2_emulator.instances()
    assert instance["SubnetId"] == vpc["subnet"]
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [vpc["group"]]
    assert instance["KeyName"] == ec2_key_pair
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["owner"] == "ops" and tags["cei:run"] == "r1"  # metadata merged with cei's


@pytest.mark.parametrize(("create_args", "message"), [
    ({"ex_subnet": "privte"}, "create_args.ex_subnet: no subnet 'privte' by id or name "
                              "(did you mean 'private'?)"),
    ({"ex_keyname": "nokey"}, "create_args.ex_keyname: no key pair 'nokey'"),
    ({"networks": ["private"]}, "create_node takes no argument 'networks'"),
    ({"image": "ami-1"}, "create_args.image is set by cei"),
])
def test_create_args_mistakes_are_refused_before_creating(
    options: dict, tmp_path: Path, ec2_emulator: EC2Emulator, vpc: dict[str, str],
    create_args: dict, message: str
) -> None:
    bad = {**options, "create_args": create_args}
    with pytest.raises(ProviderError, match=re.escape(message)) as caught:
        LibcloudProvider(bad, tmp_path).create(_request(bad))
    assert not caught.value.transient
    assert ec2_emulator.instances() == []


def test_which_arguments_take_objects_comes_from_the_drivers_docs() -> None:
    from libcloud.compute.drivers.ec2 import EC2NodeDriver
    from libcloud.compute.drivers.openstack import OpenStack_2_NodeDriver

    assert takes_objects(OpenStack_2_NodeDriver.create_node, "networks")
    assert takes_objects(OpenStack_2_NodeDriver.create_node, "ex_security_groups")
    assert not takes_objects(OpenStack_2_NodeDriver.create_node, "ex_keyname")
    assert takes_objects(EC2NodeDriver.create_node, "ex_subnet")
    assert not takes_objects(EC2NodeDriver.create_node, "ex_security_groups")
    assert not takes_objects(EC2NodeDriver.create_node, "no_such_argument")
