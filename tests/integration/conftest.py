"""Fixtures that start real parts (sshd, ...) on loopback and stop them again by PID."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from launchplan.remote import SSHTarget
from launchplan.state import Store
from tests.conftest import require
from tests.integration.cli_helpers import cei, node_processes
from tests.integration.cloud_emulator import (  # noqa: F401  (fixtures for every module)
    _ec2_server,
    _node_farm,
    ec2_emulator,
    ec2_image,
    ec2_key_pair,
    ec2_nodes,
)

SSHD = "/usr/sbin/sshd"
SSHD_START_SECONDS = 10.0
SSHD_START_TRIES = 3


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class SSHDServer:
    """A running OpenSSH sshd that accepts `key_path` for `user`."""

    host: str
    port: int
    user: str
    key_path: str
    host_key: str
    pid: int
    log_path: Path

    def target(self, **changes: object) -> SSHTarget:
        """An SSHTarget pinned to this server's host key; keywords override fields."""
        fields: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "key_path": self.key_path,
            "host_key": self.host_key,
        }
        fields.update(changes)
        return SSHTarget(**fields)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def keygen(path: Path, kind: str = "ed25519", passphrase: str = "") -> str:
    """A new key pair made by ssh-keygen at `path`; returns the public line."""
    args = ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", "cei-test", "-f", str(path)]
    if kind == "rsa":
        args += ["-b", "2048"]
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    return path.with_name(path.name + ".pub").read_text().strip()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _listening(log_path: Path, proc: subprocess.Popen[bytes]) -> bool:
    """Wait (bounded) until sshd logs that it listens; False if it exits or never does."""
    deadline = time.monotonic() + SSHD_START_SECONDS
    while time.monotonic() < deadline and proc.poll() is None:
        if "Server listening on" in log_path.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


