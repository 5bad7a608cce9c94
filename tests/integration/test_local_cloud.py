"""The local cloud against real node processes: cloud-init, SSH (paramiko), lifecycle, safety.

Every node a test creates is destroyed in teardown (by its verified PID, never by name), and the
`sleep` stand-in for a recycled PID is killed by the PID we started.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import paramiko
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from launchplan.errors import ProviderError
from launchplan.providers import get_provider
from launchplan.providers.base import ERROR, PENDING, RUNNING, TERMINATED, NodeInfo, NodeRequest
from launchplan.providers.local import LocalProvider
from launchplan.providers.localnode.procinfo import (
    PARENT_ENV,
    orphaned_factories,
    read_json,
    starttime,
)
from tests.integration.cli_helpers import wait_for

pytestmark = pytest.mark.integration

RUN = "t1"
BOOT_TIMEOUT = 60.0
REPO = Path(__file__).resolve().parents[2]


def _keypair() -> tuple[str, str]:
    """(OpenSSH private key text, public line) for a fresh ed25519 key."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, public


class Cloud:
    """A LocalProvider plus the bookkeeping to destroy everything it made."""

    def __init__(self, run_dir: Path) -> None:
        provider = get_provider("local", {}, run_dir)
        assert isinstance(provider, LocalProvider)
        self.provider = provider
        self.created: list[str] = []

    def create(self, node: str, userdata: bytes, token: str | None = None) -> NodeInfo:
        service = node.split("/")[0]
        request = NodeRequest(
            run=RUN,
            service=service,
            node=node,
            token=token or f"tok-{node}",
            options={},
            userdata=userdata,
            tags={"cei:run": RUN, "cei:service": service, "cei:node": node},
        )
        info = self.provider.create(request)
        self.created.append(info.resource_id)
        return info

    def boot(self, node: str, userdata: bytes) -> NodeInfo:
        info = self.create(node, userdata)
        return self.provider.wait_running(info.resource_id, BOOT_TIMEOUT)

    def destroy_all(self) -> None:
        for resource_id in self.created:
            self.provider.destroy(resource_id)


def proc_gone(pid: int) -> bool:
    """No /proc entry at all: not even a zombie waiting for its parent to reap it."""
    return not Path(f"/proc/{pid}").exists()


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    made = Cloud(tmp_path / "runs" / RUN)
    try:
        yield made
    finally:
        made.destroy_all()


class Keys:
    def __init__(self) -> None:
        self.host_private, self.host_public = _keypair()
        self.client_private, self.client_public = _keypair()
        self.user_private, self.user_public = _keypair()
        self.client = paramiko.Ed25519Key.from_private_key(io.StringIO(self.client_private))
        self.user = paramiko.Ed25519Key.from_private_key(io.StringIO(self.user_private))


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def _cloud_config(keys: Keys, **extra: object) -> str:
    config: dict[str, object] = {
        "ssh_keys": {"ed25519_private": keys.host_private, "ed25519_public": keys.host_public},
        "ssh_deletekeys": False,
        "ssh_authorized_keys": [keys.client_public],
        **extra,
    }
    return "#cloud-config\n" + yaml.safe_dump(config)


