"""launchplan.remote against a real OpenSSH sshd on loopback."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from launchplan.errors import CommandTimeout, HostKeyMismatch, RemoteError, SSHUnavailable
from launchplan.remote import Session, SSHTarget, shell_command
from launchplan.remote.results import TAIL_BYTES
from tests.integration.conftest import SSHDServer, free_port, keygen

pytestmark = pytest.mark.integration

ARGV_PROGRAM = "import json, sys; print(json.dumps(sys.argv[1:]))"
TRICKY = [
    "with space",
    "it's",
    'say "hi"',
    "$HOME",
    "`id`",
    "$(id)",
    "a;b",
    "a|b",
    "line1\nline2",
    "",
    "héllo ✓ 日本",
    "-n",
    "*",
    "~",
    "back\\slash",
    "tab\there",
]


@pytest.fixture
def session(sshd: SSHDServer) -> Iterator[Session]:
    with Session.open(sshd.target(), retry_for=10) as opened:
        yield opened


def retry_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "launchplan.remote" and "retrying" in r.message]


def process_gone(pid: int) -> bool:
    """True when pid no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):  # reaped, even between open and read
        return True
    return any(
        line.split()[1:2] == ["Z"] for line in status.splitlines() if line.startswith("State:")
    )


def wait_gone(pid: int, bound: float = 10.0) -> bool:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.1)
    return process_gone(pid)


# ------------------------------------------------------------------ host keys and connecting


def test_pinned_key_is_accepted(session: Session, sshd: SSHDServer) -> None:
    assert session.host_key.split()[:2] == sshd.host_key.split()[:2]
    assert session.host_key_fingerprint.startswith("SHA256:")
    assert session.run("true").status == 0


def test_wrong_pinned_key_fails_at_once(
    sshd: SSHDServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="launchplan.remote")
    other = keygen(tmp_path / "other")
    with pytest.raises(HostKeyMismatch) as info:
        Session.open(sshd.target(host_key=other), retry_for=30)
    message = str(info.value)
    assert f"{sshd.host}:{sshd.port}" in message
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", "-"],
        input=sshd.host_key,
        text=True,
        capture_output=True,
        check=True,
    ).stdout.split()[1]
    assert fingerprint in message
    assert message.count("SHA256:") == 2
    assert retry_records(caplog) == []


def test_pinned_key_of_another_type_is_a_mismatch(
    sshd: SSHDServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="launchplan.remote")
    rsa = keygen(tmp_path / "rsa", "rsa")
    with pytest.raises(HostKeyMismatch, match="ssh-rsa"):
        Session.open(sshd.target(host_key=rsa), retry_for=30)
    assert retry_records(caplog) == []


def test_accept_new_logs_and_exposes_the_key(
    sshd: SSHDServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="launchplan.remote")
    target = sshd.target(host_key=None, policy="accept-new")
    with Session.open(target, retry_for=10) as opened:
        assert opened.host_key.split() == sshd.host_key.split()[:2]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("accept-new" in r.getMessage() for r in warnings)


def test_closed_port_retries_then_is_unavailable(
    sshd: SSHDServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="launchplan.remote")
    port = free_port()
    with pytest.raises(SSHUnavailable) as info:
        Session.open(sshd.target(port=port), connect_timeout=1, retry_for=1.5)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert sshd.user in message
    assert "ConnectionRefusedError" in message
    assert len(retry_records(caplog)) >= 2


def test_cancel_stops_retrying(sshd: SSHDServer) -> None:
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    try:
        with pytest.raises(SSHUnavailable, match="cancelled"):
            Session.open(sshd.target(port=free_port()), retry_for=600, cancel=cancel)
    finally:
        timer.cancel()


def test_refused_client_key_is_unavailable_after_retrying(
    sshd: SSHDServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="launchplan.remote")
    keygen(tmp_path / "stranger")
    with pytest.raises(SSHUnavailable, match="AuthenticationException"):
        Session.open(sshd.target(key_path=str(tmp_path / "stranger")), retry_for=1.0)
    assert len(retry_records(caplog)) >= 1


def test_unreadable_client_key_is_a_remote_error(sshd: SSHDServer, tmp_path: Path) -> None:
    (tmp_path / "junk").write_text("not a key\n")
    with pytest.raises(RemoteError, match="cannot use SSH key"):
        Session.open(sshd.target(key_path=str(tmp_path / "junk")), retry_for=1)


