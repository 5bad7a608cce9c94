"""Plans on EC2 (boto3) and on libcloud's EC2 driver, through the real `cei` command.

The moto server answers the EC2 API over HTTP on loopback; the `ec2_nodes` fixture boots a
local-cloud node for every running instance, with the instance's user-data, so SSH, host-key
pinning, boot programs and outputs are exercised for real.
"""

from __future__ import annotations

import base64
import email
from pathlib import Path
from typing import Any

import pytest
import yaml

from launchplan.ctx.hostkeys import generate_client_key
from launchplan.ctx.userdata import parse_userdata
from launchplan.state import Store
from tests.integration.cli_helpers import cei, cei_json, ndjson, node_processes
from tests.integration.cloud_emulator import ACCESS_KEY, SECRET_KEY, EC2Emulator, NodeFarm

pytestmark = pytest.mark.integration

KEY_ENV = "CEI_TEST_CLOUD_KEY"
SECRET_ENV = "CEI_TEST_CLOUD_SECRET"
# the boot program's outputs: its config (which holds what earlier levels gave it) and index
BOOT_TO_OUTPUTS = (
    'printf \'{"config": %s, "index": "%s"}\' "$(cat "$CEI_CONFIG")" "$CEI_NODE_INDEX"'
    ' > "$CEI_OUTPUT"'
)



@pytest.fixture
def client_key(tmp_path: Path) -> str:
    path = tmp_path / "client_key"
    generate_client_key(path)
    return str(path)


def ec2_profile(emulator: EC2Emulator, image: str, key: str) -> dict[str, Any]:
    return {"driver": "ec2", "region": emulator.region, "endpoint_url": emulator.endpoint,
            "image": image, "size": "t3.micro", "ssh_user": "cei", "ssh_key": key,
            "tags": {"team": "cei"}}


def libcloud_profile(emulator: EC2Emulator, image: str, key: str) -> dict[str, Any]:
    return {"driver": "libcloud", "provider": "ec2",
            "options": {"host": emulator.host, "port": emulator.port, "secure": False,
                        "signature_version": "4", "region": emulator.region},
            "credentials": {"key": f"{{{{ env('{KEY_ENV}') }}}}",
                            "secret": f"{{{{ env('{SECRET_ENV}') }}}}"},
            "image": image, "size": "t3.micro", "ssh_user": "cei", "ssh_key": key}


def two_level_plan(tmp_path: Path, profile: dict[str, Any], port: int) -> Path:
    plan = {
        "plan": "twolevel",
        "clouds": {"there": profile},
        "defaults": {"cloud": "there", "ssh_port": port, "timeout": 120},
        "levels": [
            {"name": "base", "services": {
                "db": {"config": {"role": "db"}, "boot": {"command": BOOT_TO_OUTPUTS}},
            }},
            {"name": "apps", "services": {
                "web": {"count": 2,
                        "config": {"db_index": "{{ services.db.outputs.index }}",
                                   "db_address": "{{ services.db.nodes[0].address }}"},
                        "boot": {"command": BOOT_TO_OUTPUTS},
                        "ready": {"command": "test -s \"$CEI_OUTPUT\"", "timeout": 30}},
            }},
        ],
    }
    path = tmp_path / "twolevel.yml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


