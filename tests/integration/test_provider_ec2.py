"""The ec2 provider (boto3) against moto's EC2 API over HTTP on loopback."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from launchplan.errors import ProviderError, UsageError
from launchplan.providers import get_provider
from launchplan.providers.base import PENDING, RUNNING, NodeRequest
from launchplan.providers.ec2 import EC2Provider
from launchplan.providers.tags import client_token

if TYPE_CHECKING:
    from tests.integration.cloud_emulator import EC2Emulator

pytestmark = pytest.mark.integration

USERDATA = b"#cloud-config\nruncmd:\n  - [echo, hello]\n"


def _request(options: dict, node: str = "db/0", token: str = "tok-db-0-1", **kw) -> NodeRequest:
    service = node.split("/")[0]
    tags = {"cei:run": "r1", "cei:service": service, "cei:node": node}
    return NodeRequest(
        run=kw.pop("run", "r1"),
        service=service,
        node=node,
        token=token,
        options=options,
        userdata=kw.pop("userdata", USERDATA),
        tags=kw.pop("tags", tags),
    )


@pytest.fixture
def options(ec2_emulator: EC2Emulator, ec2_image: str, ec2_key_pair: str) -> dict:
    return ec2_emulator.ec2_options(
        image=ec2_image,
        size="t3.small",
        key_name=ec2_key_pair,
        security_groups=["default"],
        tags={"team": "cei", "Name": "custom-name"},
    )


@pytest.fixture
def provider(options: dict, tmp_path: Path) -> EC2Provider:
    made = get_provider("ec2", options, tmp_path)
    assert isinstance(made, EC2Provider)
    return made


def test_create_is_visible_through_the_ec2_api(
    provider: EC2Provider, options: dict, ec2_emulator: EC2Emulator, ec2_image: str
) -> None:
    info = provider.create(_request(options))
    assert info.resource_id.startswith("i-")
    assert info.state in (PENDING, RUNNING)

    [instance] = ec2_emulator.instances()
    assert instance["InstanceId"] == info.resource_id
    assert instance["ImageId"] == ec2_image
    assert instance["InstanceType"] == "t3.small"
    assert instance["KeyName"] == "cei-test-key"
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["cei:run"] == "r1"
    assert tags["cei:service"] == "db"
    assert tags["cei:node"] == "db/0"
    assert tags["team"] == "cei"
    assert tags["Name"] == "custom-name"
    attribute = ec2_emulator.client().describe_instance_attribute(
        InstanceId=info.resource_id, Attribute="userData"
    )
    assert base64.b64decode(attribute["UserData"]["Value"]) == USERDATA


def test_name_tag_defaults_to_run_and_node(
    options: dict, tmp_path: Path, ec2_emulator: EC2Emulator
) -> None:
    options = {**options, "tags": {}}
    EC2Provider(options, tmp_path).create(_request(options, node="web/2"))
    [instance] = ec2_emulator.instances()
    assert {"Key": "Name", "Value": "r1/web/2"} in instance["Tags"]


def test_public_and_private_addresses(
    provider: EC2Provider, options: dict, tmp_path: Path
) -> None:
    info = provider.create(_request(options))
    running = provider.wait_running(info.resource_id, timeout=30, interval=0.1)
    assert running.state == RUNNING
    assert running.address and running.address == running.address.strip()
    assert running.private_address
    assert running.address != running.private_address
    private = EC2Provider({**options, "address": "private"}, tmp_path)
    assert private.describe(info.resource_id).address == running.private_address


def test_bad_image_is_a_fatal_error_with_the_api_message(
    options: dict, tmp_path: Path, ec2_emulator: EC2Emulator
) -> None:
    options = {**options, "image": "ami-00000000deadbeef0"}
    with pytest.raises(ProviderError) as caught:
        EC2Provider(options, tmp_path).create(_request(options))
    assert not caught.value.transient
    assert "InvalidAMIID.NotFound" in str(caught.value)
    assert ec2_emulator.instances() == []


def test_explicit_credentials_are_used_and_never_shown(
    options: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    secret = "very-secret-value-123"
    with_creds = {**options, "credentials": {"access_key": "AKIDTEST", "secret_key": secret}}
    provider = EC2Provider(with_creds, tmp_path)
    info = provider.create(_request(with_creds))
    assert provider.describe(info.resource_id).resource_id == info.resource_id
    assert secret not in repr(provider)
    assert secret not in repr(info)


def test_missing_credentials_is_a_clear_fatal_error(
    options: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ProviderError) as caught:
        EC2Provider(options, tmp_path).find("r1")
    assert not caught.value.transient
    assert "no AWS credentials" in str(caught.value)


def test_empty_credential_from_env_is_a_usage_error(options: dict, tmp_path: Path) -> None:
    bad = {**options, "credentials": {"access_key": "", "secret_key": "x"}}
    with pytest.raises(UsageError, match=r"credentials\.access_key is empty"):
        EC2Provider(bad, tmp_path).find("r1")


def test_run_instances_passthrough_and_security_group_ids(options: dict, tmp_path: Path) -> None:
    extra = {
        **options,
        "security_groups": ["sg-0123", "web"],
        "subnet": "subnet-1",
        "zone": "us-east-1b",
        "run_instances": {"EbsOptimized": True, "MaxCount": 1},
    }
    kwargs = EC2Provider(extra, tmp_path).run_instances_kwargs(_request(extra))
    assert kwargs["SecurityGroupIds"] == ["sg-0123"]
    assert kwargs["SecurityGroups"] == ["web"]
    assert kwargs["SubnetId"] == "subnet-1"
    assert kwargs["Placement"] == {"AvailabilityZone": "us-east-1b"}
    assert kwargs["EbsOptimized"] is True
    assert kwargs["ClientToken"] == "tok-db-0-1"


def test_client_token_fits_ec2_limits() -> None:
    assert client_token("run-db-0-1") == "run-db-0-1"
    long = client_token("x" * 100)
    assert len(long) == 64 and long.isascii()
    assert client_token("x" * 100) == long
    assert len(client_token("é")) == 64


def test_bad_address_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="address"):
        EC2Provider({"address": "elastic"}, tmp_path)


def test_console_output_is_readable(provider: EC2Provider, options: dict) -> None:
    info = provider.create(_request(options))
    text = provider.console_output(info.resource_id)
    assert text is not None and "Kernel command line" in text


class _FixedConsole:
    """Stands in for the node farm: every instance's console is `text`; nothing boots."""

    def __init__(self, text: str) -> None:
        self.text = text

    def console(self, instance_id: str) -> str:
        return self.text

    def rewrite(self, body: bytes) -> bytes:
        return body

    def destroy(self, instance_id: str) -> None:
        """Nothing was booted for it."""


