"""Reaching hosts through bastions, with the real `cei` and real OpenSSH sshd in network
namespaces: client -- hop1 -- hop2 -- target, each reachable only from its neighbours, and
cei itself running in the client namespace."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.cli_helpers import cei
from tests.integration.conftest import SSHDFactory, SSHDServer, keygen
from tests.integration.netns import Line

pytestmark = pytest.mark.integration

HOP2_PORT = 2222  # one sshd off port 22, so known_hosts must say [host]:port
WRITE_OUTPUT = 'printf \'{"host": "%s"}\' "$(hostname)" > "$CEI_OUTPUT"'


@dataclass(frozen=True)
class Net:
    line: Line
    hop1: SSHDServer
    hop2: SSHDServer
    target: SSHDServer
    client_key: Path

    def run(self, home: Path, *args: str, check: int, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        return cei(home, *args, check=check, env=env, netns=self.line.netns["client"])


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    line = Line("client", "hop1", "hop2", "target")
    base = Path(tempfile.mkdtemp(prefix="cei-bastions-"))
    factory = SSHDFactory(base)
    try:
        servers = {
            name: factory.start(host=line.address(name), port=port, netns=line.netns[name],
                                extra=("LogLevel VERBOSE",))
            for name, port in (("hop1", 22), ("hop2", HOP2_PORT), ("target", 22))
        }
        yield Net(line, servers["hop1"], servers["hop2"], servers["target"],
                  factory.client_key)
    finally:
        factory.close()
        line.close()
        subprocess.run(["rm", "-rf", str(base)], check=False, timeout=30)


def plan_file(tmp_path: Path, name: str, app: dict[str, Any],
              cloud: dict[str, Any] | None = None) -> Path:
    service = {"cloud": "hosts", "boot": {"command": WRITE_OUTPUT},
               "ready": {"command": 'test -s "$CEI_OUTPUT"', "timeout": 30},
               "terminate": {"command": "true"}, "timeout": 60, **app}
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump({
        "plan": name, "clouds": {"hosts": {"driver": "static", **(cloud or {})}},
        "levels": [{"services": {"app": service}}]}))
    return path


def logins(server: SSHDServer) -> int:
    return server.log().count("Accepted publickey")


def test_a_host_reachable_only_through_a_bastion(home: Path, tmp_path: Path, net: Net) -> None:
    """hop2 stands in for a private host: the client cannot reach it, hop1 can. The plan
    names hop1 in ssh_jump with its key pinned; launch, status and terminate all go through."""
    behind, bastion = net.hop2, net.hop1
    assert not net.line.can_connect("client", behind.host, behind.port)
    assert net.line.can_connect("client", bastion.host, bastion.port)
    plan = plan_file(tmp_path, "jump", {
        "host": behind.host, "ssh_port": behind.port, "ssh_user": behind.user,
        "ssh_key": str(net.client_key), "host_key": behind.host_key,
        "ssh_jump": [{"host": f"{bastion.user}@{bastion.host}:{bastion.port}",
                      "host_key": bastion.host_key}]})
    before = logins(bastion)
    net.run(home, "launch", str(plan), "--name", "jump", check=0)
    status = json.loads(net.run(home, "status", "jump", "--json", check=0).stdout)
    assert status["healthy"] and status["nodes"][0]["outputs"]["host"]
    net.run(home, "terminate", "jump", check=0)
    assert logins(bastion) > before  # every connection went through it


def test_a_two_hop_chain_from_the_ssh_config(home: Path, tmp_path: Path, net: Net) -> None:
    """The plan names only an alias. ~/.ssh/config (with an Include) gives its HostName and
    ProxyJump hop2, whose own ProxyJump is hop1; known_hosts is hashed and holds hop2 as
    [host]:2222; the target's key is pinned from known_hosts too."""
    assert not net.line.can_connect("client", net.target.host, 22)
    user_home = tmp_path / "user"
    ssh = user_home / ".ssh"
    (ssh / "config.d").mkdir(parents=True)
    (ssh / "config").write_text(
        "Include config.d/*\n"
        f"Host app\n  HostName {net.target.host}\n  ProxyJump hop2\n"
        f"Host *\n  User {net.target.user}\n  IdentityFile {net.client_key}\n")
    (ssh / "config.d" / "hops").write_text(
        f"Host hop2\n  HostName {net.hop2.host}\n  Port {HOP2_PORT}\n  ProxyJump hop1\n"
        f"Host hop1\n  HostName {net.hop1.host}\n")
    known = ssh / "known_hosts"
    known.write_text(f"{net.hop1.host} {net.hop1.host_key}\n"
                     f"[{net.hop2.host}]:{HOP2_PORT} {net.hop2.host_key}\n"
                     f"{net.target.host} {net.target.host_key}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known)], check=True,
                   capture_output=True, timeout=30)
    assert net.hop1.host not in known.read_text()  # really hashed
    env = {"HOME": str(user_home), "SSH_AUTH_SOCK": ""}
    plan = plan_file(tmp_path, "chain", {"host": "app"})
    hops = (logins(net.hop1), logins(net.hop2))
    net.run(home, "launch", str(plan), "--name", "chain", check=0, env=env)
    net.run(home, "status", "chain", check=0, env=env)
    net.run(home, "terminate", "chain", check=0, env=env)
    assert logins(net.hop1) > hops[0] and logins(net.hop2) > hops[1]


def test_a_bastion_with_a_wrong_or_unknown_key_is_refused(
    home: Path, tmp_path: Path, net: Net
) -> None:
    behind, bastion = net.hop2, net.hop1
    other = keygen(tmp_path / "other")
    hop = f"{bastion.user}@{bastion.host}"
    app = {"host": behind.host, "ssh_port": behind.port, "ssh_user": behind.user,
           "ssh_key": str(net.client_key), "host_key": behind.host_key}
    reached = logins(behind)
    wrong = plan_file(tmp_path, "wrong", {**app, "ssh_jump": [{"host": hop, "host_key": other}]})
    refused = net.run(home, "launch", str(wrong), "--name", "wrong", check=1)
    assert f"host key mismatch for jump host {hop} ({bastion.host}:22)" in refused.stderr
    net.run(home, "terminate", "wrong", check=0)
    nobody = {"HOME": str(tmp_path / "nobody")}  # an empty known_hosts
    unknown = plan_file(tmp_path, "unknown", app, cloud={"ssh_jump": [hop]})
    refused = net.run(home, "launch", str(unknown), "--name", "unknown", check=1, env=nobody)
    assert f"jump host {hop} ({bastion.host}:22): no host key is known" in refused.stderr
    net.run(home, "terminate", "unknown", check=0, env=nobody)
    assert logins(behind) == reached  # neither ever got past the bastion
