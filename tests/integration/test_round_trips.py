"""How many SSH round trips staging and booting a node costs, against a real OpenSSH sshd.

Each channel opened and each SFTP request is a round trip (a WAN latency on a real network);
the budget fails the test when the launch path grows them again.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from launchplan.levels.nodelog import NodeLog
from launchplan.levels.outputs import OutputsRefused
from launchplan.levels.programs import Stage
from launchplan.plan.model import ProgramSpec
from launchplan.remote import Session
from tests.integration.cli_helpers import wait_for
from tests.integration.conftest import SSHDFactory, SSHDServer

pytestmark = pytest.mark.integration

ROUND_TRIP_BUDGET = 1  # channels opened + SFTP requests, to stage and boot one node
PROGRAM = ("#!/bin/sh\n" + "# a boot program of about 2 KB\n" * 64
           + 'printf \'{"secret_seen": "%s", "arg": "%s", "stage": "%s"}\' '
           + '"$DB_PASSWORD" "$1" "$CEI_STAGE" >"$CEI_OUTPUT"\n'
           + "echo booted\n")


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the channels paramiko opens and the SFTP requests it sends (then does them)."""
    counts: Counter[str] = Counter()
    open_session = paramiko.Transport.open_session
    request = paramiko.SFTPClient._request

    def counted_open(self: paramiko.Transport, *args: Any, **kwargs: Any) -> Any:
        counts["channels"] += 1
        return open_session(self, *args, **kwargs)

    def counted_request(self: paramiko.SFTPClient, *args: Any, **kwargs: Any) -> Any:
        counts["sftp"] += 1
        return request(self, *args, **kwargs)

    monkeypatch.setattr(paramiko.Transport, "open_session", counted_open)
    monkeypatch.setattr(paramiko.SFTPClient, "_request", counted_request)
    return counts


@pytest.fixture
def session(sshd: SSHDServer) -> Iterator[Session]:
    with Session.open(sshd.target(), retry_for=10) as opened:
        yield opened


def stage_of(session: Session, tmp_path: Path, name: str) -> Stage:
    """A stage relative to the login directory, as a launch makes one."""
    relative = f".cei/round-trips-{os.getpid()}-{name}/svc/0"
    env = {"CEI_RUN": "rt", "CEI_SERVICE": "svc", "CEI_NODE": "svc/0", "CEI_NODE_INDEX": "0",
           "CEI_LEVEL": "level1", "CEI_STAGE": relative,
           "CEI_CONFIG": f"{relative}/config.json", "CEI_CONTEXT": f"{relative}/context.json",
           "CEI_OUTPUT": f"{relative}/output.json"}
    return Stage(session, relative, env, NodeLog(tmp_path / f"{name}.log"))


def login_dir(sshd: SSHDServer) -> Path:
    return Path(pwd.getpwnam(sshd.user).pw_dir)


def test_staging_and_boot_fit_the_round_trip_budget(
        sshd: SSHDServer, tmp_path: Path, round_trips: Counter[str]) -> None:
    program = tmp_path / "boot.sh"
    program.write_text(PROGRAM)
    with Session.open(sshd.target(), retry_for=10) as session:
        round_trips.clear()  # logging in is not staging
        stage = stage_of(session, tmp_path, "budget")
        directory = login_dir(sshd) / f".cei/round-trips-{os.getpid()}-budget/svc/0"
        directory.mkdir(parents=True)
        (directory / "output.json").write_text('{"stale": true}')  # a former boot's
        stage.prepare({"port": 5432}, b'{"nodes":[],"run":"rt"}\n', {"extra.sh": "x=1\n"})
        outputs = stage.boot(ProgramSpec(run=str(program), args=("a b",),
                                         env={"DB_PASSWORD": "s3cret"}))
        spent = round_trips["channels"] + round_trips["sftp"]
    try:
        assert outputs == {"secret_seen": "s3cret", "arg": "a b", "stage": str(directory)}
        assert spent <= ROUND_TRIP_BUDGET, f"staging and boot took {dict(round_trips)}"
        # the boot told the login directory: the stage's paths are absolute without asking
        assert stage.path == str(directory) and round_trips["sftp"] == 0
        assert stage.env["CEI_OUTPUT"] == f"{directory}/output.json"
        assert json.loads((directory / "config.json").read_text()) == {"port": 5432}
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
        assert modes == {"config.json": 0o600, "context.json": 0o600, "extra.sh": 0o600,
                         "boot-boot.sh": 0o700, "output.json": 0o644}  # the program's umask
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert (directory / "boot-boot.sh").read_text() == PROGRAM
        log = (tmp_path / "budget.log").read_text()
        assert "booted" in log and "s3cret" not in log
    finally:
        shutil.rmtree(directory.parent.parent, ignore_errors=True)