def full_userdata(keys: Keys) -> bytes:
    """MIME multipart: cloud-config (most modules), a #! script and a boothook."""
    gz_b64 = base64.b64encode(gzip.compress(b"zipped\n")).decode()
    config = _cloud_config(
        keys,
        bootcmd=[
            'test -e "$CEI_NODE_ROOT/etc/app.conf" || echo bootcmd-before-files'
            ' >> "$CEI_NODE_ROOT/order.log"'
        ],
        write_files=[
            {"path": "/etc/app.conf", "content": "port = 5432\n"},
            {"path": "/etc/app.conf", "content": "more = 1\n", "append": True},
            {
                "path": "/opt/b64.txt",
                "content": base64.b64encode(b"b64!").decode(),
                "encoding": "b64",
                "permissions": "0640",
            },
            {"path": "/opt/gz.txt", "content": gz_b64, "encoding": "gz+b64"},
            {"path": "/var/lib/late.txt", "content": "late\n", "defer": True},
        ],
        users=[
            "default",
            {"name": "bob", "ssh_authorized_keys": [keys.user_public], "sudo": "ALL=(ALL) ALL"},
        ],
        runcmd=[
            'test -f "$CEI_NODE_ROOT/etc/app.conf" && test -f "$CEI_NODE_ROOT/var/lib/late.txt"'
            ' && echo runcmd-saw-files >> "$CEI_NODE_ROOT/order.log"',
            ["sh", "-c", 'echo "runcmd-list $HOME" >> "$CEI_NODE_ROOT/order.log"'],
        ],
        packages=["nginx"],
    )
    script = '#!/bin/sh\necho "script $(pwd)" >> "$CEI_NODE_ROOT/order.log"\n'
    message = MIMEMultipart()
    for text, subtype, name in (
        (config, "cloud-config", "cfg.yaml"),
        (script, "x-shellscript", "last.sh"),
        ("#cloud-boothook\necho boothook\n", "cloud-boothook", "hook.sh"),
    ):
        part = MIMEText(text, subtype)
        part.add_header("Content-Disposition", "attachment", filename=name)
        message.attach(part)
    return message.as_bytes()


def connect(
    info: NodeInfo, host_public: str, pkey: paramiko.PKey, user: str = "alice"
) -> paramiko.SSHClient:
    """paramiko with only the pinned host key trusted (RejectPolicy for anything else)."""
    assert info.address is not None
    client = paramiko.SSHClient()
    kind, blob = host_public.split()[:2]
    host = f"[{info.address}]:{info.port}"
    pinned = paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
    client.get_host_keys().add(host, kind, pinned)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        info.address,
        port=info.port,
        username=user,
        pkey=pkey,
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def run(
    client: paramiko.SSHClient, command: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=30, environment=env)
    out = stdout.read().decode()
    err = stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


def node_dir(cloud: Cloud, info: NodeInfo) -> Path:
    return cloud.provider.nodes_dir / info.resource_id.split("/", 1)[1].replace("/", "-")


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # reaped, even between open and read
        return False
    return state.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def booted(
    tmp_path_factory: pytest.TempPathFactory, keys: Keys
) -> Iterator[tuple[Cloud, NodeInfo]]:
    """One node booted from the full user-data, shared by the read-only tests."""
    made = Cloud(tmp_path_factory.mktemp("shared") / "runs" / RUN)
    try:
        info = made.boot("web/0", full_userdata(keys))
        yield made, info
    finally:
        made.destroy_all()


# -- cloud-init -------------------------------------------------------------------------------


def test_userdata_applied_in_cloud_init_order(booted: tuple[Cloud, NodeInfo]) -> None:
    cloud, info = booted
    assert info.state == RUNNING, info.error
    root = node_dir(cloud, info) / "root"
    home = node_dir(cloud, info) / "home"
    assert (root / "etc/app.conf").read_text() == "port = 5432\nmore = 1\n"
    assert (root / "opt/b64.txt").stat().st_mode & 0o777 == 0o640
    assert (root / "opt/b64.txt").read_bytes() == b"b64!"
    assert (root / "opt/gz.txt").read_bytes() == b"zipped\n"
    assert (root / "var/lib/late.txt").read_text() == "late\n"
    assert (root / "order.log").read_text().splitlines() == [
        "bootcmd-before-files",
        "runcmd-saw-files",
        f"runcmd-list {home}",
        f"script {home}",
    ]


def test_unsupported_modules_and_parts_are_reported(booted: tuple[Cloud, NodeInfo]) -> None:
    cloud, info = booted
    console = (node_dir(cloud, info) / "console.log").read_text()
    assert "cloud-init (local cloud): module 'packages' is not supported here; ignored" in console
    assert "text/cloud-boothook user-data part 2 (hook.sh) is not supported here" in console
    assert "users[].sudo is not supported here; ignored" in console
    assert "ssh_deletekeys" not in console


