"""Two machines sharing one PostgreSQL store, through the real `cei` command.

Each "machine" is a CEI_HOME of its own (its run directories, logs and local-cloud nodes);
CEI_STATE names the same database for both, its password only in PGPASSWORD.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import yaml

from launchplan.state import Store
from launchplan.state.sealing import new_key
from tests.integration.cli_helpers import PLANS, REPO, cei, cei_json, node_processes, wait_for
from tests.integration.cloud_emulator import EC2Emulator, NodeFarm
from tests.integration.killtrial import run_trial, write_plan
from tests.pgserver import PostgresServer
from tests.unit.storehelp import execute

pytestmark = pytest.mark.integration

COUNTED = PLANS / "counted.yml"


@pytest.fixture
def machines(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[tuple[Path, Path]]:
    """Two CEI_HOMEs on one PostgreSQL store; what they leave is terminated from where it was
    launched, and any node process still in either is killed by pid."""
    monkeypatch.setenv("CEI_STATE", pg_url)
    monkeypatch.setenv("CEI_STATE_KEY", new_key())
    homes = (tmp_path / "machine-a", tmp_path / "machine-b")
    try:
        yield homes
    finally:
        for home in homes:
            runs = home / "runs"
            for run in sorted(runs.iterdir()) if runs.is_dir() else []:
                cei(home, "terminate", run.name)
            for pid in node_processes(home):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


def test_a_run_launched_on_one_machine_is_listed_and_refused_elsewhere(
        machines: tuple[Path, Path]) -> None:
    a, b = machines
    cei(a, "launch", str(COUNTED), "--name", "shared", "--var", "n=2", check=0)

    [listed] = cei_json(b, "list")["runs"]
    assert (listed["run"], listed["status"], listed["nodes"]) == ("shared", "ready", {"ready": 2})
    history = cei_json(b, "history", "shared")
    assert [r["state"] for r in history["resources"]] == ["created", "created"]
    assert history["events"][0]["kind"] == "run.started"

    where = f"unreachable (local node on {socket.gethostname()}, CEI_HOME {a.resolve()})"
    status = cei_json(b, "status", "shared", check=1)
    assert [(n["node"], n["healthy"], n["message"]) for n in status["nodes"]] == [
        ("worker/0", False, where), ("worker/1", False, where)]

    down = cei(b, "terminate", "shared", "--json", check=4)
    summary = json.loads(down.stdout.splitlines()[-1])
    assert sorted(r["node"] for r in summary["remaining"]) == ["worker/0", "worker/1"]
    assert {r["message"] for r in summary["remaining"]} == {where}
    assert len(node_processes(a)) >= 2  # refused: the nodes were left alone
    assert cei_json(a, "status", "shared")["healthy"] is True

    cei(a, "terminate", "shared", check=0)
    assert node_processes(a) == []
    assert cei_json(b, "list")["runs"][0]["status"] == "terminated"


def farm_plan(tmp_path: Path, emulator: EC2Emulator, image: str, port: int) -> Path:
    """Two EC2 instances (nodes of the farm) with programs over SSH and no ssh_key of the
    plan's: cei logs in with the run's own key."""
    plan = {
        "plan": "farmed",
        "clouds": {"aws": {"driver": "ec2", "region": emulator.region,
                           "endpoint_url": emulator.endpoint, "image": image,
                           "size": "t3.micro", "ssh_user": "cei"}},
        "defaults": {"cloud": "aws", "ssh_port": port, "timeout": 120},
        "levels": [{"services": {"app": {
            "count": 2,
            "boot": {"command": 'echo "{\\"at\\": \\"$CEI_NODE\\"}" > "$CEI_OUTPUT"'},
            "ready": {"command": 'test -s "$CEI_OUTPUT"', "timeout": 30},
            "terminate": {"command": "true"},
        }}}],
    }
    path = tmp_path / "farmed.yml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def alive(emulator: EC2Emulator) -> list[str]:
    return [i["InstanceId"] for i in emulator.instances()
            if i["State"]["Name"] not in ("terminated", "shutting-down")]


def test_cloud_nodes_are_checked_and_terminated_from_another_machine(
        machines: tuple[Path, Path], tmp_path: Path, ec2_nodes: NodeFarm,
        ec2_emulator: EC2Emulator, ec2_image: str) -> None:
    a, b = machines
    plan = farm_plan(tmp_path, ec2_emulator, ec2_image, ec2_nodes.port)
    cei(a, "launch", str(plan), "--name", "far", check=0)
    with Store(a) as store:
        key = store.run_key("far", "client_key")
        assert key is not None and key.sealed_key is not None
        assert "PRIVATE KEY" not in key.sealed_key

    without_key = cei(b, "status", "far", "--json", env={"CEI_STATE_KEY": ""}, check=1)
    messages = {n["message"] for n in json.loads(without_key.stdout)["nodes"]}
    assert len(messages) == 1 and "set CEI_STATE_KEY" in messages.pop()
    wrong = cei(b, "status", "far", "--json", env={"CEI_STATE_KEY": new_key()}, check=1)
    assert all("another key than CEI_STATE_KEY" in n["message"]
               for n in json.loads(wrong.stdout)["nodes"])

    status = cei_json(b, "status", "far")  # the ready program ran again, from machine b
    assert status["healthy"] is True and len(status["nodes"]) == 2
    copy = b / "runs" / "far" / "client_key"
    assert copy.stat().st_mode & 0o777 == 0o600
    assert copy.read_text() == (a / "runs" / "far" / "client_key").read_text()

    down = cei(b, "terminate", "far", check=0)
    assert "warning" not in down.stderr  # the terminate programs ran over SSH from b
    assert alive(ec2_emulator) == [] and ec2_nodes.booted() == {}


def test_two_launches_of_one_name_from_both_machines_one_wins(
        machines: tuple[Path, Path]) -> None:
    a, b = machines
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for run in ("race1", "race2"):
        launches = [subprocess.Popen(
            [sys.executable, "-m", "launchplan", "launch", str(COUNTED), "--name", run,
             "--var", "n=2", "--json"], env={**env, "CEI_HOME": str(home)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for home in (a, b)]
        outputs = [p.communicate(timeout=180) for p in launches]
        statuses = [p.returncode for p in launches]
        assert sorted(statuses) == [0, 2], outputs
        winner, loser = (a, b) if statuses[0] == 0 else (b, a)
        lost = outputs[statuses.index(2)]
        assert "already exists" in lost[1] and "Traceback" not in lost[1]
        assert not (loser / "runs" / run).exists()  # nothing made on the loser's side
        with Store(winner) as store:
            nodes = store.nodes(run)
            assert [n.state for n in nodes] == ["ready", "ready"]
            assert {n.cloud["site"].split(":", 1)[1] for n in nodes} == {str(winner.resolve())}
            assert len(store.resources(run)) == 2


def test_sigkill_of_a_launch_then_terminate_from_the_other_machine_leaks_nothing(
        machines: tuple[Path, Path], tmp_path: Path, ec2_emulator: EC2Emulator,
        ec2_image: str) -> None:
    a, b = machines
    plan = write_plan(tmp_path, ec2_emulator, ec2_image)
    rng = random.Random(20261130)  # killed in start-up, then (from the record) mid-create,
    # and late enough that even a loaded machine has asked the cloud for nodes
    delays = (-rng.uniform(0.0, 0.5), rng.uniform(0.0, 1.5), rng.uniform(3.0, 4.0))
    trials = [run_trial(ec2_emulator, a, plan, f"kill{i}", delay, terminate_home=b)
              for i, delay in enumerate(delays)]
    assert all(t.ok for t in trials), [(t.run, t.delay, t.leaked, t.terminate_status,
                                        t.terminate_output) for t in trials]
    assert sum(t.created for t in trials) > 0
    assert alive(ec2_emulator) == []


def test_a_stale_lock_from_another_host_is_cleared_by_unlock(machines: tuple[Path, Path]
                                                             ) -> None:
    a, b = machines
    cei(a, "launch", str(COUNTED), "--name", "stale", check=0)
    with Store(a) as store:  # as a cei on a machine that died would have left it
        execute(store, "INSERT INTO locks (run, pid, starttime, host, acquired, expires) "
                       "VALUES ('stale', 4242, 1, 'dead-machine', '2026-01-01T00:00:00', ?)",
                (time.time() + 3600,))
    refused = cei(a, "terminate", "stale", check=2)
    assert "locked by pid 4242 on host 'dead-machine'" in refused.stderr
    assert "cei unlock stale" in refused.stderr

    asked = cei(b, "unlock", "stale", check=2)  # no terminal to confirm on
    assert "pass --yes" in asked.stderr
    shown, status = unlock_on_a_terminal(b, "stale", answer="n")
    assert status == 1 and "pid 4242 on host 'dead-machine'" in shown
    assert "expires in" in shown and "cannot be checked from here" in shown
    shown, status = unlock_on_a_terminal(b, "stale", answer="y")
    assert status == 0 and "cleared the run lock of run stale" in shown
    assert cei_json(b, "unlock", "stale", "--yes") == {"v": 1, "run": "stale", "cleared": []}
    cei(a, "terminate", "stale", check=0)


def test_unlock_refuses_a_holder_that_still_runs_here(machines: tuple[Path, Path]) -> None:
    a, _ = machines
    cei(a, "launch", str(COUNTED), "--name", "busy", check=0)
    holder = subprocess.Popen(["sleep", "120"])
    try:
        with Store(a) as store:
            from launchplan.state.holders import process_starttime

            execute(store, "INSERT INTO locks (run, pid, starttime, host, acquired, expires) "
                           "VALUES ('busy', ?, ?, ?, 't', NULL)",
                    (holder.pid, process_starttime(holder.pid), socket.gethostname()))
        refused = cei(a, "unlock", "busy", "--yes", check=2)
        assert f"held by pid {holder.pid} on this host, which still runs" in refused.stderr
    finally:
        holder.kill()
        holder.wait(timeout=10)
    cei(a, "unlock", "busy", "--yes", check=0)


def unlock_on_a_terminal(home: Path, run: str, answer: str) -> tuple[str, int]:
    """`cei unlock RUN` on a pseudo-terminal, answering its question; (output, exit status)."""
    main, child = pty.openpty()
    env = {**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "launchplan", "unlock", run], env=env,
                            stdin=child, stdout=child, stderr=child, close_fds=True)
    os.close(child)
    output = b""
    answered = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the terminal closed: the command ended
                    break
                if not chunk:
                    break
                output += chunk
            if not answered and b"[y/N]" in output:
                os.write(main, answer.encode() + b"\n")
                answered = True
            if proc.poll() is not None and not ready:
                break
        status = proc.wait(timeout=30)
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
    return output.decode(errors="replace"), status


def test_export_and_import_move_a_run_as_an_artifact(
        tmp_path: Path, ec2_nodes: NodeFarm, ec2_emulator: EC2Emulator, ec2_image: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The CI case without a shared database: launch in one job, hand the run over as a file,
    check it and tear it down in another job on another runner."""
    monkeypatch.delenv("CEI_STATE", raising=False)
    monkeypatch.setenv("CEI_STATE_KEY", new_key())
    a, b = tmp_path / "job-1", tmp_path / "job-2"
    plan = farm_plan(tmp_path, ec2_emulator, ec2_image, ec2_nodes.port)
    try:
        cei(a, "launch", str(plan), "--name", "ci-7", check=0)
        artifact = tmp_path / "ci-7.json"
        cei(a, "state", "export", "ci-7", "-o", str(artifact), check=0)
        assert artifact.stat().st_mode & 0o777 == 0o600
        document = json.loads(artifact.read_text())
        assert "PRIVATE KEY" not in artifact.read_text()
        imported = cei_json(b, "state", "import", str(artifact))
        assert (imported["run"], imported["nodes"], imported["resources"]) == ("ci-7", 2, 2)
        assert cei(b, "state", "import", str(artifact), check=2).stderr.count("already") == 1
        assert cei_json(b, "status", "ci-7")["healthy"] is True
        cei(b, "terminate", "ci-7", check=0)
        assert alive(ec2_emulator) == [] and ec2_nodes.booted() == {}
        history = cei_json(b, "history", "ci-7")
        assert len(history["events"]) > len(document["events"])  # the history went on
    finally:
        for home in (a, b):
            cei(home, "terminate", "ci-7")


