"""The node monitor's heartbeats and node-scoped sensors, on this machine's real /proc."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launchplan.agent import sensors
from launchplan.agent.monitor import Monitor, metrics_of, run_monitor, run_program
from launchplan.levels.monitor import parse_heartbeat

BURN = "import time\nend = time.time() + 0.6\nwhile time.time() < end: pass\n"


def test_node_scope_counts_only_the_node_s_processes(tmp_path: Path) -> None:
    """A process that carries the node's root is charged to it; the same work elsewhere is not."""
    mine, other = sensors.NodeScope(str(tmp_path / "a")), sensors.NodeScope(str(tmp_path / "b"))
    mine.sample()
    other.sample()
    env = {**os.environ, sensors.NODE_ROOT_ENV: str(tmp_path / "a")}
    burner = subprocess.Popen([sys.executable, "-c", BURN], env=env)
    try:
        deadline = time.monotonic() + 10
        while burner.poll() is None and time.monotonic() < deadline:
            mine.sample()  # sees it while it runs
            time.sleep(0.1)
        busy_mine, resident = mine.sample()
        busy_other, _ = other.sample()
    finally:
        burner.kill()
        burner.wait(10)
    assert busy_mine.busy > 0 and busy_other.busy == 0
    assert busy_mine.total > 0 and resident >= 0


def test_reader_reports_node_scope_when_on_a_local_node(tmp_path: Path) -> None:
    reader = sensors.SensorReader(node_root=str(tmp_path))
    doc = reader.read()
    assert doc["scope"] == "node" and 0.0 <= doc["cpu"]["percent"] <= 100.0
    assert set(doc["memory"]) == {"total_bytes", "used_bytes", "used_percent"}
    assert sensors.SensorReader(node_root="").read()["scope"] == "machine"


def test_metrics_of_takes_numbers_only() -> None:
    assert metrics_of('{"queue": 4, "name": "x", "ok": true, "lag": 1.5}') == {
        "queue": 4.0, "lag": 1.5}
    with pytest.raises(ValueError, match="one JSON object"):
        metrics_of("[1, 2]")
    with pytest.raises(ValueError):
        metrics_of("not json")


def test_run_program_kills_the_whole_group_on_timeout(tmp_path: Path) -> None:
    marker = tmp_path / "survived"
    script = tmp_path / "slow.sh"
    script.write_text(f"(sleep 3; touch '{marker}') & sleep 30\n")
    status, output = run_program(str(script), timeout=0.5)
    assert status == 124 and "timed out" in output
    time.sleep(3.5)
    assert not marker.exists()


def test_heartbeats_from_the_ready_and_metrics_programs(tmp_path: Path) -> None:
    ready, metrics = tmp_path / "ready.sh", tmp_path / "metrics.sh"
    ready.write_text("echo not yet >&2; exit 3\n")
    metrics.write_text("echo '{\"depth\": 7}'\n")
    out = io.StringIO()
    assert run_monitor(Monitor(None, str(ready), 5.0, str(metrics), 5.0), 0.05, count=2,
                       out=out) == 0
    beats = [parse_heartbeat(line.encode()) for line in out.getvalue().splitlines()]
    assert [b.seq for b in beats if b] == [0, 1]
    first = beats[0]
    assert first is not None and first.health == "failing" and "not yet" in first.detail
    assert first.metrics == {"depth": 7.0} and first.value("depth") == 7.0
    assert set(first.sensors) == {"cpu", "memory", "net_in", "net_out", "load"}
    assert first.value("cpu") == first.sensors["cpu"]


def test_a_down_agent_is_reported_not_raised(tmp_path: Path) -> None:
    beat = Monitor(str(tmp_path / "no-agent"), None, 1.0, None, 1.0).beat()
    assert beat["health"] == "agent-down" and "no agent" in beat["detail"]


def test_the_monitor_stops_when_its_reader_goes_away() -> None:
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    assert run_monitor(Monitor(None, None, 1.0, None, 1.0), 0.01, out=Closed()) == 0


@pytest.mark.parametrize("line", [b"", b"noise", b"[1]", b'{"v": 2, "health": "ok"}',
                                  b'{"v": 1}', b"x" * (2 << 20)])
def test_parse_heartbeat_ignores_what_is_not_one(line: bytes) -> None:
    assert parse_heartbeat(line) is None


def test_parse_heartbeat_keeps_numbers_and_drops_the_rest() -> None:
    beat = parse_heartbeat(json.dumps({"v": 1, "seq": 3, "health": "ok", "sensors": {
        "cpu": 12.5, "bad": "x", "flag": True}, "agent": {"slots": {"total": 4}}}).encode())
    assert beat is not None and beat.ok and beat.sensors == {"cpu": 12.5}
    assert beat.agent == {"slots": {"total": 4}} and beat.value("memory") is None


def test_the_metrics_program_runs_once_a_period_not_once_a_beat(tmp_path: Path) -> None:
    runs, metrics = tmp_path / "runs", tmp_path / "metrics.sh"
    metrics.write_text(f"echo x >> '{runs}'; echo '{{\"depth\": 1}}'\n")
    out = io.StringIO()
    run_monitor(Monitor(None, None, 1.0, str(metrics), 5.0, metrics_every=60.0), 0.05,
                count=3, out=out)
    beats = [parse_heartbeat(line.encode()) for line in out.getvalue().splitlines()]
    assert [b.metrics for b in beats if b] == [{"depth": 1.0}] * 3
    assert runs.read_text().count("x") == 1