@pytest.fixture(params=["ec2", "libcloud"])
def cloud(request: pytest.FixtureRequest, ec2_nodes: NodeFarm, ec2_emulator: EC2Emulator,
          ec2_image: str, client_key: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv(KEY_ENV, ACCESS_KEY)
    monkeypatch.setenv(SECRET_ENV, SECRET_KEY)
    if request.param == "ec2":
        return ec2_profile(ec2_emulator, ec2_image, client_key)
    return libcloud_profile(ec2_emulator, ec2_image, client_key)


def live(emulator: EC2Emulator, run: str | None = None) -> list[dict[str, Any]]:
    filters = {"tag:cei:run": [run]} if run else {}
    return [i for i in emulator.instances(**filters)
            if i["State"]["Name"] not in ("terminated", "shutting-down")]


def test_two_level_plan_launches_and_terminates(
    home: Path, tmp_path: Path, cloud: dict[str, Any], ec2_nodes: NodeFarm,
    ec2_emulator: EC2Emulator, ec2_image: str,
) -> None:
    plan = two_level_plan(tmp_path, cloud, ec2_nodes.port)
    cei(home, "launch", str(plan), "--name", "tl", check=0)

    status = cei_json(home, "status", "tl")
    nodes = {n["node"]: n for n in status["nodes"]}
    assert set(nodes) == {"db/0", "web/0", "web/1"}
    assert all(n["state"] == "ready" for n in nodes.values())
    db = nodes["db/0"]
    assert db["address"].startswith("127.")
    for i in (0, 1):
        # db wrote its index as a string: templates never re-type what nodes write
        assert nodes[f"web/{i}"]["outputs"]["config"] == {
            "db_index": "0", "db_address": db["address"]}

    instances = live(ec2_emulator, "tl")
    assert len(instances) == 3
    pinned = {n.resource_id: n for n in Store(home).nodes("tl")}
    client = ec2_emulator.client()
    for instance in instances:
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        record = pinned[instance["InstanceId"]]
        assert tags["cei:run"] == "tl"
        assert tags["cei:service"] == record.service
        assert tags["cei:node"] == record.node
        assert instance["InstanceType"] == "t3.micro"
        assert instance["ImageId"] == ec2_image
        raw = client.describe_instance_attribute(
            InstanceId=instance["InstanceId"], Attribute="userData")["UserData"]["Value"]
        [part] = parse_userdata(base64.b64decode(raw))
        config = yaml.safe_load(part.text)
        # the key cei pinned is the one it sent: no trust on first use
        assert record.host_key is not None
        assert config["ssh_keys"]["ed25519_public"].split()[:2] == record.host_key.split()[:2]
        assert config["ssh_authorized_keys"]

    cei(home, "terminate", "tl", check=0)
    assert live(ec2_emulator) == []
    assert ec2_nodes.booted() == {}
    cei(home, "terminate", "tl", check=0)  # idempotent
    cei(home, "clean", "tl", check=0)


def test_other_host_key_is_refused(
    home: Path, tmp_path: Path, cloud: dict[str, Any], ec2_nodes: NodeFarm,
    ec2_emulator: EC2Emulator,
) -> None:
    ec2_nodes.wrong_host_key = True
    plan = two_level_plan(tmp_path, cloud, ec2_nodes.port)
    proc = cei(home, "launch", str(plan), "--name", "mitm", check=1)
    assert "host key mismatch" in proc.stderr
    nodes = {n["node"]: n for n in cei_json(home, "status", "mitm", "--cached", check=1)["nodes"]}
    assert nodes["db/0"]["state"] == "failed"
    assert "web/0" not in nodes  # the next level never started
    cei(home, "terminate", "mitm", check=0)
    assert live(ec2_emulator) == []


def test_throttling_during_launch_is_retried(
    home: Path, tmp_path: Path, cloud: dict[str, Any], ec2_nodes: NodeFarm,
    ec2_emulator: EC2Emulator,
) -> None:
    plan = two_level_plan(tmp_path, cloud, ec2_nodes.port)
    ec2_emulator.throttle(3)
    cei(home, "launch", str(plan), "--name", "thr", check=0)
    assert ec2_emulator.throttled == 3
    assert len(live(ec2_emulator, "thr")) == 3
    cei(home, "terminate", "thr", check=0)
    assert live(ec2_emulator) == []


def test_mixed_plan_passes_outputs_across_clouds(
    home: Path, tmp_path: Path, ec2_nodes: NodeFarm, ec2_emulator: EC2Emulator,
    ec2_image: str, client_key: str,
) -> None:
    plan = {
        "plan": "mixed",
        "clouds": {"aws": ec2_profile(ec2_emulator, ec2_image, client_key)},
        "defaults": {"timeout": 120},
        "levels": [
            {"services": {"here": {"cloud": "local", "config": {"word": "swordfish"},
                                   "boot": {"command": BOOT_TO_OUTPUTS}}}},
            {"services": {"there": {"cloud": "aws", "ssh_port": ec2_nodes.port,
                                    "config": {"word": "{{ services.here.outputs.config.word }}",
                                               "from": "{{ services.here.nodes[0].address }}"},
                                    "boot": {"command": BOOT_TO_OUTPUTS}}}},
            {"services": {"back": {"cloud": "local",
                                   "config": {"word": "{{ services.there.outputs.config.word }}",
                                              "from": "{{ services.there.nodes[0].address }}"},
                                   "boot": {"command": BOOT_TO_OUTPUTS}}}},
        ],
    }
    path = tmp_path / "mixed.yml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    cei(home, "launch", str(path), "--name", "mx", check=0)
    nodes = {n["node"]: n for n in cei_json(home, "status", "mx")["nodes"]}
    assert nodes["there/0"]["outputs"]["config"] == {
        "word": "swordfish", "from": nodes["here/0"]["address"]}
    assert nodes["back/0"]["outputs"]["config"] == {
        "word": "swordfish", "from": nodes["there/0"]["address"]}
    [instance] = live(ec2_emulator, "mx")
    assert {t["Key"]: t["Value"] for t in instance["Tags"]}["cei:node"] == "there/0"

    down = cei(home, "terminate", "mx", "--json", check=0)
    assert ndjson(down.stdout)[-1]["remaining"] == []
    assert live(ec2_emulator) == []
    assert node_processes(home) == []
    cei(home, "clean", "mx", check=0)
    cei(home, "terminate", "mx", check=0)


def test_terminate_from_a_later_shell_reads_credentials_from_the_environment(
    home: Path, tmp_path: Path, ec2_nodes: NodeFarm, ec2_emulator: EC2Emulator,
    ec2_image: str, client_key: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, ACCESS_KEY)
    monkeypatch.setenv(SECRET_ENV, SECRET_KEY)
    profile = libcloud_profile(ec2_emulator, ec2_image, client_key)
    cei(home, "launch", str(two_level_plan(tmp_path, profile, ec2_nodes.port)), "--name", "cr",
        check=0)
    stored = b"".join(p.read_bytes() for p in home.glob("cei.db*"))
    assert SECRET_KEY.encode() not in stored and ACCESS_KEY.encode() not in stored
    assert SECRET_ENV.encode() in stored  # the variable's name, never its value

    monkeypatch.delenv(SECRET_ENV)  # a later shell without the secret
    proc = cei(home, "terminate", "cr", check=4)
    assert f"set {SECRET_ENV} to reach the ec2 cloud of run cr" in proc.stdout + proc.stderr
    assert len(live(ec2_emulator, "cr")) == 3

    monkeypatch.setenv(SECRET_ENV, SECRET_KEY)
    cei(home, "terminate", "cr", check=0)
    assert live(ec2_emulator) == []


def test_render_and_launch_show_valid_multipart_userdata(
    home: Path, tmp_path: Path, ec2_emulator: EC2Emulator, ec2_image: str,
) -> None:
    (tmp_path / "base.cfg").write_text("#cloud-config\nruncmd:\n  - [echo, \"{{ run }}\"]\n")
    (tmp_path / "setup.sh").write_text("#!/bin/sh\necho node {{ service.index }}\n")
    (tmp_path / "late.cfg").write_text(
        "## template: jinja\n#cloud-config\nhostname: {{ v1.local_hostname }}\n")
    profile = {"driver": "ec2", "region": ec2_emulator.region,
               "endpoint_url": ec2_emulator.endpoint, "image": ec2_image, "size": "t3.micro"}
    plan = tmp_path / "parts.yml"
    plan.write_text(yaml.safe_dump({
        "plan": "parts", "clouds": {"aws": profile},
        "levels": [{"services": {"app": {"cloud": "aws",
                                         "userdata": ["base.cfg", "setup.sh", "late.cfg"]}}}],
    }))
    [node] = cei_json(home, "render", str(plan))["nodes"]
    shown = node["userdata"]
    assert "MIME multipart user-data, 3 parts" in shown
    for kind in ("text/cloud-config", "text/x-shellscript", "text/jinja2"):
        assert kind in shown
    assert "hostname: {{ v1.local_hostname }}" in shown  # cloud-init's own Jinja untouched
    assert "PRIVATE KEY" not in shown

    cei(home, "launch", str(plan), "--name", "parts", check=0)
    [instance] = live(ec2_emulator, "parts")
    raw = ec2_emulator.client().describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="userData")["UserData"]["Value"]
    message = email.message_from_bytes(base64.b64decode(raw))
    assert message.is_multipart() and message.get_content_type() == "multipart/mixed"
    parts = [p for p in message.walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == [
        "text/cloud-config", "text/x-shellscript", "text/jinja2"]
    config = yaml.safe_load(parts[0].get_payload(decode=True))
    assert config["runcmd"] == [["echo", "parts"]] and "ssh_keys" in config
    cei(home, "terminate", "parts", check=0)
    assert live(ec2_emulator) == []