def test_console_output_arrives_as_the_node_printed_it(
    provider: EC2Provider, options: dict, ec2_emulator: EC2Emulator,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore decodes the console's base64 already. A second decode failed on most texts
    and fell back to the right one, but turned those whose letters and digits count a
    multiple of four into noise: host_key_policy console then waited out its timeout."""
    info = provider.create(_request(options))
    block = ("-----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
             "256 SHA256:zDjMqIi6XJrFXW+zr53/r+EH9YpGDu9Ua7CR/e3RHvk root@db (ED25519)\n"
             "-----END SSH HOST KEY FINGERPRINTS-----\n")
    for extra in range(4):  # each remainder of the count of base64 letters modulo four
        text = f"cloud-init booting{'x' * extra}\n{block}"
        monkeypatch.setattr(ec2_emulator.middleware, "farm", _FixedConsole(text))
        assert provider.console_output(info.resource_id) == text


@pytest.fixture
def network(ec2_emulator: EC2Emulator) -> dict[str, str]:
    """A VPC with a subnet and a security group `web` in it, and an IAM instance profile."""
    import boto3

    client = ec2_emulator.client()
    vpc = client.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnet = client.create_subnet(VpcId=vpc, CidrBlock="10.30.1.0/24")["Subnet"]["SubnetId"]
    group = client.create_security_group(GroupName="web", Description="cei test",
                                         VpcId=vpc)["GroupId"]
    iam = boto3.client("iam", endpoint_url=ec2_emulator.endpoint, region_name=ec2_emulator.region)
    iam.create_instance_profile(InstanceProfileName="cei-node")
    return {"vpc": vpc, "subnet": subnet, "group": group}


def test_the_documented_run_instances_examples_reach_the_instance(
    options: dict, tmp_path: Path, ec2_emulator: EC2Emulator, network: dict[str, str]
) -> None:
    """docs/clouds.md's examples: a subnet with security groups named as in the console
    (resolved to ids in the subnet's VPC), a key pair, an IAM instance profile, spot, and an
    extra EBS volume, through the plan keys and `run_instances`."""
    documented = {
        **options,
        "subnet": network["subnet"],
        "security_groups": ["web"],
        "run_instances": {
            "IamInstanceProfile": {"Name": "cei-node"},
            "InstanceMarketOptions": {"MarketType": "spot", "SpotOptions": {
                "MaxPrice": "0.05", "SpotInstanceType": "one-time"}},
            "BlockDeviceMappings": [{"DeviceName": "/dev/sdf", "Ebs": {
                "VolumeSize": 20, "VolumeType": "gp3", "DeleteOnTermination": True}}],
        },
    }
    EC2Provider(documented, tmp_path).create(_request(documented))
    [instance] = ec2_emulator.instances()
    assert instance["SubnetId"] == network["subnet"]
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [network["group"]]
    assert instance["KeyName"] == "cei-test-key"
    assert instance["IamInstanceProfile"]["Arn"].endswith("instance-profile/cei-node")
    assert instance["InstanceLifecycle"] == "spot"
    [volume] = [v for v in ec2_emulator.client().describe_volumes()["Volumes"]
                if v["Attachments"][0]["Device"] == "/dev/sdf"]
    assert (volume["Size"], volume["VolumeType"]) == (20, "gp3")


def test_a_security_group_name_missing_from_the_vpc_is_refused(
    options: dict, tmp_path: Path, ec2_emulator: EC2Emulator, network: dict[str, str]
) -> None:
    wrong = {**options, "subnet": network["subnet"], "security_groups": ["web", "db"]}
    with pytest.raises(ProviderError, match=rf"no security group 'db' in the VPC {network['vpc']}"):
        EC2Provider(wrong, tmp_path).create(_request(wrong))
    assert ec2_emulator.instances() == []


def test_check_describes_everything_and_reports_each_problem(
    options: dict, tmp_path: Path, ec2_emulator: EC2Emulator, network: dict[str, str]
) -> None:
    assert EC2Provider({**options, "subnet": network["subnet"]}, tmp_path).check() == []
    wrong = {**options, "image": "ami-00000000deadbeef0", "size": "t3.mikro",
             "key_name": "nokey", "security_groups": ["sg-0123456789abcdef0", "nogroup"],
             "zone": "us-east-1x", "run_instances": {"SubnetId": "subnet-0123456789abcdef0"}}
    problems = {p.option: p.message for p in EC2Provider(wrong, tmp_path).check()}
    assert set(problems) == {("image",), ("size",), ("key_name",), ("security_groups",),
                             ("zone",), ("run_instances", "SubnetId")}
    assert "InvalidAMIID.NotFound" in problems[("image",)]
    assert "InvalidInstanceType" in problems[("size",)]
    assert "InvalidKeyPair.NotFound" in problems[("key_name",)]
    assert "InvalidSubnetID.NotFound" in problems[("run_instances", "SubnetId")]
    assert ec2_emulator.instances() == []


def test_check_stops_at_credentials_the_cloud_refuses(
    options: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    [problem] = EC2Provider(options, tmp_path).check()
    assert problem.option == ("credentials",) and "no AWS credentials" in problem.message