def test_status_json_describes_the_node(booted: tuple[Cloud, NodeInfo], keys: Keys) -> None:
    cloud, info = booted
    status = read_json(node_dir(cloud, info) / "status.json")
    assert status is not None
    assert status["state"] == "running"
    assert status["starttime"] == starttime(status["pid"])
    assert status["port"] == info.port
    assert status["address"] == info.address
    assert status["hostname"] == "web-0.t1.cei.local" == info.hostname
    assert status["errors"] == []
    assert status["host_keys"] == [" ".join(keys.host_public.split()[:2])]
    console = (node_dir(cloud, info) / "console.log").read_text()
    block = console.split("-----BEGIN SSH HOST KEY FINGERPRINTS-----")[1]
    block = block.split("-----END SSH HOST KEY FINGERPRINTS-----")[0]
    assert status["host_key_fingerprints"][0] in block


# -- SSH ----------------------------------------------------------------------------------------


def test_pinned_host_key_accepted_and_wrong_key_rejected(
    booted: tuple[Cloud, NodeInfo], keys: Keys
) -> None:
    _, info = booted
    with connect(info, keys.host_public, keys.client) as client:
        assert run(client, "echo ok") == (0, "ok\n", "")
    _, wrong = _keypair()
    with pytest.raises(paramiko.BadHostKeyException):
        connect(info, wrong, keys.client)


def test_only_authorized_keys_log_in(booted: tuple[Cloud, NodeInfo], keys: Keys) -> None:
    _, info = booted
    with connect(info, keys.host_public, keys.user, user="bob") as client:
        assert run(client, 'echo "$USER"') == (0, "bob\n", "")
    stranger = paramiko.Ed25519Key.from_private_key(io.StringIO(_keypair()[0]))
    with pytest.raises(paramiko.AuthenticationException):
        connect(info, keys.host_public, stranger)


def test_exec_argv_arrives_unchanged(booted: tuple[Cloud, NodeInfo], keys: Keys) -> None:
    _, info = booted
    argv = ["with space", 'it\'s "quoted"', "$HOME", "a;b", "`x`", "", "*", "\\n", "é"]
    script = 'for a in "$@"; do printf "<%s>\\n" "$a"; done'
    with connect(info, keys.host_public, keys.client) as client:
        status, out, err = run(client, shlex.join(["sh", "-c", script, "sh", *argv]))
    assert (status, err) == (0, "")
    assert out.splitlines() == [f"<{a}>" for a in argv]


def test_exec_streams_status_and_environment(booted: tuple[Cloud, NodeInfo], keys: Keys) -> None:
    cloud, info = booted
    home = node_dir(cloud, info) / "home"
    with connect(info, keys.host_public, keys.client) as client:
        assert run(client, "echo out; echo err >&2; exit 7") == (7, "out\n", "err\n")
        status, out, _ = run(
            client,
            'printf "%s|%s|%s|%s|%s|%s|%s\\n" "$PWD" "$HOME" "$USER" "$LANG" "$SHELL"'
            ' "$CEI_NODE_ROOT" "$GREETING"',
            env={"GREETING": "hi there"},
        )
    assert status == 0
    assert out.strip().split("|") == [
        str(home),
        str(home),
        "alice",
        "C.UTF-8",
        "/bin/sh",
        str(node_dir(cloud, info) / "root"),
        "hi there",
    ]


def test_sftp_starts_in_home_and_paths_work_for_exec(
    booted: tuple[Cloud, NodeInfo], keys: Keys
) -> None:
    cloud, info = booted
    home = str(node_dir(cloud, info) / "home")
    with connect(info, keys.host_public, keys.client) as client:
        sftp = client.open_sftp()
        assert sftp.normalize(".") == home
        sftp.putfo(io.BytesIO(b"payload\x00\xff"), "relative.bin")
        sftp.mkdir(f"{home}/sub", 0o700)
        sftp.putfo(io.BytesIO(b"abs"), f"{home}/sub/abs.txt")
        got = io.BytesIO()
        sftp.getfo(f"{home}/relative.bin", got)
        assert got.getvalue() == b"payload\x00\xff"
        sftp.close()
        assert run(client, f"cat {home}/sub/abs.txt relative.bin | od -c | head -1")[0] == 0
        assert run(client, f"cat {shlex.quote(home)}/sub/abs.txt") == (0, "abs", "")


def test_closing_the_channel_ends_the_command(booted: tuple[Cloud, NodeInfo], keys: Keys) -> None:
    _, info = booted
    with connect(info, keys.host_public, keys.client) as client:
        _, stdout, _ = client.exec_command("echo $$; exec sleep 300", timeout=30)
        pid = int(stdout.readline())
        assert pid_alive(pid)
        stdout.channel.close()
        wait_for(lambda: not pid_alive(pid), 15, "the command to be ended")