def test_default_keys_are_used_without_key_path(
    sshd: SSHDServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh_dir = tmp_path / "home" / ".ssh"
    ssh_dir.mkdir(parents=True)
    key = ssh_dir / "id_ed25519"
    key.write_bytes(Path(sshd.key_path).read_bytes())
    key.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with Session.open(sshd.target(key_path=None), retry_for=10) as opened:
        assert opened.run("true").status == 0


# ------------------------------------------------------------------ commands


def test_argv_arrives_byte_for_byte(session: Session) -> None:
    result = session.run(shell_command(["python3", "-c", ARGV_PROGRAM, *TRICKY]))
    assert result.status == 0, result.stderr_tail
    assert json.loads(result.stdout_tail) == TRICKY


def test_env_and_cwd_arrive_unchanged(session: Session, remote_dir: Path) -> None:
    env = {
        "PLAIN": "x",
        "SPACED": "a b  c",
        "QUOTES": 'it\'s "q"',
        "DOLLAR": "$HOME $(id) `id`",
        "NEWLINE": "one\ntwo",
        "EMPTY": "",
        "UNICODE": "ünï ✓",
    }
    cwd = remote_dir / "dir with 'quote'"
    cwd.mkdir()
    program = (
        "import json, os; "
        f"print(json.dumps([os.getcwd(), {{k: os.environ.get(k) for k in {sorted(env)!r}}}]))"
    )
    result = session.run_argv(["python3", "-c", program], cwd=str(cwd), env=env)
    assert result.status == 0, result.stderr_tail
    assert json.loads(result.stdout_tail) == [str(cwd), env]
    assert not list(cwd.iterdir()), "the environment file is removed once read"


def test_environment_values_are_never_in_any_command_line(session: Session,
                                                          remote_dir: Path) -> None:
    """While a program runs, no process on the node shows its environment in
    /proc/PID/cmdline, which every user of the node can read."""
    secret = "cei-secret-" + os.urandom(8).hex()
    marker = remote_dir / "running"
    program = f"open({str(marker)!r}, 'w').close(); import time; time.sleep(3)"
    box: dict[str, object] = {}
    worker = threading.Thread(target=lambda: box.update(result=session.run_argv(
        ["python3", "-c", program], cwd=str(remote_dir), env={"DB_PASSWORD": secret})))
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists()
        seen = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    seen.append(fh.read())
            except OSError:
                continue
        assert len(seen) > 3 and not [c for c in seen if secret.encode() in c]
    finally:
        worker.join(30)
    assert box["result"].status == 0  # type: ignore[attr-defined]


def test_exit_status_and_stderr_tail(session: Session) -> None:
    result = session.run("echo out; echo oops >&2; exit 3")
    assert result.status == 3
    assert result.stdout_tail == "out\n"
    assert result.stderr_tail == "oops\n"


def test_tails_keep_the_last_bytes(session: Session) -> None:
    result = session.run("i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done")
    assert result.status == 0
    assert len(result.stdout_tail) == TAIL_BYTES
    assert result.stdout_tail.endswith("line1999\n")


def test_stdin_is_at_eof(session: Session) -> None:
    result = session.run("cat; echo done", timeout=30)
    assert result.stdout_tail == "done\n"


def test_output_streams_in_order_while_running(session: Session, remote_dir: Path) -> None:
    go = remote_dir / "go"
    seen: list[tuple[str, bytes]] = []

    def on_output(stream: str, chunk: bytes) -> None:
        seen.append((stream, chunk))
        if b"waiting" in chunk:
            go.touch()  # the program is still running: it waits for this file

    command = (
        "echo first; sleep 0.3; echo second >&2; sleep 0.3; echo waiting; "
        f"i=0; while [ ! -e {go} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; "
        f"[ -e {go} ] && echo last"
    )
    result = session.run(command, timeout=60, on_output=on_output)
    assert result.status == 0
    merged: list[tuple[str, bytes]] = []
    for stream, chunk in seen:
        if merged and merged[-1][0] == stream:
            merged[-1] = (stream, merged[-1][1] + chunk)
        else:
            merged.append((stream, chunk))
    assert merged == [
        ("stdout", b"first\n"),
        ("stderr", b"second\n"),
        ("stdout", b"waiting\nlast\n"),
    ]


def test_timeout_stops_the_whole_process_tree(session: Session, remote_dir: Path) -> None:
    pids, group = remote_dir / "pids", remote_dir / "group"
    command = (f"echo $$ > {pids}; read -r l </proc/$$/stat; set -- ${{l##*) }}; "
               f"echo $3 > {group}; sleep 300 & echo $! >> {pids}; sh -c 'sleep 300' & wait")
    with pytest.raises(CommandTimeout, match="timeout of 1 s"):
        session.run(command, timeout=1)
    recorded = [int(word) for word in pids.read_text().split()]
    assert len(recorded) == 2
    for pid in recorded:
        assert wait_gone(pid), f"process {pid} still runs after the timeout"
    assert session.run("echo still usable").stdout_tail == "still usable\n"
    # the stop removed the pid file that named the command's group (other test workers'
    # commands come and go in the same directory meanwhile)
    pid_dir = Path(os.environ.get("TMPDIR", "/tmp"))
    named = set()
    for path in pid_dir.glob("cei-*.pid"):
        with contextlib.suppress(FileNotFoundError):
            named.add(path.read_text().strip())
    assert group.read_text().strip() not in named


def test_commands_after_close_raise_remote_error(sshd: SSHDServer) -> None:
    opened = Session.open(sshd.target(), retry_for=10)
    opened.close()
    with pytest.raises(RemoteError):
        opened.run("true")
    opened.close()


# ------------------------------------------------------------------ files


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_home_is_the_login_directory(session: Session, sshd: SSHDServer) -> None:
    assert session.home == pwd.getpwnam(sshd.user).pw_dir


def test_every_command_tells_the_login_directory_and_keeps_its_output(
        session: Session, sshd: SSHDServer) -> None:
    """The wrapper's header line (group and login directory) never reaches the output."""
    result = session.run("cd /; echo first; echo second >&2")
    assert (result.status, result.stdout_tail, result.stderr_tail) == (0, "first\n",
                                                                       "second\n")
    assert result.login_dir == pwd.getpwnam(sshd.user).pw_dir
    assert session.run("printf 'no newline'").stdout_tail == "no newline"


def test_makedirs_creates_parents_with_mode(session: Session, remote_dir: Path) -> None:
    leaf = remote_dir / "a" / "b c" / "d"
    session.makedirs(str(leaf), 0o700)
    for path in (remote_dir / "a", remote_dir / "a" / "b c", leaf):
        assert path.is_dir()
        assert mode_of(path) == 0o700
    leaf.chmod(0o755)
    session.makedirs(str(leaf), 0o750)
    assert mode_of(leaf) == 0o750


def test_makedirs_refuses_a_file_in_the_way(session: Session, remote_dir: Path) -> None:
    (remote_dir / "file").write_text("x")
    with pytest.raises(RemoteError, match="not a directory"):
        session.makedirs(str(remote_dir / "file" / "sub"))


def test_put_and_get_round_trip_with_mode(session: Session, remote_dir: Path) -> None:
    target = remote_dir / "config.json"
    data = bytes(range(256)) * 1000
    session.put(data, str(target), 0o600)
    assert target.read_bytes() == data
    assert mode_of(target) == 0o600
    session.put(b"second", str(target), 0o640)
    assert session.get(str(target)) == b"second"
    assert mode_of(target) == 0o640
    assert sorted(p.name for p in remote_dir.iterdir()) == ["config.json"]


def test_get_missing_file_is_none(session: Session, remote_dir: Path) -> None:
    assert session.get(str(remote_dir / "nope")) is None


def test_put_into_missing_directory_is_a_remote_error(session: Session, remote_dir: Path) -> None:
    with pytest.raises(RemoteError, match="writing"):
        session.put(b"x", str(remote_dir / "missing" / "f"))


def test_upload_makes_an_executable_that_runs(
    session: Session, remote_dir: Path, tmp_path: Path
) -> None:
    script = tmp_path / "boot.sh"
    script.write_text('#!/bin/sh\necho booted "$1"\n')
    remote = remote_dir / "boot.sh"
    session.upload(script, str(remote))
    assert mode_of(remote) == 0o700
    result = session.run(shell_command([str(remote), "a b"]))
    assert result.stdout_tail == "booted a b\n"


def test_upload_of_missing_local_file_is_a_remote_error(
    session: Session, remote_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(RemoteError, match="cannot read"):
        session.upload(tmp_path / "absent", str(remote_dir / "x"))


def test_target_rejects_unknown_policy_and_missing_pin() -> None:
    from launchplan.errors import UsageError

    with pytest.raises(UsageError):
        SSHTarget("127.0.0.1", 22, "u", None, None, policy="yolo")
    with pytest.raises(UsageError):
        SSHTarget("127.0.0.1", 22, "u", None, None)
