"""The EE agent end to end: the built zipapp run as real processes in temporary homes."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from launchplan.agent.build import build_zipapp
from launchplan.agent.supervisor import proc_starttime
from tests.integration.cli_helpers import wait_for as shared_wait_for

pytestmark = pytest.mark.integration

WAIT = 20.0
wait_for = partial(shared_wait_for, timeout=WAIT)



def alive(pid: int) -> bool:
    return proc_starttime(pid) is not None


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_zipapp(tmp_path_factory.mktemp("agent") / "cei-agent.pyz")


class AgentHome:
    """Runs the zipapp's commands against one home and remembers what to clean up."""

    def __init__(self, pyz: Path, home: Path) -> None:
        self.pyz = pyz
        self.home = home
        self.agent_pids: set[int] = set()

    def run(self, *args: str, stdin: str | None = None) -> tuple[int, dict[str, Any]]:
        cmd = [sys.executable, str(self.pyz), args[0], "--home", str(self.home), *args[1:]]
        res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)
        return res.returncode, json.loads(res.stdout)

    def ok(self, *args: str, stdin: str | None = None) -> dict[str, Any]:
        rc, doc = self.run(*args, stdin=stdin)
        assert rc == 0 and doc["ok"], doc
        return doc

    def start(self, slots: int = 4) -> int:
        doc = self.ok("serve", "--daemon", "--slots", str(slots))
        self.agent_pids.add(doc["pid"])
        assert int((self.home / "agent.pid").read_text()) == doc["pid"]
        return int(doc["pid"])

    def launch(self, **definition: Any) -> dict[str, Any]:
        rc, doc = self.run("launch", "-", stdin=json.dumps(definition))
        assert rc == 0, doc
        return dict(doc["process"])

    def proc(self, name: str) -> dict[str, Any]:
        procs = {p["name"]: p for p in self.ok("list")["processes"]}
        return dict(procs[name])

    def cleanup(self) -> None:
        for pid in self.agent_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        state = self.home / "state.json"
        if state.exists():
            for p in json.loads(state.read_text())["processes"]:
                if p["pid"] and p["starttime"] and proc_starttime(p["pid"]) == p["starttime"]:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p["pid"], signal.SIGKILL)


@pytest.fixture
def agent(pyz: Path, tmp_path: Path) -> Iterator[AgentHome]:
    home = AgentHome(pyz, tmp_path / "agent-home")
    try:
        yield home
    finally:
        home.cleanup()


SLEEPER = {"exec": "/bin/sleep", "argv": ["300"]}


def test_zipapp_holds_only_the_agent_and_the_error_tree(pyz: Path) -> None:
    import zipfile

    names = zipfile.ZipFile(pyz).namelist()
    assert "__main__.py" in names
    shared = {"launchplan/", "launchplan/__init__.py", "launchplan/errors.py"}
    assert all(n == "__main__.py" or n.startswith("cei_agent/") or n in shared for n in names)
    assert shared <= set(names)
    assert "cei_agent/build.py" not in names


def test_launch_list_kill_and_client_errors(agent: AgentHome) -> None:
    rc, doc = agent.run("ping")
    assert rc == 1 and "no agent" in doc["error"]
    agent_pid = agent.start()
    assert agent.ok("ping")["pid"] == agent_pid
    rc, doc = agent.run("serve", "--daemon", "--slots", "2")
    assert rc == 1 and "already serves" in doc["error"]

    proc = agent.launch(name="sleeper", **SLEEPER, env={"GREETING": "hi"})
    assert proc["state"] == "running" and alive(proc["pid"])
    assert Path(f"/proc/{proc['pid']}/environ").read_bytes().count(b"GREETING=hi") == 1
    rc, doc = agent.run("launch", "-", stdin=json.dumps({"name": "sleeper", **SLEEPER}))
    assert rc == 1 and "already exists" in doc["error"]

    listed = agent.ok("list")
    assert [p["name"] for p in listed["processes"]] == ["sleeper"]
    assert listed["slots"] == {"total": 4, "used": 1, "free": 3}

    killed = agent.ok("kill", "sleeper")["process"]
    assert killed["state"] == "terminated" and killed["exit_code"] is None
    assert killed["signal"] == signal.SIGTERM
    assert not alive(proc["pid"])
    assert agent.proc("sleeper")["restarts"] == 0

    rc, doc = agent.run("kill", "nobody")
    assert rc == 1 and "no process named" in doc["error"]
    rc, doc = agent.run("launch", "-", stdin=json.dumps({"name": "x", "exec": "/no/such/prog"}))
    assert rc == 1 and "cannot start x" in doc["error"]
    assert agent.proc("x")["state"] == "failed"
    rc, doc = agent.run("launch", "-", stdin=json.dumps({"name": "x", "bogus": 1}))
    assert rc == 1 and "unknown keys" in doc["error"]

    # A finished process's name can be launched again.
    again = agent.launch(name="sleeper", **SLEEPER)
    assert again["state"] == "running" and again["pid"] != proc["pid"]