def test_shell_requests_are_refused(booted: tuple[Cloud, NodeInfo], keys: Keys) -> None:
    _, info = booted
    with connect(info, keys.host_public, keys.client) as client:
        transport = client.get_transport()
        assert transport is not None
        channel = transport.open_session(timeout=10)
        channel.invoke_shell()
        message = b""
        deadline = time.monotonic() + 10
        while not channel.exit_status_ready() and time.monotonic() < deadline:
            message += channel.recv_stderr(4096) if channel.recv_stderr_ready() else b""
            time.sleep(0.02)
        while channel.recv_stderr_ready():
            message += channel.recv_stderr(4096)
        assert channel.recv_exit_status() == 1
        assert b"interactive shells" in message
        channel.close()


# -- lifecycle ----------------------------------------------------------------------------------


def test_failing_runcmd_makes_the_node_error_but_ssh_still_works(cloud: Cloud, keys: Keys) -> None:
    userdata = _cloud_config(keys, runcmd=["true", "echo broken >&2; exit 3"]).encode()
    info = cloud.boot("db/0", gzip.compress(userdata))
    assert info.state == ERROR
    assert info.error is not None and info.error.startswith("runcmd[1] exited 3: broken")
    assert cloud.provider.describe(info.resource_id).state == ERROR
    with connect(info, keys.host_public, keys.client) as client:
        assert run(client, "echo still here") == (0, "still here\n", "")


def test_node_without_host_key_generates_one_and_prints_it(cloud: Cloud, keys: Keys) -> None:
    userdata = f"#cloud-config\nssh_authorized_keys: [{json.dumps(keys.client_public)}]\n"
    info = cloud.boot("gen/0", userdata.encode())
    assert info.state == RUNNING
    status = read_json(node_dir(cloud, info) / "status.json")
    assert status is not None
    console = (node_dir(cloud, info) / "console.log").read_text()
    block = console.split("-----BEGIN SSH HOST KEY FINGERPRINTS-----\n")[1]
    line = block.split("\n-----END SSH HOST KEY FINGERPRINTS-----")[0]
    assert line == f"256 {status['host_key_fingerprints'][0]} root@gen-0.t1.cei.local (ED25519)"
    with connect(info, status["host_keys"][0], keys.client) as client:
        assert run(client, "true")[0] == 0


def test_a_node_that_cannot_start_fails_its_create_and_the_factory_serves_on(
        cloud: Cloud, keys: Keys) -> None:
    """The factory answers before the node runs: what can keep a node from starting (here
    its console cannot be opened) is found by the factory and reported at create."""
    (cloud.provider.nodes_dir / "bad-0" / "console.log").mkdir(parents=True)
    with pytest.raises(ProviderError, match=r"failed to start \(error cannot start the node "
                                            r"in .*bad-0: .*Is a directory"):
        cloud.create("bad/0", _cloud_config(keys).encode())
    assert read_json(cloud.provider.nodes_dir / "bad-0" / "spawn.json") is None
    assert cloud.boot("good/0", _cloud_config(keys).encode()).state == RUNNING


