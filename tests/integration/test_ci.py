"""CI smoke deploys on the local cloud: JUnit reports, deadlines, always-teardown, sweeps."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from launchplan.state import Store
from tests.integration.cli_helpers import (
    PLANS,
    cei,
    cei_json,
    cei_running,
    ndjson,
    node_processes,
    wait_for,
)
from tests.junit_report import by_name, read_report

pytestmark = pytest.mark.integration

SMOKE = str(PLANS / "smoke.yml")
SECRET = "pw-5f1c9e-do-not-show"


def _everything_written(home: Path) -> bytes:
    """Every byte cei keeps under $CEI_HOME: the store and the node logs."""
    return b"".join(p.read_bytes() for p in home.rglob("*")
                    if p.is_file() and (p.suffix == ".log" or p.name.startswith("cei.db")))


def test_passing_launch_and_status_reports(home: Path, tmp_path: Path) -> None:
    env = {"GITHUB_ACTIONS": "true", "CEI_RUN_NAME": "ci-41", "CEI_TEST_DB_PASSWORD": SECRET}
    launch = cei(home, "launch", SMOKE, "--junit", str(tmp_path / "launch.xml"), env=env,
                 check=0)
    # the name came from $CEI_RUN_NAME; the last line is an annotation for the job
    assert launch.stdout.splitlines()[-1].startswith(
        "::notice title=cei launch ci-41::run ci-41 is ready: 2 nodes in ")
    cases = read_report(tmp_path / "launch.xml")
    assert [(c.suite, c.name, c.outcome) for c in cases] == [
        ("data", "store/0 provision", "passed"), ("data", "store/0 boot", "passed"),
        ("data", "store/0 ready", "passed"), ("front", "web/0 provision", "passed"),
        ("front", "web/0 boot", "passed"), ("front", "web/0 ready", "passed")]
    assert {c.classname for c in cases} == {"data.store", "front.web"}
    assert all(c.time > 0 for c in cases if not c.name.endswith("ready"))
    # what the boot printed reached the node log, its password masked
    log = (home / "runs" / "ci-41" / "logs" / "web-0.log").read_text()
    assert "connecting with ***" in log
    assert SECRET.encode() not in _everything_written(home)

    cei(home, "status", "ci-41", "--junit", str(tmp_path / "status.xml"), check=0)
    cases = by_name(read_report(tmp_path / "status.xml"))
    assert sorted(cases) == sorted(f"{n} {check}" for n in ("store/0", "web/0")
                                   for check in ("state", "cloud", "ready"))
    assert all(c.outcome == "passed" for c in cases.values())

    # the web node loses its config: its ready check fails, with grep's complaint
    config = next((home / "runs" / "ci-41" / "nodes" / "web-0").rglob("config.json"))
    config.unlink()
    cei(home, "status", "ci-41", "--junit", str(tmp_path / "status.xml"), check=1)
    ready = by_name(read_report(tmp_path / "status.xml"))["web/0 ready"]
    assert (ready.outcome, ready.type) == ("failure", "exit status 2")
    assert ready.message == "ready program exited with status 2"
    assert "config.json" in ready.text


def test_failing_launch_report_carries_the_masked_tail(home: Path, tmp_path: Path) -> None:
    report = tmp_path / "reports" / "launch.xml"  # its directory does not exist yet
    env = {"GITHUB_ACTIONS": "true", "CEI_TEST_DB_PASSWORD": SECRET}
    launch = cei(home, "launch", SMOKE, "--name", "bad1", "--var", "fail=yes", "--junit",
                 str(report), "--json", env=env, check=1)
    cases = by_name(read_report(report))
    assert len(cases) == 5
    assert [n for n, c in cases.items() if c.outcome != "passed"] == ["web/0 boot"]
    boot = cases["web/0 boot"]
    assert (boot.type, boot.message) == ("exit status 4", "boot program exited with status 4")
    assert boot.text == "\\x1b[31mstore refused password ***\\x1b[0m"  # escaped, masked
    # the annotation names the failure; NDJSON stays clean on stdout
    assert "::error title=cei launch bad1::run bad1 failed after " in launch.stderr
    assert "%0Aweb/0: boot program exited with status 4:%0A" in launch.stderr
    assert ndjson(launch.stdout)[-1]["exit_code"] == 1
    for text in (launch.stdout, launch.stderr, report.read_text()):
        assert SECRET not in text
    assert SECRET.encode() not in _everything_written(home)


def test_a_launch_that_never_starts_still_leaves_a_report(home: Path, tmp_path: Path) -> None:
    report = tmp_path / "launch.xml"
    cei(home, "launch", str(tmp_path / "missing.yml"), "--junit", str(report), check=2)
    [case] = read_report(report)
    assert case.outcome == "error" and "missing.yml" in case.message
    proc = cei(home, "launch", SMOKE, "--junit", str(tmp_path), check=2)
    assert "is a directory" in proc.stderr and "Traceback" not in proc.stderr


def test_deadline_stops_the_launch_and_tears_it_down(home: Path, tmp_path: Path) -> None:
    deadline = 3.0
    launch = cei(home, "launch", SMOKE, "--name", "late", "--var", "boot_seconds=60",
                 "--deadline", f"{deadline:g}s", "--on-failure", "terminate", "--json",
                 "--junit", str(tmp_path / "launch.xml"), check=3)
    events = ndjson(launch.stdout)
    started = next(e["time"] for e in events if e["event"] == "run.started")
    finished = next(e for e in events if e["event"] == "run.finished")
    assert finished["state"] == "failed" and "deadline of 3s" in finished["data"]["deadline"]
    # the clock starts before the run is recorded: the stop comes within a second or two of
    # the deadline (a loaded machine gets the extra second), long before the boot would end
    assert finished["time"] - started < deadline + 2.0
    summary = events[-1]
    assert summary["exit_code"] == 3 and summary["terminated"] is True
    assert all(f["timeout"] for f in summary["failures"])
    # the step in flight (the boot, unless the machine is slow to make the node) timed out
    [stopped] = [c for c in read_report(tmp_path / "launch.xml") if c.outcome != "passed"]
    assert (stopped.outcome, stopped.type) == ("failure", "timeout")
    assert stopped.message.startswith("the launch deadline of 3s passed")
    assert node_processes(home) == []
    history = cei_json(home, "history", "late")
    assert history["resources"] and all(r["state"] == "terminated"
                                        for r in history["resources"])


def test_an_interrupted_launch_still_writes_its_report(home: Path, tmp_path: Path) -> None:
    report = tmp_path / "launch.xml"
    with cei_running(home, "launch", SMOKE, "--name", "cut", "--var", "boot_seconds=60",
                     "--junit", str(report), stdout=subprocess.DEVNULL) as proc:
        log = home / "runs" / "cut" / "logs" / "store-0.log"
        wait_for(lambda: log.exists() and "boot: " in log.read_text(), 60, "the slow boot")
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    boot = by_name(read_report(report))["store/0 boot"]
    assert (boot.outcome, boot.type) == ("error", "interrupted")
    cei(home, "terminate", "cut", check=0)


def test_terminate_if_exists_and_option_errors(home: Path) -> None:
    proc = cei(home, "terminate", "--if-exists", "never-made", check=0)
    assert "nothing to terminate" in proc.stdout
    assert cei_json(home, "terminate", "--if-exists", "never-made")["status"] == "absent"
    cei(home, "terminate", "never-made", check=2)
    for args, needle in ((["terminate", "x", "--all"], "give no RUN"),
                         (["terminate", "x", "--older-than", "2h"], "narrow --all"),
                         (["terminate"], "give the RUN"),
                         (["terminate", "--all", "--older-than", "2"], "not a duration"),
                         (["launch", SMOKE, "--deadline", "soon"], "not a duration")):
        proc = cei(home, *args, check=2)
        assert needle in proc.stderr and "Traceback" not in proc.stderr


def _backdate(home: Path, run: str, hours: float) -> None:
    created = datetime.now(timezone.utc) - timedelta(hours=hours)
    with sqlite3.connect(home / "cei.db") as db:
        db.execute("UPDATE runs SET created = ? WHERE name = ?",
                   (created.isoformat(timespec="milliseconds"), run))


def test_sweep_removes_only_old_runs_of_the_plan(home: Path, tmp_path: Path) -> None:
    plan = tmp_path / "swept.yml"
    plan.write_text("plan: swept\nlevels:\n  - services:\n      n: {boot: {command: 'true'}}\n")
    cei(home, "launch", str(plan), "--name", "old-swept", check=0)
    assert node_processes(home)
    store = Store(home)
    for name, plan_name in (("old-other", "other"), ("new-swept", "swept"), ("busy", "swept")):
        store.create_run(name, plan_name, tmp_path / f"{plan_name}.yml")
    for name in ("old-swept", "old-other", "busy"):
        _backdate(home, name, 3)

    with store.locked("busy"):  # as if another cei command were changing it right now
        swept = ndjson(cei(home, "terminate", "--all", "--older-than", "2h", "--plan", "swept",
                           "--json", check=4).stdout)
    summary = swept[-1]
    assert sorted(summary["runs"]) == ["busy", "old-swept"]
    assert summary["terminated"] == ["old-swept"] and summary["incomplete"] == []
    assert "being changed by another cei process" in summary["in_use"]["busy"]
    assert [e["run"] for e in swept if e["event"] == "run.terminated"] == ["old-swept"]
    assert node_processes(home) == []
    states = {r["run"]: r["status"] for r in cei_json(home, "list")["runs"]}
    assert states == {"old-swept": "terminated", "old-other": "launching",
                      "new-swept": "launching", "busy": "launching"}

    proc = cei(home, "terminate", "--all", "--older-than", "2h", check=0)
    assert "sweeping 2 runs older than 2h: " in proc.stdout
    assert "swept 2 runs: 2 terminated" in proc.stdout
    assert {r.name: r.status for r in store.list_runs()} == {
        "old-swept": "terminated", "old-other": "terminated", "new-swept": "launching",
        "busy": "terminated"}
    proc = cei(home, "terminate", "--all", "--older-than", "2h", "--plan", "swept", check=0)
    assert "nothing to sweep: no live run of plan swept older than 2h" in proc.stdout
