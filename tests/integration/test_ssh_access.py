"""Logging in the way users already do, against real OpenSSH sshd on loopback: ed25519, ECDSA
and RSA keys (RSA signed with SHA-2; SHA-1 refused), passphrase-protected keys, a real
ssh-agent, and an ssh config with Host patterns, Match and Include. Bastions are in
test_bastions.py (network namespaces)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from launchplan.errors import RemoteError, SSHUnavailable
from launchplan.remote import Session, SSHTarget
from launchplan.remote.route import Settings, node_target
from launchplan.state import Store
from tests.integration.cli_helpers import cei, cei_json
from tests.integration.conftest import SSHAgent, SSHDFactory, SSHDServer, free_port, keygen

pytestmark = pytest.mark.integration

PASSPHRASE = "correct horse battery staple"


def logs_in(target: SSHTarget) -> bool:
    with Session.open(target, retry_for=10) as session:
        return session.run("echo in").stdout_tail == "in\n"


def retries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "launchplan.remote" and "retrying" in r.message]


# ------------------------------------------------------------------ key types


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_host_and_user_keys_of_each_type(kind: str, sshd_factory: SSHDFactory,
                                         tmp_path: Path) -> None:
    """The server takes no SHA-1: an RSA login and host key must be signed with rsa-sha2."""
    user_key = tmp_path / f"user_{kind}"
    server = sshd_factory.start(
        host_key_kind=kind, authorized=(keygen(user_key, kind),),
        extra=("PubkeyAcceptedAlgorithms ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256",
               "HostKeyAlgorithms ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256"))
    assert server.host_key.startswith("ecdsa-sha2-nistp256 " if kind == "ecdsa" else "ssh-rsa ")
    assert logs_in(server.target(key_path=str(user_key)))


def test_server_offering_only_sha1_host_signatures_is_refused_at_once(
    sshd_factory: SSHDFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="launchplan.remote")
    server = sshd_factory.start(host_key_kind="rsa", extra=("HostKeyAlgorithms ssh-rsa",))
    with pytest.raises(RemoteError) as caught:
        Session.open(server.target(), retry_for=30)
    message = str(caught.value)
    assert f"{server.host}:{server.port}" in message
    assert "SHA-1" in message and "ssh-rsa" in message and "rsa-sha2-256/512" in message
    assert retries(caplog) == []  # waiting cannot cure it


@pytest.fixture
def sha1_login_server(tmp_path: Path) -> Iterator[tuple[SSHTarget, Path]]:
    """A server that accepts RSA logins only with ssh-rsa (SHA-1) signatures, as old servers
    and appliances do. OpenSSH 9 always advertises SHA-2 in server-sig-algs, so this one is
    asyncssh (the local cloud's SSH server), told to accept and advertise ssh-rsa alone."""
    import asyncssh

    user_key = tmp_path / "rsa_user"
    authorized = asyncssh.import_authorized_keys(keygen(user_key, "rsa"))
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    port = free_port()
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncssh.listen(
        "127.0.0.1", port, server_host_keys=[host_key], authorized_client_keys=authorized,
        signature_algs=["ssh-rsa"]))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        public = host_key.export_public_key().decode().strip()
        yield SSHTarget("127.0.0.1", port, "cei", str(user_key), public), user_key
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_server_accepting_rsa_logins_only_with_sha1_is_refused(
    sha1_login_server: tuple[SSHTarget, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="launchplan.remote")
    target, user_key = sha1_login_server
    with pytest.raises(RemoteError) as caught:
        Session.open(target, retry_for=30)
    message = str(caught.value)
    assert str(user_key) in message and "SHA-1" in message and "ssh-rsa" in message
    assert retries(caplog) == []


# ------------------------------------------------------------------ passphrases and the agent


@pytest.fixture
def locked_key(tmp_path: Path) -> tuple[Path, str]:
    """A passphrase-protected ed25519 key and its public line."""
    path = tmp_path / "locked"
    return path, keygen(path, passphrase=PASSPHRASE)


def test_passphrase_from_the_variable_the_plan_names(
    sshd_factory: SSHDFactory, locked_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    path, public = locked_key
    server = sshd_factory.start(authorized=(public,))
    monkeypatch.setenv("CEI_TEST_KEY_PASSPHRASE", PASSPHRASE)
    assert logs_in(server.target(key_path=str(path), passphrase_env="CEI_TEST_KEY_PASSPHRASE"))


def test_a_locked_key_without_its_passphrase_is_refused_saying_what_to_do(
    sshd_factory: SSHDFactory, locked_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    path, public = locked_key
    server = sshd_factory.start(authorized=(public,))
    monkeypatch.delenv("CEI_TEST_KEY_PASSPHRASE", raising=False)
    with pytest.raises(RemoteError) as unset:
        Session.open(server.target(key_path=str(path), passphrase_env="CEI_TEST_KEY_PASSPHRASE"))
    assert "set CEI_TEST_KEY_PASSPHRASE" in str(unset.value)
    assert f"ssh-add {path}" in str(unset.value)
    with pytest.raises(RemoteError) as unnamed:
        Session.open(server.target(key_path=str(path)))
    assert "ssh_key_passphrase_env" in str(unnamed.value)
    monkeypatch.setenv("CEI_TEST_KEY_PASSPHRASE", "wrong")
    with pytest.raises(RemoteError, match="passphrase in CEI_TEST_KEY_PASSPHRASE does not"):
        Session.open(server.target(key_path=str(path), passphrase_env="CEI_TEST_KEY_PASSPHRASE"))
    assert "wrong" not in str(unset.value) + str(unnamed.value)


def test_the_agent_unlocks_a_passphrase_key(
    sshd_factory: SSHDFactory, ssh_agent: SSHAgent, locked_key: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """No passphrase anywhere: the agent's copy is found by the key file's public half, even
    with no .pub beside it (read from the OpenSSH key's own header)."""
    path, public = locked_key
    server = sshd_factory.start(authorized=(public,))
    ssh_agent.add(path, PASSPHRASE)
    path.with_name(path.name + ".pub").unlink()
    monkeypatch.delenv("CEI_TEST_KEY_PASSPHRASE", raising=False)
    assert logs_in(server.target(key_path=str(path), passphrase_env="CEI_TEST_KEY_PASSPHRASE"))


def test_agent_keys_are_offered_with_an_explicit_key(
    sshd: SSHDServer, ssh_agent: SSHAgent, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger"
    keygen(stranger)  # a key the server does not know, named by the plan
    ssh_agent.add(Path(sshd.key_path))
    assert logs_in(sshd.target(key_path=str(stranger)))
    only = sshd.target(key_path=str(stranger), identities_only=True)
    with pytest.raises(SSHUnavailable, match="refused with every key offered"):
        Session.open(only, retry_for=1)


def test_the_agent_alone(sshd: SSHDServer, ssh_agent: SSHAgent, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))  # no default key files
    ssh_agent.add(Path(sshd.key_path))
    assert logs_in(sshd.target(key_path=None))


def test_no_key_at_all_is_refused_at_once(sshd: SSHDServer, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(RemoteError, match="no SSH key to log in to"):
        Session.open(sshd.target(key_path=None), retry_for=30)


# ------------------------------------------------------------------ the ssh config


def test_ssh_config_host_patterns_match_and_include(
    sshd: SSHDServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`node-a` is an alias: its HostName and Port come from an included file, its user from
    a Host pattern, its key from a Match block; a later `Host *` loses to all of them."""
    home = tmp_path / "home"
    (home / ".ssh" / "conf.d").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    (home / ".ssh" / "conf.d" / "10-nodes.conf").write_text(
        f"Host node-a\n  HostName {sshd.host}\n  Port {sshd.port}\n")
    (home / ".ssh" / "config").write_text(
        "Include conf.d/*.conf\n"
        f"Host node-*\n  User {sshd.user}\n  ServerAliveInterval 7\n"
        f"Match host {sshd.host}\n  IdentityFile {sshd.key_path}\n  IdentitiesOnly yes\n"
        f"Host *\n  Port {free_port()}\n  User nobody\n")
    target = node_target("node-a", port=None, user=None, key_path=None,
                         host_key=sshd.host_key)
    assert (target.host, target.port, target.user) == (sshd.host, sshd.port, sshd.user)
    assert target.identity_files == (sshd.key_path,) and target.identities_only
    assert target.keepalive == 7
    assert logs_in(target)


def test_plan_keys_win_over_the_ssh_config(
    sshd: SSHDServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(f"Host {sshd.host}\n  Port {free_port()}\n  User nobody\n"
                      f"  ProxyJump nowhere.invalid\n")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    target = node_target(sshd.host, port=sshd.port, user=sshd.user, key_path=sshd.key_path,
                         host_key=sshd.host_key,
                         settings=Settings(ssh_config=str(config), ssh_jump=()))
    assert target.jump == ()
    assert logs_in(target)


def test_a_launch_keeps_the_passphrase_variables_name_only(
    home: Path, sshd_factory: SSHDFactory, locked_key: tuple[Path, str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real command: the node's record names the variable, and no file under
    $CEI_HOME holds the passphrase; a later shell with the variable set reaches the node."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    path, public = locked_key
    server = sshd_factory.start(authorized=(public,))
    plan = tmp_path / "locked.yml"
    plan.write_text(yaml.safe_dump({"plan": "locked", "levels": [{"services": {"app": {
        "host": server.host, "ssh_port": server.port, "ssh_user": server.user,
        "ssh_key": str(path), "host_key": server.host_key,
        "ssh_key_passphrase_env": "CEI_TEST_KEY_PASSPHRASE",
        "ready": {"command": "true"}}}}]}))
    env = {"CEI_TEST_KEY_PASSPHRASE": PASSPHRASE}
    cei(home, "launch", str(plan), "--name", "locked", check=0, env=env)
    [record] = Store(home).nodes("locked")
    assert record.programs["ssh"] == {"ssh_key_passphrase_env": "CEI_TEST_KEY_PASSPHRASE"}
    stored = b"".join(f.read_bytes() for f in home.rglob("*") if f.is_file())
    assert PASSPHRASE.encode() not in stored
    cei(home, "status", "locked", check=0, env=env)
    [refused] = cei_json(home, "status", "locked", check=1)["nodes"]
    assert "set CEI_TEST_KEY_PASSPHRASE" in refused["message"]
    cei(home, "terminate", "locked", check=0, env=env)