def test_addresses_are_never_handed_out_twice_and_a_create_reads_no_other_node(
        cloud: Cloud, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Nth node's address comes from a counter: making it reads as many files as making
    the second did. A destroyed node's address is not given again, and a run whose counter is
    missing (made before it) starts past every address its nodes hold."""
    from launchplan.providers import local

    reads: list[Path] = []
    read_json_of = local.read_json

    def counted(path: Path) -> dict[str, object] | None:
        reads.append(path)
        return read_json_of(path)

    monkeypatch.setattr(local, "read_json", counted)
    userdata = _cloud_config(keys).encode()
    made, per_create = [], []
    for index in range(6):
        reads.clear()
        made.append(cloud.create(f"many/{index}", userdata))
        per_create.append(len(reads))
    assert per_create[1] == per_create[-1], per_create
    addresses = [info.address for info in made]
    cloud.provider.destroy(made[2].resource_id)
    (cloud.provider.nodes_dir / local.ADDRESS_COUNTER).unlink()
    addresses.append(cloud.create("many/6", userdata).address)
    addresses.append(cloud.create("many/7", userdata).address)
    assert len(set(addresses)) == len(addresses) == 8, addresses
    assert addresses[-2:] == [local._address(RUN, 6), local._address(RUN, 7)]


def test_create_is_idempotent_by_token(cloud: Cloud, keys: Keys) -> None:
    userdata = _cloud_config(keys).encode()
    first = cloud.create("api/0", userdata)
    again = cloud.create("api/0", userdata)
    assert again.resource_id == first.resource_id == f"{RUN}/api/0"
    assert again.state in (PENDING, RUNNING)
    running = cloud.provider.wait_running(first.resource_id, BOOT_TIMEOUT)
    pid = read_json(node_dir(cloud, running) / "status.json")["pid"]  # type: ignore[index]
    assert cloud.create("api/0", userdata).state == RUNNING
    assert read_json(node_dir(cloud, running) / "status.json")["pid"] == pid  # type: ignore[index]
    with pytest.raises(ProviderError, match="another token"):
        cloud.create("api/0", userdata, token="other")
    other = cloud.boot("api/1", userdata)
    assert other.address != running.address
    assert other.hostname == "api-1.t1.cei.local"
    assert (node_dir(cloud, running) / "userdata").stat().st_mode & 0o777 == 0o600
    assert node_dir(cloud, running).stat().st_mode & 0o777 == 0o700
    # A dead node with the same token is started again, on the same address.
    cloud.provider.destroy(other.resource_id)
    restarted = cloud.boot("api/1", userdata)
    assert restarted.state == RUNNING
    assert restarted.address == other.address


def test_node_outlives_the_process_that_created_it(cloud: Cloud, keys: Keys) -> None:
    creator = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from launchplan.providers.base import NodeRequest
        from launchplan.providers.local import LocalProvider
        provider = LocalProvider({{}}, Path({str(cloud.provider.run_dir)!r}))
        info = provider.create(NodeRequest({RUN!r}, "bg", "bg/0", "tok-bg/0", {{}},
                                           sys.stdin.buffer.read(), {{"cei:run": {RUN!r}}}))
        print(info.resource_id)
        """
    )
    cloud.created.append(f"{RUN}/bg/0")
    done = subprocess.run(
        [sys.executable, "-c", creator],
        input=_cloud_config(keys).encode(),
        capture_output=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )
    resource_id = done.stdout.decode().strip()
    info = cloud.provider.wait_running(resource_id, BOOT_TIMEOUT)
    assert info.state == RUNNING
    assert [n.resource_id for n in cloud.provider.find(RUN)] == [resource_id]
    with connect(info, keys.host_public, keys.client) as client:
        assert run(client, "echo alive") == (0, "alive\n", "")


