"""Agents on engine nodes and the process dispatcher, through the real `cei` command.

A run of plans/sliding-window.yml on the local cloud gives two engine nodes with agents; the
tests place processes, kill them on their node, and lose a whole engine node.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from launchplan.agent.supervisor import proc_starttime
from tests.integration.cli_helpers import REPO, both_stores, cei, cei_json, node_processes
from tests.integration.cli_helpers import wait_for as shared_wait_for

pytestmark = pytest.mark.integration

PLAN = REPO / "plans" / "sliding-window.yml"
WAIT = 30.0
wait_for = partial(shared_wait_for, timeout=WAIT, interval=0.2)



def kill_leftovers(home: Path) -> None:
    for pid in node_processes(home):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def engines(cei_home: Path, store_backend: str) -> Iterator[tuple[Path, str]]:
    """A launched run with two engine nodes; terminated (and swept) afterwards."""
    run = "eng"
    cei(cei_home, "launch", str(PLAN), "--name", run, check=0)
    try:
        yield cei_home, run
    finally:
        cei(cei_home, "terminate", run)
        kill_leftovers(cei_home)


def definition(tmp_path: Path, name: str, **fields: Any) -> Path:
    path = tmp_path / f"{name}.yml"
    body = {"name": name, "exec": "/bin/sleep", "argv": ["300"], "min_restart_interval": 0.2,
            **fields}
    path.write_text(json.dumps(body))  # JSON is YAML
    return path


def processes(home: Path, run: str) -> dict[str, dict[str, Any]]:
    doc = cei_json(home, "process", "list", run)
    assert doc["v"] == 1
    return {p["name"]: p for p in doc["processes"]}


def agent_of(home: Path, run: str, node: str) -> dict[str, Any]:
    from launchplan.state import Store

    with Store(home) as store:
        return dict(store.get_node(run, node).programs["agent"])


def test_agent_installed_on_each_engine_node(engines: tuple[Path, str]) -> None:
    home, run = engines
    for node in ("engine/0", "engine/1"):
        agent = agent_of(home, run, node)
        assert agent["slots"] == 4
        assert agent["pyz"].endswith("/cei-agent.pyz")
        assert proc_starttime(int(agent["pid"])) is not None
    # the zipapp was built once for the run and reused for both nodes
    assert (home / "runs" / run / "cei-agent.pyz").is_file()


@both_stores
def test_run_list_wait_kill(engines: tuple[Path, str], tmp_path: Path) -> None:
    home, run = engines
    one = cei_json(home, "process", "run", run, str(definition(tmp_path, "one")))
    two = cei_json(home, "process", "run", run, str(definition(tmp_path, "x")), "--name",
                   "two")
    # least loaded first: the second process goes to the other node
    assert {one["process"]["node"], two["process"]["node"]} == {"engine/0", "engine/1"}
    listed = processes(home, run)
    assert listed["one"]["state"] == "running" and listed["one"]["pid"] > 0
    assert listed["two"]["state"] == "running"
    # a name in use is refused
    again = cei(home, "process", "run", run, str(definition(tmp_path, "one")))
    assert again.returncode == 2 and "already exists" in again.stderr

    waited = cei_json(home, "process", "wait", run, "one", "--for", "running")
    assert waited["reached"] is True

    killed = cei_json(home, "process", "kill", run, "one")
    assert killed["process"]["state"] == "terminated"
    assert proc_starttime(listed["one"]["pid"]) is None
    rc = cei(home, "process", "wait", run, "one", "--for", "running", "--timeout", "2")
    assert rc.returncode == 1

    short = definition(tmp_path, "short", argv=["0.1"], restart="never")
    cei_json(home, "process", "run", run, str(short))
    done = cei_json(home, "process", "wait", run, "short", "--for", "exited", "--timeout", "20")
    assert done["process"]["state"] == "exited" and done["process"]["exit_code"] == 0

    slow = cei(home, "process", "wait", run, "two", "--for", "exited", "--timeout", "1")
    assert slow.returncode == 3


def test_bad_definition_names_the_line(engines: tuple[Path, str], tmp_path: Path) -> None:
    home, run = engines
    bad = tmp_path / "bad.yml"
    bad.write_text("name: bad\nexec: /bin/true\nrestart: sometimes\n")
    proc = cei(home, "process", "run", run, str(bad))
    assert proc.returncode == 2
    assert f"{bad}:3" in proc.stderr and "restart" in proc.stderr
    assert "Traceback" not in proc.stderr
    unknown = cei(home, "process", "run", run, str(definition(tmp_path, "u")), "--engine", "db")
    assert unknown.returncode == 2 and "runs no agent" in unknown.stderr


@pytest.mark.parametrize("policy, restarted", [("abnormal", True), ("always", True),
                                               ("never", False)])
def test_killed_process_restarts_by_policy(engines: tuple[Path, str], tmp_path: Path,
                                           policy: str, restarted: bool) -> None:
    home, run = engines
    name = f"p-{policy}"
    cei_json(home, "process", "run", run, str(definition(tmp_path, name, restart=policy)))
    first = processes(home, run)[name]
    os.kill(first["pid"], signal.SIGKILL)  # on its node: the node is this machine
    if restarted:
        again = wait_for(
            lambda: (p := processes(home, run)[name])["state"] == "running"
            and p["pid"] != first["pid"] and p,
            what=f"{name} to be restarted")
        assert again["restarts"] == 1 and again["node"] == first["node"]
        assert again["round"] == 0  # restarted by its agent, not rescheduled
    else:
        gone = wait_for(lambda: (p := processes(home, run)[name])["state"] == "failed" and p,
                        what=f"{name} to fail")
        assert gone["restarts"] == 0 and "signal 9" in (gone["last_error"] or "")


@both_stores
def test_lost_engine_node_reschedules_its_processes(engines: tuple[Path, str],
                                                    tmp_path: Path) -> None:
    home, run = engines
    cei_json(home, "process", "run", run, str(definition(tmp_path, "keep", restart="abnormal")))
    cei_json(home, "process", "run", run, str(definition(tmp_path, "lose", restart="never")))
    cei_json(home, "process", "run", run, str(definition(tmp_path, "also", restart="always")))
    before = processes(home, run)
    victim = before["keep"]["node"]
    survivor = "engine/0" if victim == "engine/1" else "engine/1"
    on_victim = {n for n, p in before.items() if p["node"] == victim}
    # kill the node's agent and the node itself (the pid in its status.json)
    agent = agent_of(home, run, victim)
    status = json.loads((home / "runs" / run / "nodes" / victim.replace("/", "-")
                         / "status.json").read_text())
    os.kill(int(agent["pid"]), signal.SIGKILL)
    os.kill(int(status["pid"]), signal.SIGKILL)
    wait_for(lambda: proc_starttime(int(status["pid"])) is None, what="the node to die")

    doc = cei_json(home, "process", "list", run)
    assert victim in doc["reconcile"]["lost"]
    after = {p["name"]: p for p in doc["processes"]}
    for name in on_victim:
        policy = before[name]["restart"]
        if policy == "never":
            assert after[name]["state"] == "failed"
            assert victim in after[name]["last_error"]
        else:
            assert after[name]["state"] == "running", after[name]
            assert after[name]["node"] == survivor
            assert after[name]["round"] == before[name]["round"] + 1
    from launchplan.state import Store

    with Store(home) as store:
        assert store.get_node(run, victim).state == "failed"
    # a second reconcile finds nothing more to do
    again = cei_json(home, "process", "reconcile", run)
    assert again["reconcile"] == {"lost": {}, "rescheduled": [], "failed": []}


def test_dead_agent_on_live_node_is_revived(engines: tuple[Path, str], tmp_path: Path) -> None:
    home, run = engines
    cei_json(home, "process", "run", run, str(definition(tmp_path, "adopted")))
    before = processes(home, run)["adopted"]
    agent = agent_of(home, run, before["node"])
    os.kill(int(agent["pid"]), signal.SIGKILL)
    wait_for(lambda: proc_starttime(int(agent["pid"])) is None, what="the agent to die")
    after = processes(home, run)["adopted"]
    # the node answers SSH: its agent is started again and re-adopts the process
    assert after["state"] == "running" and after["pid"] == before["pid"]
    assert after["node"] == before["node"] and after["round"] == 0


def test_terminate_stops_agents_and_their_processes(cei_home: Path, tmp_path: Path) -> None:
    run = "stop"
    cei(cei_home, "launch", str(PLAN), "--name", run, "--var", "engines=1", check=0)
    try:
        cei_json(cei_home, "process", "run", run, str(definition(tmp_path, "s")))
        pid = processes(cei_home, run)["s"]["pid"]
        agent_pid = int(agent_of(cei_home, run, "engine/0")["pid"])
        done = cei(cei_home, "terminate", run, "--json", check=0)
        assert "not stopped cleanly" not in done.stdout
        assert proc_starttime(pid) is None and proc_starttime(agent_pid) is None
        assert node_processes(cei_home) == []
    finally:
        cei(cei_home, "terminate", run)
        kill_leftovers(cei_home)
