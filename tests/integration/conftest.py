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
    """A running OpenSSH sshd on loopback that accepts `key_path` for `user`."""

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


def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cei-test", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


def _answers_ssh(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.settimeout(1.0)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _start_sshd(config: Path, log_path: Path, host: str, port: int) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config), "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    deadline = time.monotonic() + SSHD_START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc
        if _answers_ssh(host, port):
            return proc
        time.sleep(0.1)
    return proc


@pytest.fixture(scope="session")
def sshd() -> Iterator[SSHDServer]:
    """Real OpenSSH sshd on 127.0.0.1 with its own host key and a generated client key."""
    require(shutil.which("sshd") or os.path.exists(SSHD), "OpenSSH sshd is not installed")
    require(shutil.which("ssh-keygen"), "ssh-keygen is not installed")
    base = Path(tempfile.mkdtemp(prefix="cei-sshd-"))
    try:
        host_key_path = base / "ssh_host_ed25519_key"
        host_key = _keygen(host_key_path)
        client_key_path = base / "client_ed25519"
        authorized = base / "authorized_keys"
        authorized.write_text(_keygen(client_key_path) + "\n")
        authorized.chmod(0o600)
        config = base / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key_path}",
                    f"PidFile {base / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized}",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "AllowTcpForwarding yes",
                    "AllowAgentForwarding no",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        log_path = base / "sshd.log"
        host = "127.0.0.1"
        proc: subprocess.Popen[bytes] | None = None
        for _ in range(SSHD_START_TRIES):
            port = free_port(host)
            proc = _start_sshd(config, log_path, host, port)
            if proc.poll() is None and _answers_ssh(host, port):
                break
            _stop(proc)
            proc = None
        if proc is None:
            pytest.fail(f"sshd did not start; its log:\n{log_path.read_text(errors='replace')}")
        try:
            yield SSHDServer(
                host=host,
                port=port,
                user=getpass.getuser(),
                key_path=str(client_key_path),
                host_key=host_key,
                pid=proc.pid,
                log_path=log_path,
            )
        finally:
            _stop(proc)
    finally:
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