def test_a_request_left_by_a_killed_cei_process_makes_no_node(cloud: Cloud, keys: Keys) -> None:
    """A launch SIGKILLed after handing the factory a request, before the node exists: the
    factory, still starting, must not make the node later, when `cei terminate` may already
    have looked for it and found nothing."""
    dies = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from launchplan.providers import local
        from launchplan.providers.base import NodeRequest

        def hand_over_and_die(factory, node_dir):
            factory._proc.stdin.write(f"{{node_dir}}\\n")
            factory._proc.stdin.flush()
            print(factory._proc.pid, flush=True)
            os._exit(0)  # as SIGKILL would: no answer read, nothing closed

        local._NodeFactory.spawn = hand_over_and_die
        provider = local.LocalProvider({{}}, Path({str(cloud.provider.run_dir)!r}))
        provider.create(NodeRequest({RUN!r}, "late", "late/0", "tok-late/0", {{}},
                                    sys.stdin.buffer.read(), {{"cei:run": {RUN!r}}}))
        """
    )
    cloud.created.append(f"{RUN}/late/0")  # destroyed at the end should it have been made
    done = subprocess.run([sys.executable, "-c", dies], input=_cloud_config(keys).encode(),
                          capture_output=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr.decode()
    factory = int(done.stdout)
    wait_for(lambda: not pid_alive(factory), 30, "the orphaned node factory to end")
    assert read_json(cloud.provider.nodes_dir / "late-0" / "spawn.json") is None
    assert cloud.provider.find(RUN) == []


def test_a_first_look_waits_for_a_factory_whose_cei_process_is_gone(cloud: Cloud) -> None:
    """A node such a factory had begun shows only once it has ended: the provider's first
    look waits for it, and never for the factory of a cei process that still runs."""
    run_dir = cloud.provider.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    stand_in = [sys.executable, "-c", "import time; time.sleep(1.5)"]
    orphan = subprocess.Popen(stand_in, cwd=run_dir,  # its "cei process" is not its parent
                              env={**os.environ, PARENT_ENV: str(2**22 + 7)})
    served = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                              cwd=run_dir, env={**os.environ, PARENT_ENV: str(os.getpid())})
    try:
        wait_for(lambda: orphaned_factories(run_dir) == [orphan.pid], 10, "the stand-in")
        assert cloud.provider.find(RUN) == []
        assert orphaned_factories(run_dir) == []
        assert served.poll() is None
    finally:
        for proc in (orphan, served):
            proc.kill()
            proc.wait()


def test_destroy_stops_node_and_its_commands(cloud: Cloud, keys: Keys) -> None:
    info = cloud.boot("job/0", _cloud_config(keys).encode())
    status = read_json(node_dir(cloud, info) / "status.json")
    assert status is not None
    node_pid = status["pid"]
    with connect(info, keys.host_public, keys.client) as client:
        _, out, _ = run(client, "nohup sleep 300 >/dev/null 2>&1 & echo $!")
    background = int(out)
    assert pid_alive(background)
    assert [n.resource_id for n in cloud.provider.find(RUN)] == [info.resource_id]
    assert (node_dir(cloud, info) / "userdata").exists()
    cloud.provider.destroy(info.resource_id)
    assert not pid_alive(node_pid)
    # its factory still serves this provider, and leaves no zombie of it behind
    wait_for(lambda: proc_gone(node_pid), 5, "the stopped node to be reaped")
    # the user-data held the node's host private key
    assert not (node_dir(cloud, info) / "userdata").exists()
    wait_for(lambda: not pid_alive(background), 10, "the background command to be stopped")
    assert cloud.provider.describe(info.resource_id).state == TERMINATED
    cloud.provider.destroy(info.resource_id)
    assert cloud.provider.find(RUN) == []
    assert read_json(node_dir(cloud, info) / "status.json")["state"] == "stopped"  # type: ignore[index]
    assert cloud.provider.describe(f"{RUN}/never/0").state == TERMINATED
    cloud.provider.destroy(f"{RUN}/never/0")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "300"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_destroy_never_kills_a_recycled_pid(
    cloud: Cloud, keys: Keys, sleeper: subprocess.Popen[bytes]
) -> None:
    info = cloud.boot("old/0", _cloud_config(keys).encode())
    cloud.provider.destroy(info.resource_id)
    path = node_dir(cloud, info)
    status = read_json(path / "status.json")
    assert status is not None
    # The node's PID "was recycled": status.json now names a live `sleep` process, once with
    # that process's real start time (only the command line differs), once with a wrong one.
    for started in (starttime(sleeper.pid), 1):
        status.update(pid=sleeper.pid, starttime=started, state="running")
        (path / "status.json").write_text(json.dumps(status))
        assert cloud.provider.describe(info.resource_id).state == TERMINATED
        assert cloud.provider.find(RUN) == []
        cloud.provider.destroy(info.resource_id)
        assert sleeper.poll() is None


def test_nodes_do_not_inherit_cei_s_environment(
        tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cloud credentials in cei's environment never reach a local node's processes."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "cei-test-credential")
    made = Cloud(tmp_path / "runs" / RUN)
    try:
        info = made.boot("db/0", full_userdata(keys))
        pid = read_json(node_dir(made, info) / "status.json")["pid"]  # type: ignore[index]
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"PATH=" in environ and b"cei-test-credential" not in environ
        with connect(info, keys.host_public, keys.client) as client:
            status, out, _ = run(client, "env")
        assert status == 0 and "PATH=" in out and "cei-test-credential" not in out
    finally:
        made.destroy_all()