class SSHDFactory:
    """Starts OpenSSH sshds (on loopback, or inside a network namespace) and stops every one
    of them, by PID, in `close()`."""

    def __init__(self, base: Path) -> None:
        require(shutil.which("sshd") or os.path.exists(SSHD), "OpenSSH sshd is not installed")
        require(shutil.which("ssh-keygen"), "ssh-keygen is not installed")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.base = base
        self.client_key = base / "client_ed25519"
        self.client_public = keygen(self.client_key)
        self._procs: list[subprocess.Popen[bytes]] = []
        self._count = 0

    def start(self, *, host: str = "127.0.0.1", port: int | None = None,
              host_key_kind: str = "ed25519", authorized: tuple[str, ...] = (),
              extra: tuple[str, ...] = (), netns: str | None = None) -> SSHDServer:
        """An sshd with a new host key, accepting the client key (and `authorized` lines);
        `extra` are more sshd_config lines. A free port is picked unless given."""
        self._count += 1
        base = self.base / f"sshd{self._count}"
        base.mkdir()
        host_key_path = base / f"ssh_host_{host_key_kind}_key"
        host_key = keygen(host_key_path, host_key_kind)
        keys = base / "authorized_keys"
        keys.write_text("\n".join((self.client_public, *authorized)) + "\n")
        keys.chmod(0o600)
        config = base / "sshd_config"
        config.write_text("\n".join([
            f"ListenAddress {host}",
            f"HostKey {host_key_path}",
            f"PidFile {base / 'sshd.pid'}",
            f"AuthorizedKeysFile {keys}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "AllowTcpForwarding yes",
            "AllowAgentForwarding no",
            "Subsystem sftp internal-sftp",
            *extra,
            "",
        ]))
        log_path = base / "sshd.log"
        prefix = ["ip", "netns", "exec", netns] if netns else []
        for _ in range(SSHD_START_TRIES):
            chosen = port or free_port(host)
            with log_path.open("ab") as log:
                proc = subprocess.Popen(
                    [*prefix, SSHD, "-D", "-e", "-f", str(config), "-p", str(chosen)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            self._procs.append(proc)
            if _listening(log_path, proc):
                return SSHDServer(host=host, port=chosen, user=getpass.getuser(),
                                  key_path=str(self.client_key), host_key=host_key,
                                  pid=proc.pid, log_path=log_path)
            _stop(proc)
        pytest.fail(f"sshd did not start; its log:\n{log_path.read_text(errors='replace')}")

    def close(self) -> None:
        for proc in self._procs:
            _stop(proc)


@pytest.fixture(scope="session")
def _sshd_factory() -> Iterator[SSHDFactory]:
    base = Path(tempfile.mkdtemp(prefix="cei-sshd-"))
    factory = SSHDFactory(base)
    try:
        yield factory
    finally:
        factory.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd(_sshd_factory: SSHDFactory) -> SSHDServer:
    """Real OpenSSH sshd on 127.0.0.1 with its own host key and a generated client key."""
    return _sshd_factory.start()


@pytest.fixture
def sshd_factory(tmp_path: Path) -> Iterator[SSHDFactory]:
    """For tests that need sshds of their own (other keys, algorithms, namespaces): each is
    stopped when the test ends."""
    base = tmp_path / "sshds"
    base.mkdir()
    factory = SSHDFactory(base)
    try:
        yield factory
    finally:
        factory.close()


@dataclass(frozen=True)
class SSHAgent:
    """A real ssh-agent started by a test; SSH_AUTH_SOCK points at it while the test runs."""

    socket: Path
    pid: int

    def add(self, key: Path, passphrase: str = "") -> None:
        """ssh-add the key, answering its passphrase prompt through SSH_ASKPASS."""
        askpass = self.socket.parent / "askpass"
        askpass.write_text('#!/bin/sh\nprintf "%s\\n" "$CEI_TEST_PASSPHRASE"\n')
        askpass.chmod(0o700)
        env = {**os.environ, "SSH_AUTH_SOCK": str(self.socket), "SSH_ASKPASS": str(askpass),
               "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0",
               "CEI_TEST_PASSPHRASE": passphrase}
        subprocess.run(["ssh-add", str(key)], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, check=True, timeout=30)


@pytest.fixture
def ssh_agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[SSHAgent]:
    """A fresh ssh-agent on a private socket, killed by PID when the test ends."""
    require(shutil.which("ssh-agent") and shutil.which("ssh-add"), "ssh-agent is not installed")
    base = Path(tempfile.mkdtemp(prefix="cei-agent-"))  # short: a socket path has a limit
    sock = base / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def answers() -> bool:  # ssh-add -l exits 2 only when it cannot reach the agent
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        return sock.exists() and subprocess.run(
            ["ssh-add", "-l"], env=env, stdin=subprocess.DEVNULL, capture_output=True,
            timeout=10).returncode != 2

    try:
        deadline = time.monotonic() + 10
        while not answers() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if not answers():  # its socket may exist before the agent answers on it
            pytest.fail("ssh-agent did not answer on its socket")
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield SSHAgent(sock, proc.pid)
    finally:
        _stop(proc)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def store_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where a test's `cei` commands record runs: SQLite in $CEI_HOME, or, for a test marked
    `@both_stores` (cli_helpers), once more in a fresh PostgreSQL database that CEI_STATE
    names (its password in PGPASSWORD)."""
    backend: str = getattr(request, "param", "sqlite")
    if backend == "postgresql":
        monkeypatch.setenv("CEI_STATE", request.getfixturevalue("pg_url"))
    else:
        monkeypatch.delenv("CEI_STATE", raising=False)
    return backend


@pytest.fixture
def home(cei_home: Path, store_backend: str) -> Iterator[Path]:
    """A private $CEI_HOME for tests that run the real `cei`. Whatever a test leaves running is
    terminated afterwards, and any process still working in it is killed by pid."""
    try:
        yield cei_home
    finally:
        runs = cei_home / "runs"
        done = set()
        if (cei_home / "cei.db").exists():
            with Store(cei_home) as store:
                done = {r.name for r in store.list_runs() if r.status == "terminated"}
        for run in sorted(runs.iterdir()) if runs.is_dir() else []:
            if run.name not in done:
                cei(cei_home, "terminate", run.name)
        for pid in node_processes(cei_home):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def remote_dir(sshd: SSHDServer) -> Iterator[Path]:
    """A fresh directory the sshd user may use; the sshd runs here, so it is a local path too."""
    path = Path(tempfile.mkdtemp(prefix="cei-remote-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