def test_outputs_past_the_limit_are_refused(session: Session, tmp_path: Path) -> None:
    stage = stage_of(session, tmp_path, "limit")
    try:
        stage.prepare({}, b"{}\n")
        with pytest.raises(OutputsRefused, match="more than 100 bytes"):
            stage.boot(ProgramSpec(command='printf "{\\"k\\": \\"%0200d\\"}" 0 >"$CEI_OUTPUT"'),
                       output_limit=100)
        assert stage.boot(ProgramSpec(command="true")) == {}  # no output file: no outputs
    finally:
        shutil.rmtree(Path(stage.path).parent.parent, ignore_errors=True)


def test_a_launch_never_asks_the_login_directory(
        sshd: SSHDServer, tmp_path: Path, round_trips: Counter[str]) -> None:
    """Three services on one host, over two levels: each node's first command tells the
    login directory, so no SFTP request asks it, and the stored environments are absolute."""
    from launchplan.levels.events import discard
    from launchplan.levels.launch import Launcher
    from launchplan.levels.runtime import RunContext
    from launchplan.plan import load_plan
    from launchplan.state import Store

    service = {"host": sshd.host, "ssh_port": sshd.port, "ssh_user": sshd.user,
               "ssh_key": sshd.key_path, "host_key": sshd.host_key,
               "boot": {"command": 'printf \'{"stage": "%s"}\' "$PWD" >"$CEI_OUTPUT"'}}
    run = f"rt-share-{os.getpid()}"
    home = login_dir(sshd)
    plan_path = tmp_path / "plan.yml"
    plan_path.write_text(json.dumps({
        "plan": "share", "clouds": {"hosts": {"driver": "static"}},
        "defaults": {"cloud": "hosts", "timeout": 60},
        "levels": [{"services": {"a": service, "b": service}}, {"services": {"c": service}}]}))
    with Store(tmp_path / "home", "") as store:
        store.create_run(run, "share", str(plan_path))
        try:
            result = Launcher(RunContext(store, run, discard), load_plan(plan_path)).launch()
            assert (result.status, result.failures) == ("ready", [])
            nodes = store.nodes(run)
        finally:
            shutil.rmtree(home / ".cei" / run, ignore_errors=True)
    expected = {f"{s}/0": f"{home}/.cei/{run}/{s}/0" for s in "abc"}
    assert {n.node: n.outputs["stage"] for n in nodes} == expected
    assert {n.node: n.programs["env"]["CEI_STAGE"] for n in nodes} == expected
    assert round_trips["sftp"] == 0


def sharing_config(directory: Path) -> str:
    """An ssh config that shares connections for a minute (ControlMaster, ControlPersist)."""
    config = directory / "ssh_config"
    config.write_text("Host *\n  ControlMaster auto\n  ControlPersist 60\n")
    return str(config)