def test_migrate_moves_runs_to_postgresql_and_they_go_on_there(
        home: Path, pg_url: str) -> None:
    cei(home, "launch", str(COUNTED), "--name", "moved", check=0)
    bad = cei(home, "state", "import", str(COUNTED), check=2)
    assert "not JSON" in bad.stderr or "not a cei run export" in bad.stderr
    moved = cei_json(home, "state", "migrate", "--to", pg_url)
    assert moved["runs"] == [{"run": "moved", "copied": True, "reason": ""}]
    again = cei_json(home, "state", "migrate", "--to", pg_url)
    assert again["runs"][0]["copied"] is False  # already there, nothing twice
    on_pg = {"CEI_STATE": pg_url}
    assert cei(home, "status", "moved", env=on_pg, check=0)
    cei(home, "terminate", "moved", env=on_pg, check=0)
    assert node_processes(home) == []
    listed = json.loads(cei(home, "list", "--json", env=on_pg, check=0).stdout)
    assert [(r["run"], r["status"]) for r in listed["runs"]] == [("moved", "terminated")]


def test_the_database_password_is_nowhere_cei_writes(
        home: Path, pg_url: str, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not in a table, a log, an event, the output, nor any process's argv (nor a local
    node's environment) while a run is launched, checked, listed and terminated."""
    monkeypatch.setenv("CEI_STATE", pg_url)
    secret = postgres.password.encode()
    log_start = postgres.log_path.stat().st_size
    env = {**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(REPO)}
    launch = subprocess.Popen(
        [sys.executable, "-m", "launchplan", "--state", pg_url, "launch", str(COUNTED),
         "--name", "pw", "--var", "n=2"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    seen_argv = 0
    deadline = time.monotonic() + 180
    launch_argv = read_proc(launch.pid, "cmdline")
    while launch.poll() is None and time.monotonic() < deadline:
        seen_argv += sum(1 for argv in all_argv() if b"launchplan" in argv)
        assert not [argv for argv in all_argv() if secret in argv]
        for pid in node_processes(home):
            # a child of cei between its fork and its exec is still cei (its argv, its
            # environment), already in the directory it is started in; it is no node yet,
            # and once it has exec'd, its argv and environment are its own
            if read_proc(pid, "cmdline") != launch_argv:
                assert secret not in read_proc(pid, "environ")
        time.sleep(0.05)
    out, err = launch.communicate(timeout=60)
    assert launch.returncode == 0 and seen_argv > 0
    outputs = [out, err]
    for args in (("status", "pw", "--json"), ("history", "pw", "--json"), ("list",),
                 ("terminate", "pw", "--json")):
        done = cei(home, *args)
        outputs += [done.stdout.encode(), done.stderr.encode()]
    assert all(secret not in text for text in outputs)
    for path in home.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert secret not in path.read_bytes(), path
    with postgres.admin(pg_url.rsplit("/", 1)[1]) as admin:
        tables = [row[0] for row in admin.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        assert "events" in tables
        for table in tables:
            for row in admin.execute(f"SELECT * FROM {table}"):
                assert postgres.password not in repr(row), table
    with postgres.log_path.open("rb") as log:
        log.seek(log_start)
        server_log = log.read()
    assert b"INSERT INTO events" in server_log  # every statement cei ran is in the log
    assert secret not in server_log


def all_argv() -> list[bytes]:
    return [read_proc(int(entry), "cmdline") for entry in os.listdir("/proc") if entry.isdigit()]


def read_proc(pid: int, name: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_postgresql_stopped_mid_launch_records_everything_once_it_is_back(
        home: Path, tmp_path: Path, own_postgres: PostgresServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A clear error and exit 1; every node created so far recorded as soon as the database
    is back; terminate then finds every node."""
    monkeypatch.setenv("PGPASSWORD", own_postgres.password)
    url = own_postgres.create_database()
    monkeypatch.setenv("CEI_STATE", url)
    plan = tmp_path / "staggered.yml"
    plan.write_text("plan: staggered\nlevels:\n  - services:\n      w:\n        count: 6\n"
                    "        boot: {command: 'sleep $((CEI_NODE_INDEX * 3))'}\n")
    env = {**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(REPO)}
    launch = subprocess.Popen([sys.executable, "-m", "launchplan", "launch", str(plan),
                               "--name", "cut", "--json"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    events, errors = Lines(launch.stdout), Lines(launch.stderr)
    try:
        wait_for(lambda: any('"state": "ready"' in line for line in events.lines), 120,
                 "the first node of the launch to be ready")
        own_postgres.stop()
        wait_for(lambda: any("waiting up to" in line for line in errors.lines), 60,
                 "the launch to wait for the database")
        assert launch.poll() is None  # it waits to record what it made
        own_postgres.start()
        status = launch.wait(timeout=120)
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait(timeout=30)
    err = "".join(errors.join())
    assert status == 1, err
    assert re.search(f"error: (the state database {url} is unreachable|cannot connect to the "
                     f"state database {url}): ", err)
    assert "the state database is back: recorded" in err and "Traceback" not in err
    cached = cei_json(home, "status", "cut", "--cached", check=1)
    assert cached["status"] == "failed"  # written once the database was back
    made = {json.loads(p.read_text())["node"]
            for p in (home / "runs" / "cut" / "nodes").glob("*/request.json")}
    assert made and {n["node"] for n in cached["nodes"] if n["resource_id"]} == made
    resources = cei_json(home, "history", "cut")["resources"]
    assert {r["node"] for r in resources if r["resource_id"]} == made
    assert all(n["state"] == "failed" for n in cached["nodes"] if n["state"] != "ready")
    assert len([n for n in cached["nodes"] if n["state"] == "failed"]) >= 1
    down = json.loads(cei(home, "terminate", "cut", "--json", check=0).stdout.splitlines()[-1])
    assert down["destroyed"] == len(made)
    assert node_processes(home) == []


class Lines:
    """The lines of a child's output stream, read by a thread as they come."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def join(self) -> list[str]:
        self._thread.join(timeout=30)
        return self.lines
