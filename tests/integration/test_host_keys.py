"""Host keys cei did not make, through the real `cei` command: console fingerprints (local cloud
and EC2 via the emulator), accept-new (warned), and existing hosts (a real OpenSSH sshd) pinned
by the plan's `host_key` or by ~/.ssh/known_hosts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from launchplan.ctx.hostkeys import fingerprint, generate_client_key, generate_host_key
from launchplan.errors import HostKeyMismatch
from launchplan.remote import Session
from launchplan.state import Store
from tests.integration.cli_helpers import cei, cei_json, ndjson
from tests.integration.cloud_emulator import EC2Emulator, NodeFarm
from tests.integration.conftest import SSHDServer

pytestmark = pytest.mark.integration

WRITE_OUTPUT = 'printf \'{"ok": true}\' > "$CEI_OUTPUT"'



def write_plan(tmp_path: Path, plan: dict[str, Any]) -> Path:
    path = tmp_path / f"{plan['plan']}.yml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def local_key_lines(home: Path, run: str, node: str) -> list[str]:
    status = json.loads((home / "runs" / run / "nodes" / node.replace("/", "-")
                         / "status.json").read_text())
    return list(status["host_keys"])


def test_console_fingerprints_pin_a_local_node(home: Path, tmp_path: Path) -> None:
    plan = write_plan(tmp_path, {"plan": "console", "levels": [{"services": {"app": {
        "host_key_policy": "console", "boot": {"command": WRITE_OUTPUT}}}}]})
    cei(home, "launch", str(plan), "--name", "con", check=0)
    [record] = Store(home).nodes("con")
    [presented] = local_key_lines(home, "con", "app/0")
    assert record.host_key is not None
    assert record.host_key.split()[:2] == presented.split()[:2]
    assert record.programs["host_key_fingerprints"] == [fingerprint(presented)]
    cei(home, "terminate", "con", check=0)  # the pinned key is checked again at teardown


def test_console_fingerprints_pin_an_ec2_node(
    home: Path, tmp_path: Path, ec2_nodes: NodeFarm, ec2_emulator: EC2Emulator, ec2_image: str
) -> None:
    key = tmp_path / "client_key"
    generate_client_key(key)
    plan = write_plan(tmp_path, {
        "plan": "ec2console",
        "clouds": {"aws": {"driver": "ec2", "region": ec2_emulator.region,
                           "endpoint_url": ec2_emulator.endpoint, "image": ec2_image,
                           "size": "t3.micro", "ssh_user": "cei", "ssh_key": str(key)}},
        "levels": [{"services": {"app": {"cloud": "aws", "ssh_port": ec2_nodes.port,
                                         "host_key_policy": "console", "timeout": 120,
                                         "boot": {"command": WRITE_OUTPUT}}}}]})
    cei(home, "launch", str(plan), "--name", "ec2con", check=0)
    [record] = Store(home).nodes("ec2con")
    assert record.programs["host_key_fingerprints"]
    assert record.host_key and fingerprint(record.host_key) in (
        record.programs["host_key_fingerprints"])
    cei(home, "terminate", "ec2con", check=0)


def test_accept_new_is_warned(home: Path, tmp_path: Path) -> None:
    plan = write_plan(tmp_path, {"plan": "tofu", "levels": [{"services": {"app": {
        "host_key_policy": "accept-new", "boot": {"command": WRITE_OUTPUT}}}}]})
    launch = cei(home, "launch", str(plan), "--name", "tofu", "--json", check=0)
    warnings = [e for e in ndjson(launch.stdout) if e.get("event") == "warning"]
    assert any("accept-new" in json.dumps(w) and "SHA256:" in json.dumps(w) for w in warnings), \
        launch.stdout
    [record] = Store(home).nodes("tofu")
    [presented] = local_key_lines(home, "tofu", "app/0")
    assert record.host_key and record.host_key.split()[:2] == presented.split()[:2]
    cei(home, "terminate", "tofu", check=0)


def static_plan(tmp_path: Path, sshd: SSHDServer, name: str, **extra: Any) -> Path:
    app: dict[str, Any] = {
        "host": sshd.host, "ssh_port": sshd.port, "ssh_user": sshd.user,
        "ssh_key": sshd.key_path,
        "boot": {"command": 'printf \'{"stage": "%s"}\' "$PWD" > "$CEI_OUTPUT"'},
        "ready": {"command": "test -s \"$CEI_OUTPUT\"", "timeout": 30},
        "terminate": {"command": "true"},
        **extra,
    }
    return write_plan(tmp_path, {"plan": name, "clouds": {"hosts": {"driver": "static"}},
                                 "defaults": {"cloud": "hosts", "timeout": 60},
                                 "levels": [{"services": {"app": app}}]})


def test_static_host_pinned_by_the_plan(home: Path, tmp_path: Path, sshd: SSHDServer) -> None:
    """Two nodes on one existing host, each in its own stage directory; terminate leaves
    nothing of the run behind on the host."""
    plan = static_plan(tmp_path, sshd, "static", host_key=sshd.host_key,
                       host=[sshd.host, sshd.host])
    cei(home, "launch", str(plan), "--name", "st", check=0)
    stages = [Path(n["outputs"]["stage"]) for n in cei_json(home, "status", "st")["nodes"]]
    assert [(s.parent.name, s.name) for s in stages] == [("app", "0"), ("app", "1")]
    assert all(s.is_dir() for s in stages)  # the sshd is this machine
    down = cei(home, "terminate", "st", "--json", check=0)
    summary = ndjson(down.stdout)[-1]
    assert summary["remaining"] == []
    # terminate leaves nothing behind on a host it did not create, not even empty directories
    assert not stages[0].parent.parent.exists() and stages[0].parent.parent.name == "st"
    assert "destroyed" not in {e.get("state") for e in ndjson(down.stdout)
                               if e.get("event") == "resource"}
    assert Store(home).resources("st") == []  # nothing was ever created


def test_static_host_pinned_by_known_hosts(
    home: Path, tmp_path: Path, sshd: SSHDServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_home = tmp_path / "user"
    (user_home / ".ssh").mkdir(parents=True)
    (user_home / ".ssh" / "known_hosts").write_text(
        f"[{sshd.host}]:{sshd.port} {sshd.host_key}\n")
    monkeypatch.setenv("HOME", str(user_home))
    cei(home, "launch", str(static_plan(tmp_path, sshd, "known")), "--name", "kh", check=0)
    [record] = Store(home).nodes("kh")
    assert record.host_key and record.host_key.split()[:2] == sshd.host_key.split()[:2]
    cei(home, "terminate", "kh", check=0)


def test_static_host_without_a_known_key_is_refused(
    home: Path, tmp_path: Path, sshd: SSHDServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "nobody"))
    proc = cei(home, "launch", str(static_plan(tmp_path, sshd, "unknown")), "--name", "uk",
               check=1)
    assert "host_key:" in proc.stderr and "known_hosts" in proc.stderr
    assert "accept-new" in proc.stderr
    [record] = Store(home).nodes("uk")  # the failed node still shows where it is
    assert (record.state, record.address, record.host_key) == ("failed", sshd.host, None)
    cei(home, "terminate", "uk", check=0)


def test_static_host_with_another_key_is_refused(
    home: Path, tmp_path: Path, sshd: SSHDServer
) -> None:
    other = tmp_path / "other"
    generate_client_key(other)  # any ed25519 public key that is not the server's
    plan = static_plan(tmp_path, sshd, "wrong",
                       host_key=(tmp_path / "other.pub").read_text().strip())
    proc = cei(home, "launch", str(plan), "--name", "wr", check=1)
    assert "host key mismatch" in proc.stderr
    cei(home, "terminate", "wr", check=0)


def test_console_policy_needs_a_cloud_with_a_console(
    home: Path, tmp_path: Path, sshd: SSHDServer
) -> None:
    plan = static_plan(tmp_path, sshd, "noconsole", host_key_policy="console")
    proc = cei(home, "launch", str(plan), "--name", "nc", check=1)
    assert "host_key_policy console needs a cloud console; the hosts cloud has none" in (
        proc.stderr)
    assert "with host_key: or known_hosts" in proc.stderr
    cei(home, "terminate", "nc", check=0)


def test_session_accepts_only_a_listed_fingerprint(sshd: SSHDServer) -> None:
    listed = sshd.target(host_key=None, fingerprints=(fingerprint(sshd.host_key),))
    session = Session.open(listed, retry_for=10)
    try:
        assert session.host_key.split()[:2] == sshd.host_key.split()[:2]
    finally:
        session.close()
    other = sshd.target(host_key=None, fingerprints=(generate_host_key().fingerprint,))
    with pytest.raises(HostKeyMismatch, match="not among the fingerprints"):
        Session.open(other, retry_for=10)