def test_definition_file_exec_cwd_and_stderr_tail(agent: AgentHome, tmp_path: Path) -> None:
    agent.start()
    workdir = tmp_path / "work"
    workdir.mkdir()
    script = "pwd > where; i=0; while [ $i -lt 300 ]; do echo line-$i >&2; i=$((i+1)); done; exit 3"
    defn = tmp_path / "def.json"
    defn.write_text(json.dumps({"name": "noisy", "exec": "/bin/sh", "argv": ["-c", script],
                                "cwd": str(workdir), "restart": "never"}))
    agent.ok("launch", str(defn))
    proc = wait_for(lambda: (p := agent.proc("noisy"))["state"] == "failed" and p, what="exit")
    assert proc["exit_code"] == 3 and proc["restarts"] == 0 and proc["pid"] is not None
    assert (workdir / "where").read_text().strip() == str(workdir)
    tail = proc["stderr_tail"]
    assert tail.endswith("line-299\n") and tail.startswith("line-")
    assert 1500 < len(tail.encode()) <= 2048
    assert Path(proc["stderr_path"]).stat().st_size > 2048


def _kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def test_restart_always_after_kill(agent: AgentHome) -> None:
    agent.start()
    first = agent.launch(name="svc", **SLEEPER, restart="always", min_restart_interval=0.2)
    _kill9(first["pid"])
    proc = wait_for(
        lambda: (p := agent.proc("svc"))["state"] == "running" and p["restarts"] == 1 and p,
        what="restart",
    )
    assert proc["pid"] != first["pid"] and alive(proc["pid"])
    # `always` restarts a clean exit too.
    agent.launch(name="once", exec="/bin/true", restart="always", min_restart_interval=0.1,
                 max_restarts=2)
    done = wait_for(lambda: (p := agent.proc("once"))["state"] == "exited" and p, what="done")
    assert done["restarts"] == 2 and done["exit_code"] == 0


def test_restart_abnormal_only_on_failure(agent: AgentHome) -> None:
    agent.start()
    agent.launch(name="clean", exec="/bin/sh", argv=["-c", "exit 0"], min_restart_interval=0.1)
    agent.launch(name="crash", exec="/bin/sh", argv=["-c", "exit 3"], min_restart_interval=0.1,
                 max_restarts=2)
    crash = wait_for(
        lambda: (p := agent.proc("crash"))["state"] == "failed" and p, what="crash to settle"
    )
    assert crash["restarts"] == 2 and crash["exit_code"] == 3
    clean = agent.proc("clean")
    assert clean["state"] == "exited" and clean["restarts"] == 0 and clean["exit_code"] == 0
    # Killed by a signal is abnormal too.
    first = agent.launch(name="victim", **SLEEPER, min_restart_interval=0.1)
    _kill9(first["pid"])
    wait_for(lambda: agent.proc("victim")["restarts"] == 1, what="abnormal restart")


def test_never_restart(agent: AgentHome) -> None:
    agent.start()
    first = agent.launch(name="one", **SLEEPER, restart="never")
    _kill9(first["pid"])
    proc = wait_for(lambda: (p := agent.proc("one"))["state"] == "failed" and p, what="failure")
    assert proc["signal"] == signal.SIGKILL and proc["exit_code"] is None
    time.sleep(0.5)
    assert agent.proc("one")["restarts"] == 0
    assert agent.ok("list")["slots"]["used"] == 0


def test_min_restart_interval_is_respected(agent: AgentHome, tmp_path: Path) -> None:
    agent.start()
    stamps = tmp_path / "stamps"
    interval = 0.6
    agent.launch(
        name="flappy", exec="/bin/sh",  # starts in a millisecond: the stamps show the agent
        argv=["-c", 'date +%s.%N >> "$1"; exit 1', "flappy", str(stamps)],
        restart="abnormal", min_restart_interval=interval, max_restarts=3,
    )
    proc = wait_for(lambda: (p := agent.proc("flappy"))["state"] == "failed" and p, what="end")
    assert proc["restarts"] == 3
    starts = [float(x) for x in stamps.read_text().split()]
    assert len(starts) == 4
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # Each start is at least `interval` after the previous start (stamps are taken just after
    # exec, so allow a little start-up jitter between two starts, not a speed requirement).
    assert all(gap >= interval - 0.05 for gap in gaps), gaps


