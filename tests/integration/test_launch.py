"""Launch real plans on the embedded local cloud through the `cei` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.integration.cli_helpers import (
    PLANS,
    REPO,
    both_stores,
    cei,
    cei_json,
    cei_running,
    ndjson,
    node_processes,
)

pytestmark = pytest.mark.integration



def nodes_by_name(status: dict) -> dict[str, dict]:
    return {n["node"]: n for n in status["nodes"]}


@both_stores
def test_three_levels_pass_outputs_through_args_and_config(home: Path) -> None:
    launch = cei(home, "launch", str(PLANS / "chain.yml"), "--name", "c1", "--json", check=0)
    summary = ndjson(launch.stdout)[-1]
    assert summary["event"] == "summary" and summary["status"] == "ready"
    assert all(e["v"] == 1 for e in ndjson(launch.stdout))

    status = cei_json(home, "status", "c1")
    assert status["healthy"] is True
    nodes = nodes_by_name(status)
    assert set(nodes) == {"a/0", "b/0", "b/1", "c/0"}
    assert all(n["state"] == "ready" for n in nodes.values())

    tricky = "it's a $HOME; rm -rf / \"quoted\""
    a = nodes["a/0"]["outputs"]
    assert a["argv"] == [tricky]  # one argument, unchanged
    for i in (0, 1):
        b = nodes[f"b/{i}"]["outputs"]
        assert b["argv"] == [tricky, f"b{i}"]
        assert b["config"] == {"from_a": tricky, "a_address": nodes["a/0"]["address"]}
    c = nodes["c/0"]["outputs"]
    assert c["argv"] == [tricky]
    assert c["config"] == {"from_b": tricky}
    # the context document lists every node known when c booted
    assert c["context_nodes"] == ["a/0", "b/0", "b/1", "c/0"]


def test_node_environment(home: Path) -> None:
    cei(home, "launch", str(PLANS / "chain.yml"), "--name", "env1", check=0)
    b1 = nodes_by_name(cei_json(home, "status", "env1", "--cached"))["b/1"]["outputs"]
    env = b1["env"]
    assert env["CEI_RUN"] == "env1"
    assert env["CEI_SERVICE"] == "b"
    assert env["CEI_NODE"] == "b/1"
    assert env["CEI_NODE_INDEX"] == "1"
    assert env["CEI_LEVEL"] == "second"
    stage = b1["cwd"]
    assert stage.endswith("/.cei/env1/b/1")
    assert b1["stage_mode"] == "0o700"
    for name, file in (("CEI_CONFIG", "config.json"), ("CEI_CONTEXT", "context.json"),
                       ("CEI_OUTPUT", "output.json")):
        assert env[name] == f"{stage}/{file}"


@both_stores
def test_terminate_leaves_no_node_process(home: Path) -> None:
    cei(home, "launch", str(PLANS / "counted.yml"), "--name", "t1", "--var", "n=3", check=0)
    status = cei_json(home, "status", "t1")
    assert len(status["nodes"]) == 3  # "{{ vars.n }}" rendered as the integer 3
    assert node_processes(home)
    down = cei(home, "terminate", "t1", "--json", check=0)
    assert ndjson(down.stdout)[-1]["remaining"] == []
    assert node_processes(home) == []
    # terminate programs ran on every node before it was destroyed
    marks = list((home / "runs" / "t1" / "nodes").glob("*/terminated-by-program"))
    assert len(marks) == 3
    # a second terminate of a finished teardown is fine
    cei(home, "terminate", "t1", check=0)
    assert cei_json(home, "status", "t1", "--cached", check=1)["status"] == "terminated"


@both_stores
def test_failing_boot_stops_later_levels_and_terminate_cleans_up(home: Path) -> None:
    proc = cei(home, "launch", str(PLANS / "failing.yml"), "--name", "f1", check=1)
    assert "bad/1" in proc.stderr
    assert "disk on fire: detail" in proc.stderr  # the tail of the program's stderr
    assert "Traceback" not in proc.stderr
    nodes = nodes_by_name(cei_json(home, "status", "f1", "--cached", check=1))
    assert nodes["ok/0"]["state"] == "ready"
    assert nodes["bad/1"]["state"] == "failed"
    assert "never/0" not in nodes  # level 3 never started
    cei(home, "terminate", "f1", check=0)
    assert node_processes(home) == []


def test_on_failure_terminate_tears_down(home: Path) -> None:
    cei(home, "launch", str(PLANS / "failing.yml"), "--name", "f2", "--on-failure",
        "terminate", check=1)
    assert node_processes(home) == []
    history = cei_json(home, "history", "f2")
    assert history["resources"] and all(r["state"] == "terminated"
                                        for r in history["resources"])


def test_ready_timeout_exits_3(home: Path) -> None:
    proc = cei(home, "launch", str(PLANS / "ready-timeout.yml"), "--name", "r1", check=3)
    assert "ready program did not pass within 2s" in proc.stderr
    assert "not yet" in proc.stderr


def test_boot_output_must_be_a_json_object(home: Path) -> None:
    proc = cei(home, "launch", str(PLANS / "bad-output.yml"), "--name", "o1", check=1)
    assert "one JSON object to $CEI_OUTPUT, not a list" in proc.stderr


def test_boot_outputs_past_the_limit_fail_the_node_and_stay_out_of_the_store(
        home: Path, tmp_path: Path) -> None:
    plan = tmp_path / "huge.yml"
    plan.write_text(textwrap.dedent("""\
        plan: huge
        levels:
          - services:
              liar:
                boot:
                  command: |
                    python3 - <<'PY'
                    import json, os
                    json.dump({"blob": "x" * 3000000}, open(os.environ["CEI_OUTPUT"], "w"))
                    PY
        """))
    proc = cei(home, "launch", str(plan), "--name", "huge", check=1)
    assert "wrote more than 1,048,576 bytes to $CEI_OUTPUT" in proc.stderr
    assert (home / "cei.db").stat().st_size < 1_000_000
    cei(home, "terminate", "huge", check=0)


def test_a_closed_stdout_never_strands_the_launch(home: Path) -> None:
    """`cei launch --json | head -3`: the reader goes away; the launch still finishes and the
    run's state is final."""
    env = {**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "launchplan", "launch", str(PLANS / "counted.yml"), "--name",
         "piped", "--var", "n=2", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    for _ in range(3):
        proc.stdout.readline()
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr
    status = cei_json(home, "status", "piped")
    assert status["status"] == "ready"
    assert {n["state"] for n in status["nodes"]} == {"ready"}
    cei(home, "terminate", "piped", check=0)


@pytest.mark.parametrize("verdict", ["ok", "fail"])
def test_secret_variables_reach_programs_but_nothing_cei_writes(home: Path,
                                                                 verdict: str) -> None:
    token, password = "tok-" + os.urandom(6).hex(), "pw-" + os.urandom(6).hex()
    run = f"secret-{verdict}"
    launch = cei(home, "launch", str(PLANS / "secret-args.yml"), "--name", run, "--json",
                 "--secret-var", f"token={token}", "--secret-var", f"password={password}",
                 "--var", f"verdict={verdict}", check=0 if verdict == "ok" else 1)
    outputs = json.loads(cei(home, "status", run, "--cached", "--json").stdout)["nodes"][0][
        "outputs"]
    if verdict == "ok":
        assert outputs == {"length": len(token)}, "the program saw the real value"
    history = cei(home, "history", run, "--json", check=0)
    terminate = cei(home, "terminate", run, "--json", check=0)
    written = [launch.stdout, launch.stderr, history.stdout, terminate.stdout, terminate.stderr]
    for path in home.rglob("*"):
        if path.is_file() and "nodes" not in path.relative_to(home).parts:
            written.append(path.read_bytes().decode("utf-8", "replace"))
    assert "got *** and ***" in "".join(written)
    assert not [text for text in written if token in text or password in text]


def test_a_declared_secret_variable_needs_a_value(home: Path) -> None:
    proc = cei(home, "validate", str(PLANS / "secret-args.yml"), "--var", "token=x", check=2)
    assert "secret variable password has no value: give --secret-var password=..." in proc.stderr


def test_boot_and_terminate_programs_are_retried(home: Path) -> None:
    cei(home, "launch", str(PLANS / "flaky.yml"), "--name", "flaky", check=0)
    log = (home / "runs" / "flaky" / "logs" / "flaky-0.log").read_text()
    assert "boot: exit status 1; attempt 2 of 3" in log
    assert "boot: exit status 1; attempt 3 of 3" in log
    cei(home, "terminate", "flaky", check=0)
    assert "terminate: exit status 1; attempt 2 of 2" in (
        home / "runs" / "flaky" / "logs" / "flaky-0.log").read_text()
    assert list((home / "runs" / "flaky" / "nodes").glob("*/terminated-by-program"))


def test_cei_logs_prints_and_follows_node_output(home: Path) -> None:
    env = {**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(REPO)}
    launch = subprocess.Popen(
        [sys.executable, "-m", "launchplan", "launch", str(PLANS / "counted.yml"), "--name",
         "logged", "--var", "n=2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60  # follow from while the nodes boot
    while not (home / "runs" / "logged" / "logs").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    follow = subprocess.Popen([sys.executable, "-m", "launchplan", "logs", "logged", "-f"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert launch.wait(timeout=120) == 0
        one = cei(home, "logs", "logged", "worker/1", check=0).stdout
        assert "--- " in one and "boot: /bin/sh -c" in one and "worker/0" not in one
        lines = ndjson(cei(home, "logs", "logged", "worker", "--json", check=0).stdout)
        assert {line["node"] for line in lines} == {"worker/0", "worker/1"}
        assert "no node or service 'wroker' (did you mean 'worker'?)" in cei(
            home, "logs", "logged", "wroker", check=2).stderr
        cei(home, "terminate", "logged", check=0)
        out, err = follow.communicate(timeout=30)  # following ends with the run
    finally:
        for proc in (launch, follow):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert follow.returncode == 0, err
    assert "worker/0 | " in out and "worker/1 | " in out
    assert "terminate: exit status 0" in out


@both_stores
def test_a_reused_run_name_keeps_the_finished_run(home: Path) -> None:
    for _ in range(2):
        cei(home, "launch", str(PLANS / "counted.yml"), "--name", "again", check=0)
        cei(home, "terminate", "again", check=0)
    cei(home, "launch", str(PLANS / "counted.yml"), "--name", "again", "--var", "n=2", check=0)
    listed = cei_json(home, "list")["runs"]
    assert [r["run"] for r in listed] == ["again"]
    every = cei_json(home, "list", "--all")["runs"]
    assert [(r["run"], r["status"]) for r in every] == [
        ("again@1", "terminated"), ("again@2", "terminated"), ("again", "ready")]
    latest = cei_json(home, "history", "again")
    assert latest["run"] == "again" and latest["status"] == "ready"
    assert {e["node"] for e in latest["events"] if e["node"]} == {"worker/0", "worker/1"}
    runs = ndjson(cei(home, "history", "again", "--all", "--json", check=0).stdout)
    assert [r["run"] for r in runs] == ["again@1", "again@2", "again"]
    assert all(r["events"] for r in runs)
    assert "worker/0" in cei(home, "logs", "again@1", check=0).stdout  # its logs are kept
    mistyped = cei(home, "history", "agian", check=2)
    assert "no run named 'agian'; did you mean 'again'?" in mistyped.stderr
    cei(home, "terminate", "again", check=0)


@both_stores
def test_second_launch_of_a_live_run_is_refused(home: Path) -> None:
    cei(home, "launch", str(PLANS / "counted.yml"), "--name", "dup", check=0)
    proc = cei(home, "launch", str(PLANS / "counted.yml"), "--name", "dup", check=2)
    assert "already exists" in proc.stderr
    cei(home, "terminate", "dup", check=0)
    cei(home, "launch", str(PLANS / "counted.yml"), "--name", "dup", check=0)


def _interrupted_launch(home: Path, name: str, presses: int) -> tuple[int, str]:
    """Launch sleepy.yml, wait until both boots run, press Ctrl-C `presses` times."""
    env = {**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "launchplan", "launch", str(PLANS / "sleepy.yml"),
         "--name", name], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    logs_dir = home / "runs" / name / "logs"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until both boots are running
            logs = list(logs_dir.glob("*.log")) if logs_dir.exists() else []
            if len(logs) == 2 and all("boot: " in p.read_text() for p in logs):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the boot programs never started")
        for _ in range(presses):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.05)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


@both_stores
def test_ctrl_c_records_what_was_made_and_terminate_finds_it(home: Path) -> None:
    code, err = _interrupted_launch(home, "int1", presses=1)
    assert code == 130, err
    assert "cei terminate int1" in err
    # the in-flight boot programs were stopped, not left running on the kept nodes
    assert [pid for pid in node_processes(home) if _cmdline(pid).startswith(b"sleep\x0060")] == []
    nodes = nodes_by_name(cei_json(home, "status", "int1", "--cached", check=1))
    assert "later/0" not in nodes
    assert {n["resource_id"] for n in nodes.values()} == {"int1/sleeper/0", "int1/sleeper/1"}
    cei(home, "terminate", "int1", check=0)
    assert node_processes(home) == []


def test_second_ctrl_c_exits_at_once_and_terminate_still_finds_every_node(home: Path) -> None:
    shared_tmp = set(Path("/tmp").glob("cei-*.pid"))
    code, err = _interrupted_launch(home, "int2", presses=2)
    assert code == 130, err
    assert "interrupted again" in err
    assert node_processes(home)  # the nodes were left as they were
    down = cei(home, "terminate", "int2", "--json", check=0)
    assert ndjson(down.stdout)[-1]["remaining"] == []
    assert node_processes(home) == []
    # what the cut-off programs left in their TMPDIR stays inside the nodes, not in /tmp
    assert set(Path("/tmp").glob("cei-*.pid")) - shared_tmp == set()


def test_ctrl_c_during_terminate_exits_130_and_a_second_terminate_finishes(
        home: Path) -> None:
    cei(home, "launch", str(PLANS / "slow-terminate.yml"), "--name", "slow", check=0)
    runs = home / "runs" / "slow"
    with cei_running(home, "terminate", "slow") as proc:
        deadline = time.monotonic() + 60
        while not list(runs.glob("nodes/*/home/slept")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(runs.glob("nodes/*/home/slept")), "the terminate program never started"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "not torn down yet: base/0, top/0" in err and "cei terminate slow" in err
    assert not list(runs.glob("nodes/*/*-terminated"))
    assert node_processes(home)
    status = json.loads(cei(home, "status", "slow", "--cached", "--json").stdout)
    assert status["status"] == "terminating"
    done = cei(home, "terminate", "slow", check=0)
    assert "terminated" in done.stdout
    assert sorted(p.name for p in runs.glob("nodes/*/*-terminated")) == ["base-terminated",
                                                                        "top-terminated"]
    assert node_processes(home) == []


def test_a_node_killed_mid_boot_is_reported_lost(home: Path, tmp_path: Path) -> None:
    plan = tmp_path / "one-sleeper.yml"
    plan.write_text("plan: lost\nlevels:\n  - services:\n      sleeper: "
                    "{boot: {command: 'sleep 60'}}\n")
    log = home / "runs" / "lost" / "logs" / "sleeper-0.log"
    with cei_running(home, "launch", str(plan), "--name", "lost") as proc:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (log.exists() and "boot: " in log.read_text()):
            time.sleep(0.1)
        status = json.loads((home / "runs" / "lost" / "nodes" / "sleeper-0" / "status.json")
                            .read_text())
        os.kill(status["pid"], signal.SIGKILL)
        _out, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, err
    lost = [line for line in err.splitlines() if line.startswith("error: sleeper/0: ")]
    assert lost and "node lost: the connection closed before the command ended" in lost[0]
    assert "status -1" not in err
    cei(home, "terminate", "lost", check=0)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone meanwhile
        return b""


def test_invalid_plan_exits_2_with_location(home: Path, tmp_path: Path) -> None:
    plan = tmp_path / "broken.yml"
    plan.write_text("levels:\n  - services:\n      web:\n        cuont: 2\n")
    proc = cei(home, "launch", str(plan), check=2)
    assert f"{plan}:4" in proc.stderr
    assert "count" in proc.stderr  # did you mean
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["launch", "no-such-plan.yml"], "no-such-plan.yml"),
    (["launch", str(PLANS / "counted.yml"), "--var", "oops"], "KEY=VALUE"),
    (["status", "nope"], "nope"),
    (["terminate", "nope"], "nope"),
])
def test_usage_errors_exit_2_without_traceback(home: Path, args: list[str], needle: str) -> None:
    proc = cei(home, *args, check=2)
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_state_files_are_private(home: Path) -> None:
    cei(home, "launch", str(PLANS / "counted.yml"), "--name", "p1", check=0)
    assert (home.stat().st_mode & 0o777) == 0o700
    assert (home / "cei.db").stat().st_mode & 0o777 == 0o600
    for path in (home / "runs" / "p1").rglob("*"):
        if path.is_dir() and path.parent.name in ("runs", "p1", "logs", "nodes"):
            assert path.stat().st_mode & 0o077 == 0, path
    db = (home / "cei.db").read_bytes() + (home / "cei.db-wal").read_bytes() \
        if (home / "cei.db-wal").exists() else (home / "cei.db").read_bytes()
    assert b"PRIVATE KEY" not in db
    json.dumps(cei_json(home, "history", "p1"))  # history is plain JSON


def test_terminate_of_a_dead_node_skips_its_program_and_succeeds(home: Path) -> None:
    cei(home, "launch", str(PLANS / "counted.yml"), "--name", "dead1", check=0)
    status_file = home / "runs" / "dead1" / "nodes" / "worker-0" / "status.json"
    node_pid = json.loads(status_file.read_text())["pid"]
    os.kill(node_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{node_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    down = cei(home, "terminate", "dead1", "--json", check=0)
    summary = ndjson(down.stdout)[-1]
    # the program is skipped because the cloud says the node is gone, not after an SSH wait
    assert any("no longer runs" in w for w in summary["warnings"])
    assert summary["remaining"] == []
