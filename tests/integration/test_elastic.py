"""Elastic services on the local cloud and the EC2 emulator: cei watch, scale and repair.

Each test launches a plan from tests/integration/plans, runs the real `cei watch` beside it
(or none, for the direct forms of scale and repair), and checks what the store, the nodes and
the clouds say afterwards. Timeouts are generous bounds, never measurements.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from launchplan.state import Store
from tests.integration.cli_helpers import cei, cei_json, ndjson
from tests.integration.cli_helpers import wait_for as shared_wait_for
from tests.integration.cloud_emulator import EC2Emulator
from tests.integration.elastic_helpers import (
    desired,
    history,
    local_node_pid,
    nodes,
    ready,
    stage_file,
    start_watch,
    stop_watch,
    watching,
)

pytestmark = pytest.mark.integration

PLANS = Path(__file__).parent / "plans"
wait_for = partial(shared_wait_for, interval=0.2)
MOVING = {"pending", "creating", "booting", "contextualizing", "retiring", "terminating"}


def definition(tmp_path: Path, name: str, **fields: Any) -> Path:
    path = tmp_path / f"{name}.yml"
    body = {"name": name, "exec": "/bin/sleep", "argv": ["600"], "restart": "never", **fields}
    path.write_text(json.dumps(body))  # JSON is YAML
    return path


def settled(home: Path, run: str, service: str, count: int) -> bool:
    here = nodes(home, run, service)
    return (sum(n.state == "ready" for n in here) == count
            and not any(n.state in MOVING for n in here))


def process_states(home: Path, run: str) -> dict[str, tuple[str, str | None, int]]:
    with Store(home) as store:
        return {p.name: (p.state, p.node, p.round) for p in store.processes(run)}


def test_watch_replaces_a_killed_node_and_tells_later_levels(home: Path,
                                                            tmp_path: Path) -> None:
    cei(home, "launch", str(PLANS / "elastic-heal.yml"), "--name", "heal", check=0)
    cei(home, "process", "run", "heal", str(definition(tmp_path, "keeper", restart="always")),
        check=0)
    victim = process_states(home, "heal")["keeper"][1]
    assert victim in ("engine/0", "engine/1")
    with watching(home, "heal") as watch:
        wait_for(lambda: any(line["event"] == "elastic.state" for line in watch.lines()), 60,
                 "the watch's first tick")
        os.kill(local_node_pid(home, "heal", victim), signal.SIGKILL)
        wait_for(lambda: "engine/2" in ready(home, "heal", "engine")
                 and settled(home, "heal", "engine", 2), 90, "the replacement of " + victim)
        wait_for(lambda: process_states(home, "heal")["keeper"][0] == "running", 60,
                 "the keeper process to run again")
        wait_for(lambda: stage_file(home, "heal", "web/0", "web", "reconfigured.log").exists(),
                 60, "web's reconfigure program")
        assert stop_watch(watch) == 130  # Ctrl-C: the step in flight finished, then 130
    survivor = "engine/1" if victim == "engine/0" else "engine/0"
    assert ready(home, "heal", "engine") == sorted([survivor, "engine/2"])
    states = {n.node: n for n in nodes(home, "heal")}
    assert states[victim].state == "terminated"
    state, node, round_ = process_states(home, "heal")["keeper"]
    assert (state, round_) == ("running", 1) and node in (survivor, "engine/2")
    context = json.loads(stage_file(home, "heal", "web/0", "web", "context.json").read_text())
    listed = {e["node"]: e["address"] for e in context["nodes"]}
    assert victim not in listed and listed["engine/2"] == states["engine/2"].address
    config = json.loads(stage_file(home, "heal", "web/0", "web", "config.json").read_text())
    first = min((states[survivor], states["engine/2"]), key=lambda n: n.index)
    assert config == {"first_engine": first.address, "engines": 2}
    assert "engine" in stage_file(home, "heal", "web/0", "web",
                                  "reconfigured.log").read_text()
    lost = [e for e in history(home, "heal", "elastic.health") if e["node"] == victim]
    assert lost and lost[0]["state"] == "lost"
    actions = history(home, "heal", "elastic.action")
    assert any(a.get("action") == "launch" and a.get("nodes") == ["engine/2"] for a in actions)


def test_sensor_policy_follows_cpu_to_max_and_back_to_min(home: Path, tmp_path: Path) -> None:
    cei(home, "launch", str(PLANS / "elastic-sensor.yml"), "--name", "cpu", check=0)
    burn = {"exec": sys.executable, "argv": ["-c", "while True: pass"]}
    for name in ("burn1", "burn2"):  # one on each engine: the least loaded takes the next
        cei(home, "process", "run", "cpu", str(definition(tmp_path, name, **burn)), check=0)
    assert {p[1] for p in process_states(home, "cpu").values()} == {"engine/0", "engine/1"}
    with watching(home, "cpu"):
        wait_for(lambda: desired(home, "cpu", "engine") == 4 and settled(home, "cpu", "engine", 4),
                 120, "scale-up to max (4)")
        for name in ("burn1", "burn2"):
            cei(home, "process", "kill", "cpu", name, check=0)
        wait_for(lambda: desired(home, "cpu", "engine") == 1 and settled(home, "cpu", "engine", 1),
                 120, "scale-down to min (1)")
    decisions = history(home, "cpu", "elastic.decision")
    ups = [d for d in decisions if d.get("direction") == "up"]
    downs = [d for d in decisions if d.get("direction") == "down"]
    assert ups and downs
    assert all("cpu average" in d["message"] and "> 8" in d["message"] for d in ups)
    assert any("< 3 for 2 samples" in d["message"] for d in downs)
    assert all(d["inputs"]["current"] <= 4 for d in decisions)


def test_need_policy_grows_for_queued_processes_and_shrinks_after(home: Path,
                                                                 tmp_path: Path) -> None:
    cei(home, "launch", str(PLANS / "elastic-need.yml"), "--name", "need", check=0)
    release = tmp_path / "release"
    wait = {"exec": "/bin/sh", "argv": ["-c", f"while [ ! -e '{release}' ]; do sleep 0.2; done"]}
    with watching(home, "need"):
        for i in range(12):  # half with the flag, half with the definition key
            flags = ["--queue"] if i % 2 else []
            fields = {} if i % 2 else {"queue": True}
            cei(home, "process", "run", "need",
                str(definition(tmp_path, f"job{i}", **wait, **fields)), *flags, check=0)
        wait_for(lambda: [s for s, _, _ in process_states(home, "need").values()]
                 == ["running"] * 12, 150, "all 12 processes running")
        assert settled(home, "need", "engine", 3)
        assert len({n for _, n, _ in process_states(home, "need").values()}) == 3
        release.touch()
        wait_for(lambda: {s for s, _, _ in process_states(home, "need").values()}
                 == {"exited"}, 60, "all 12 processes to exit")
        wait_for(lambda: desired(home, "need", "engine") == 1
                 and settled(home, "need", "engine", 1), 90, "shrinking back to min")
    reasons = [d["message"] for d in history(home, "need", "elastic.decision")]
    assert any("waiting" in r and "-> 3" in r for r in reasons)


def test_target_policy_follows_a_metrics_program(home: Path, tmp_path: Path) -> None:
    depth = tmp_path / "depth.json"
    depth.write_text('{"depth": 30}')
    cei(home, "launch", str(PLANS / "elastic-target.yml"), "--name", "depth", "--var",
        f"depth_file={depth}", check=0)
    with watching(home, "depth"):
        wait_for(lambda: desired(home, "depth", "engine") == 4
                 and settled(home, "depth", "engine", 4), 120, "growth to max (4)")
        depth.write_text('{"depth": 2}')
        wait_for(lambda: desired(home, "depth", "engine") == 1
                 and settled(home, "depth", "engine", 1), 120, "shrinking to min (1)")
    reasons = [d["message"] for d in history(home, "depth", "elastic.decision")]
    assert any(r.startswith("depth average 30.0 vs target 10 on 1 node(s): 1 -> 3")
               for r in reasons), reasons
    assert any("depth average 2.0 vs target 10" in r and "-> 1" in r for r in reasons)
    status = cei_json(home, "status", "depth")
    assert status["elastic"] == [{
        "service": "engine", "policy": "target", "min": 1, "desired": 1, "max": 4,
        "healthy": 1, "decision": status["elastic"][0]["decision"],
        "decided": status["elastic"][0]["decided"], "failures": 0, "backoff_until": None}]
    assert status["controller"] is None and len(status["retired"]) >= 3


def test_one_watch_per_run_scale_bounds_and_terminate_stops_it(home: Path) -> None:
    cei(home, "launch", str(PLANS / "elastic-heal.yml"), "--name", "one", "--var", "engines=1",
        check=0)
    watch = start_watch(home, "one")
    try:
        wait_for(lambda: any(line["event"] == "elastic.state" for line in watch.lines()), 60,
                 "the watch's first tick")
        second = cei(home, "watch", "one", "--once", check=2)
        assert f"pid {watch.proc.pid} on host" in second.stderr
        assert "outside engine's bounds min 1 .. max 4" in cei(
            home, "scale", "one", "engine", "9", check=2).stderr
        assert "not elastic" in cei(home, "scale", "one", "web", "2", check=2).stderr
        scaled = cei(home, "scale", "one", "engine", "2", check=0)
        assert "handed to the controller" in scaled.stdout
        assert "engine has 2 healthy node(s)" in scaled.stdout
        assert ready(home, "one", "engine") == ["engine/0", "engine/1"]
        down = cei(home, "terminate", "one", check=0)
        assert "asking the controller of run one" in down.stdout
        assert watch.proc.wait(60) == 0
    finally:
        stop_watch(watch)
    summary = [line for line in watch.lines() if line["event"] == "summary"][-1]
    assert summary["stopped"] == "stop requested"
    assert "run one is terminated: it has no nodes left" in cei(home, "watch", "one",
                                                                check=2).stderr
    assert "is terminated" in cei(home, "repair", "one", check=2).stderr


def test_scale_down_drains_the_retired_engine(home: Path, tmp_path: Path) -> None:
    cei(home, "launch", str(PLANS / "elastic-heal.yml"), "--name", "drain", check=0)
    # Placement between two idle engines follows their CPU, so make it certain by slot use:
    # one process on each engine, free engine/1 again, and the next one must land there.
    for name in ("stays", "other"):
        cei(home, "process", "run", "drain", str(definition(tmp_path, name)), check=0)
    placed = {node: name for name, (_, node, _) in process_states(home, "drain").items()}
    assert sorted(placed) == ["engine/0", "engine/1"]
    cei(home, "process", "kill", "drain", placed["engine/1"], check=0)
    stays = placed["engine/0"]
    cei(home, "process", "run", "drain", str(definition(tmp_path, "moves", restart="always")),
        check=0)
    assert process_states(home, "drain")["moves"][1] == "engine/1"
    cei(home, "scale", "drain", "engine", "1", check=0)  # a tie: the newest goes
    assert ready(home, "drain", "engine") == ["engine/0"]
    states = process_states(home, "drain")
    assert states["moves"] == ("running", "engine/0", 1)
    assert states[stays] == ("running", "engine/0", 0)


def test_scale_repair_and_once_without_a_watch(home: Path) -> None:
    cei(home, "launch", str(PLANS / "elastic-heal.yml"), "--name", "direct", check=0)
    cei(home, "scale", "direct", "engine", "3", check=0)
    assert ready(home, "direct", "engine") == ["engine/0", "engine/1", "engine/2"]
    os.kill(local_node_pid(home, "direct", "engine/1"), signal.SIGKILL)
    repaired = cei(home, "repair", "direct", check=0)
    assert "repaired engine/1 -> engine/3" in repaired.stdout
    assert ready(home, "direct", "engine") == ["engine/0", "engine/2", "engine/3"]
    forced = cei(home, "repair", "direct", "web/0", "--json", check=0)
    assert ndjson(forced.stdout)[-1]["result"]["replaced"] == {"web/0": "web/1"}
    assert ready(home, "direct", "web") == ["web/1"]
    os.kill(local_node_pid(home, "direct", "engine/0"), signal.SIGKILL)
    once = ndjson(cei(home, "watch", "direct", "--once", "--json", check=0).stdout)
    service = once[-1]["services"][0]
    assert (service["service"], service["healthy"], service["settled"]) == ("engine", 3, True)
    assert ready(home, "direct", "engine") == ["engine/2", "engine/3", "engine/4"]
    assert cei(home, "status", "direct", "--json", check=0)


def test_a_cloud_that_refuses_every_create_gets_backoff_and_nothing_leaks(
    home: Path, tmp_path: Path, ec2_emulator: EC2Emulator, ec2_image: str
) -> None:
    plan = tmp_path / "refuse.yml"
    plan.write_text(yaml.safe_dump({
        "plan": "refuse",
        "clouds": {"aws": {"driver": "ec2", "region": ec2_emulator.region,
                           "endpoint_url": ec2_emulator.endpoint, "image": ec2_image,
                           "size": "t3.micro"}},
        "levels": [{"services": {"engine": {
            "cloud": "aws", "elastic": {"min": 1, "max": 4, "health": {"missing_timeout": 3}}}}}],
    }))
    cei(home, "launch", str(plan), "--name", "refuse", check=0)
    alive = ("pending", "running")
    assert len([i for i in ec2_emulator.instances() if i["State"]["Name"] in alive]) == 1
    ec2_emulator.middleware.refuse_creates = True
    with watching(home, "refuse") as watch:
        wait_for(lambda: any(line["event"] == "elastic.state" for line in watch.lines()), 60,
                 "the watch's first tick")
        cei(home, "scale", "refuse", "engine", "3", "--timeout", "3", check=3)
        wait_for(lambda: len(history(home, "refuse", "elastic.backoff")) >= 4, 90,
                 "four failed launches")
    ec2_emulator.middleware.refuse_creates = False
    waits = [e["retry_in"] for e in history(home, "refuse", "elastic.backoff")]
    assert waits[:4] == [2.0, 4.0, 8.0, 16.0]
    assert "InstanceLimitExceeded" in history(home, "refuse", "elastic.backoff")[0]["message"]
    assert ec2_emulator.middleware.refused >= 4
    assert len([i for i in ec2_emulator.instances() if i["State"]["Name"] in alive]) == 1
    cei(home, "terminate", "refuse", check=0)
    assert not [i for i in ec2_emulator.instances() if i["State"]["Name"] in alive]
    with Store(home) as store:
        assert {r.state for r in store.resources("refuse")} <= {"terminated", "not-created"}