def test_slots_are_enforced(agent: AgentHome) -> None:
    agent.start(slots=2)
    agent.launch(name="a", **SLEEPER)
    agent.launch(name="b", **SLEEPER)
    rc, doc = agent.run("launch", "-", stdin=json.dumps({"name": "c", **SLEEPER}))
    assert rc == 1 and doc["error"].startswith("no free slot")
    agent.ok("kill", "a")
    assert agent.launch(name="c", **SLEEPER)["state"] == "running"
    assert agent.ok("status")["slots"] == {"total": 2, "used": 2, "free": 0}


def test_state_survives_agent_kill9_and_children_are_readopted(agent: AgentHome) -> None:
    old_agent = agent.start()
    keeper = agent.launch(name="keeper", **SLEEPER)
    lost = agent.launch(name="lost", **SLEEPER, min_restart_interval=0.1)
    agent.launch(name="done", exec="/bin/true")
    wait_for(lambda: agent.proc("done")["state"] == "exited", what="done to exit")

    _kill9(old_agent)
    wait_for(lambda: not alive(old_agent), what="agent to die")
    assert alive(keeper["pid"])
    _kill9(lost["pid"])  # dies while nobody watches
    wait_for(lambda: not alive(lost["pid"]), what="child to die")

    new_agent = agent.start()
    assert new_agent != old_agent
    procs = {p["name"]: p for p in agent.ok("list")["processes"]}
    assert procs["keeper"]["state"] == "running" and procs["keeper"]["adopted"]
    assert procs["keeper"]["pid"] == keeper["pid"]
    assert procs["done"]["state"] == "exited" and procs["done"]["exit_code"] == 0
    relaunched = wait_for(
        lambda: (p := agent.proc("lost"))["state"] == "running" and p, what="lost restarted"
    )
    assert relaunched["restarts"] == 1 and relaunched["pid"] != lost["pid"]

    # The adopted child is still supervised: killed outside, it is noticed and restarted.
    _kill9(keeper["pid"])
    again = wait_for(
        lambda: (p := agent.proc("keeper"))["restarts"] == 1 and p["state"] == "running" and p,
        timeout=WAIT, what="adopted child restarted",
    )
    assert not again["adopted"]
    assert agent.ok("kill", "keeper")["process"]["state"] == "terminated"


def test_stop_leaves_children_running(agent: AgentHome) -> None:
    pid = agent.start()
    child = agent.launch(name="bg", **SLEEPER)
    assert agent.ok("stop")["pid"] == pid
    wait_for(lambda: not alive(pid), what="agent exit")
    assert not (agent.home / "agent.sock").exists() and not (agent.home / "agent.pid").exists()
    assert alive(child["pid"])
    agent.start()
    assert agent.proc("bg")["adopted"]


def test_sensors_and_status(agent: AgentHome) -> None:
    agent.start()
    sensors = agent.ok("sensors")["sensors"]
    assert 0 <= sensors["cpu"]["percent"] <= 100
    assert 0 < sensors["memory"]["available_bytes"] <= sensors["memory"]["total_bytes"]
    assert sensors["network"]["rx_bytes"] >= 0 and sensors["network"]["tx_bytes"] >= 0
    assert len(sensors["load"]) == 3
    status = agent.ok("status")
    assert set(status) >= {"agent", "slots", "processes", "sensors"}
    assert status["agent"]["home"] == str(agent.home)


def test_module_definition_runs_a_callable(agent: AgentHome, tmp_path: Path) -> None:
    agent.start()
    pkg = tmp_path / "modsrc"
    pkg.mkdir()
    (pkg / "cei_demo_mod.py").write_text(
        "import os, sys\n"
        "def main(args):\n"
        "    open(os.environ['OUT'], 'w').write(' '.join([sys.argv[0], *args]))\n"
        "    return int(args[-1])\n"
    )
    out = tmp_path / "out.txt"
    agent.launch(name="mod", module="cei_demo_mod:main", args=["a", "b", "4"],
                 pythonpath=[str(pkg)], env={"OUT": str(out)}, restart="never")
    proc = wait_for(lambda: (p := agent.proc("mod"))["state"] == "failed" and p, what="exit")
    assert proc["exit_code"] == 4
    assert out.read_text() == "cei_demo_mod a b 4"


def test_long_home_path_socket(pyz: Path, tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    home = AgentHome(pyz, deep)
    try:
        home.start()
        assert home.ok("ping")["home"] == str(deep)
    finally:
        home.cleanup()
