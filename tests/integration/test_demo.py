"""`cei demo sliding-window` end to end: the embedded transport, RabbitMQ, and --run reuse.

The averages in OUT.csv are checked against demo.sliding_window.brute_force (exact
summation over the raw input) to 1e-9 relative.
"""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from launchplan.demo.sliding_window import brute_force
from launchplan.demo.stream import read_series
from tests.conftest import require
from tests.integration import rabbitmq
from tests.integration.cli_helpers import REPO, cei, cei_json, ndjson, node_processes

pytestmark = pytest.mark.integration

SAMPLE = REPO / "plans" / "data" / "sample.csv"
rabbitmq_url = rabbitmq.rabbitmq_url


def check_output(out: Path, data: Path, window: float) -> list[dict[str, str]]:
    """OUT.csv has one row per input value in publish order, with exact averages."""
    _, messages = read_series(data)
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["time", "variable", "value", "average", "count"]
    assert len(rows) == len(messages)
    expected = brute_force([(m.variable, m.time, m.value) for m in messages], window)
    for row, message, (average, count) in zip(rows, messages, expected, strict=True):
        assert row["variable"] == message.variable
        assert float(row["time"]) == message.time and float(row["value"]) == message.value
        assert int(row["count"]) == count
        assert float(row["average"]) == pytest.approx(average, rel=1e-9, abs=0.0)
    return rows


def summary_of(stdout: str) -> dict[str, Any]:
    docs = ndjson(stdout)
    assert all(d["v"] == 1 for d in docs)
    summaries = [d for d in docs if d.get("event") == "summary"]
    assert len(summaries) == 1, docs
    return summaries[0]



def test_demo_over_the_embedded_transport(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    proc = cei(home, "demo", "sliding-window", "--input", str(SAMPLE), "--window", "10",
               "--output", str(out), check=0)
    assert "300 messages" in proc.stdout and "messages/s" in proc.stdout
    check_output(out, SAMPLE, 10.0)
    # the run was terminated and nothing of it runs any more
    runs = cei_json(home, "list")["runs"]
    assert [r["status"] for r in runs] == ["terminated"]
    assert node_processes(home) == []


def test_demo_reuse_with_run_keeps_the_same_engine_process(home: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.csv"
    proc = cei(home, "demo", "sliding-window", "--input", str(SAMPLE), "--window", "10",
               "--output", str(first), "--keep", "--name", "sw", "--json", check=0)
    one = summary_of(proc.stdout)
    assert one["run"] == "sw" and one["kept"] is True and one["messages"] == 300
    pid = cei_json(home, "process", "list", "sw")["processes"][0]["pid"]
    assert pid == one["pid"] == one["process_pid"]

    second = tmp_path / "second.csv"
    proc = cei(home, "demo", "sliding-window", "--input", str(SAMPLE), "--window", "4.5",
               "--output", str(second), "--run", "sw", "--json", check=0)
    two = summary_of(proc.stdout)
    check_output(second, SAMPLE, 4.5)
    check_output(first, SAMPLE, 10.0)
    listed = cei_json(home, "process", "list", "sw")["processes"]
    assert [p["name"] for p in listed] == ["sliding-window"]
    assert listed[0]["pid"] == pid == two["pid"]
    assert listed[0]["restarts"] == 0
    # --run leaves the run up
    assert cei_json(home, "list")["runs"][0]["status"] == "ready"

    # the transform killed on its node is restarted by its agent (restart: abnormal)
    os.kill(pid, signal.SIGKILL)
    waited = cei_json(home, "process", "wait", "sw", "sliding-window", "--timeout", "30")
    assert waited["reached"]
    third = tmp_path / "third.csv"
    proc = cei(home, "demo", "sliding-window", "--input", str(SAMPLE), "--window", "10",
               "--output", str(third), "--run", "sw", "--json", check=0)
    three = summary_of(proc.stdout)
    assert three["pid"] != pid
    check_output(third, SAMPLE, 10.0)
    after = cei_json(home, "process", "list", "sw")["processes"][0]
    assert after["restarts"] == 1 and after["pid"] == three["pid"]


def test_demo_over_rabbitmq(home: Path, tmp_path: Path, rabbitmq_url: str) -> None:
    out = tmp_path / "out.csv"
    proc = cei(home, "demo", "sliding-window", "--input", str(SAMPLE), "--window", "10",
               "--output", str(out), "--transport", rabbitmq_url, "--keep", "--json", check=0)
    summary = summary_of(proc.stdout)
    assert summary["transport"].startswith("amqp://guest:***@127.0.0.1:")
    assert "guest:guest" not in proc.stdout
    check_output(out, SAMPLE, 10.0)
    # the broker password is in neither the store nor the transform's command line
    stored = b"".join(p.read_bytes() for p in home.glob("cei.db*"))
    assert b":guest@" not in stored
    argv = Path(f"/proc/{summary['pid']}/cmdline").read_bytes()
    assert b"--transport" in argv and b":guest@" not in argv


def test_demo_plan_starts_its_own_rabbitmq(home: Path, tmp_path: Path) -> None:
    require(rabbitmq.SERVER_WRAPPER.exists(), "rabbitmq-server is not installed")
    out = tmp_path / "out.csv"
    proc = cei(home, "demo", "sliding-window", "--input", str(SAMPLE), "--window", "3",
               "--output", str(out), "--var", "broker=rabbitmq", "--var", "engines=1",
               "--json", timeout=300, check=0)
    summary = summary_of(proc.stdout)
    assert summary["transport"].startswith("amqp://")
    check_output(out, SAMPLE, 3.0)
    assert node_processes(home) == []


@pytest.mark.parametrize("text, where, what", [
    ("t,a\n1,2\n", 1, "header"),
    ("time,a,b\n1,2,3\n2,4\n", 3, "columns"),
    ("time,a\n1,2\n1,3\n", 3, "times must increase"),
    ("time,a\n1,2\n2,x\n", 3, "not a number"),
    ("time,a\n1,nan\n", 2, "finite"),
])
def test_bad_csv_is_a_usage_error_naming_the_line(home: Path, tmp_path: Path, text: str,
                                                  where: int, what: str) -> None:
    data = tmp_path / "bad.csv"
    data.write_text(text)
    proc = cei(home, "demo", "sliding-window", "--input", str(data), "--window", "10",
               "--output", str(tmp_path / "out.csv"))
    assert proc.returncode == 2, proc.stderr
    assert f"{data}:{where}" in proc.stderr and what in proc.stderr
    assert "Traceback" not in proc.stderr
    assert cei_json(home, "list")["runs"] == []  # nothing was launched


def test_plot_without_matplotlib_says_how_to_get_it(home: Path, tmp_path: Path) -> None:
    # whether or not matplotlib is installed here, the command must not see it
    hide = tmp_path / "hide-matplotlib"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['matplotlib'] = None\n")
    proc = cei(home, "demo", "sliding-window", "--input", str(SAMPLE), "--window", "10",
               "--output", str(tmp_path / "o.csv"), "--plot", str(tmp_path / "o.png"),
               env={"PYTHONPATH": f"{hide}{os.pathsep}{REPO}"})
    assert proc.returncode == 2 and "pip install 'cei[plot]'" in proc.stderr
    assert json.loads(cei(home, "list", "--json").stdout)["runs"] == []