@pytest.mark.parametrize("shared", [True, False], ids=["control-persist", "ssh-default"])
def test_nodes_on_one_existing_host_reuse_its_connection_level_after_level(
        sshd_factory: SSHDFactory, tmp_path: Path, shared: bool) -> None:
    """A service per level on one host, with ControlPersist in the ssh config: a later level's
    node takes the connection an earlier node gave back instead of logging in again, and so do
    terminate's nodes. Without it (ssh's default) every node logs in anew, so that what a boot
    changed for the login holds for the next. None is left open when either command ends.
    (That two nodes at work at once never share one is the pool's rule:
    tests/unit/test_idle_sessions.py.)"""
    from launchplan.levels import events as ev
    from launchplan.levels.events import Event, discard
    from launchplan.levels.launch import Launcher
    from launchplan.levels.runtime import RunContext
    from launchplan.levels.teardown import Terminator
    from launchplan.plan import load_plan
    from launchplan.state import Store

    server = sshd_factory.start()

    def logins() -> int:
        return server.log().count("Accepted publickey")

    def connected() -> bool:  # sshd forks a process per connection
        return bool(Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split())

    host = {"host": server.host, "ssh_port": server.port, "ssh_user": server.user,
            "ssh_key": server.key_path, "host_key": server.host_key,
            "ssh_config": sharing_config(tmp_path) if shared else "none"}

    def meeting(me: str, other: str) -> dict[str, Any]:
        """A boot that ends only once the other's has begun (10 s at most): at work at once."""
        return {**host, "boot": {"command": (
            f"touch {tmp_path}/{me}; i=0; while [ ! -e {tmp_path}/{other} ] && [ $i -lt 200 ]; "
            f"do sleep 0.05; i=$((i+1)); done; test -e {tmp_path}/{other}")}}

    run = f"rt-reuse-{os.getpid()}"
    plan_path = tmp_path / "plan.yml"
    plan_path.write_text(json.dumps({
        "plan": "reuse", "clouds": {"hosts": {"driver": "static"}},
        "defaults": {"cloud": "hosts", "timeout": 60},
        "levels": [{"services": {"a": meeting("a", "b"), "b": meeting("b", "a")}},
                   {"services": {"c": {**host, "boot": {"command": "true"}}}}]}))
    before_level: dict[int, int] = {}

    def seen(event: Event) -> None:
        if event.kind == ev.LEVEL_STARTED:
            before_level[event.data["index"]] = logins()

    with Store(tmp_path / "home", "") as store:
        store.create_run(run, "reuse", str(plan_path))
        try:
            result = Launcher(RunContext(store, run, seen), load_plan(plan_path)).launch()
            assert (result.status, result.failures) == ("ready", [])
            launched = logins()
            wait_for(lambda: not connected(), 10, "the launch's connections to close")
            Terminator(RunContext(store, run, discard)).terminate()
            torn_down = logins() - launched
            wait_for(lambda: not connected(), 10, "terminate's connections to close")
        finally:
            shutil.rmtree(login_dir(server) / ".cei" / run, ignore_errors=True)
    assert before_level == {1: 0, 2: 2}  # a and b, at work at once, logged in each
    if shared:
        assert launched == 2  # c took a's or b's connection
        assert 1 <= torn_down <= 2  # c's first, then a and b: fewer logins than nodes
    else:
        assert (launched, torn_down) == (3, 3)


def test_a_kept_connection_the_host_closed_meanwhile_gives_way_to_a_new_login(
        sshd_factory: SSHDFactory, tmp_path: Path) -> None:
    """A host may drop a kept connection (ControlPersist) while it waits for its next node
    (this sshd closes one with no channel open after 1 s): the next node on that host logs in
    anew and goes on."""
    from launchplan.levels.events import discard
    from launchplan.levels.launch import Launcher
    from launchplan.levels.runtime import RunContext
    from launchplan.plan import load_plan
    from launchplan.state import Store

    dropping = sshd_factory.start(extra=("UnusedConnectionTimeout 1",))
    other = sshd_factory.start()

    def on(server: SSHDServer, command: str) -> dict[str, Any]:
        return {"host": server.host, "ssh_port": server.port, "ssh_user": server.user,
                "ssh_key": server.key_path, "host_key": server.host_key,
                "ssh_config": sharing_config(tmp_path), "boot": {"command": command}}

    run = f"rt-dropped-{os.getpid()}"
    plan_path = tmp_path / "plan.yml"
    plan_path.write_text(json.dumps({
        "plan": "dropped", "clouds": {"hosts": {"driver": "static"}},
        "defaults": {"cloud": "hosts", "timeout": 60},
        "levels": [{"services": {"a": on(dropping, "true")}},
                   {"services": {"b": on(other, "sleep 2.5")}},  # a's connection waits
                   {"services": {"c": on(dropping, "true")}}]}))
    with Store(tmp_path / "home", "") as store:
        store.create_run(run, "dropped", str(plan_path))
        try:
            result = Launcher(RunContext(store, run, discard), load_plan(plan_path)).launch()
        finally:
            for server in (dropping, other):
                shutil.rmtree(login_dir(server) / ".cei" / run, ignore_errors=True)
    assert (result.status, result.failures) == ("ready", [])
    assert dropping.log().count("Accepted publickey") == 2
