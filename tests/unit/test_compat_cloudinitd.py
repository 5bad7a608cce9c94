"""compat: cloudinitd and local_exe: what a node's stage gets, and programs run on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

from launchplan.ctx.environment import node_environment
from launchplan.errors import CommandTimeout, Interrupted, PlanError
from launchplan.plan import load_plan, render_service
from launchplan.remote.local import LocalSession


def write(tmp_path: Path, plan: str, files: dict[str, str] | None = None) -> Path:
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "plan.yml"
    path.write_text(textwrap.dedent(plan))
    return path


COMPAT = """\
    levels:
      - services:
          db:
            compat: cloudinitd
            bootconf: db.json
            local_exe: true
            config: {port: 5432, user: "o'neil", bad-name: x, list: [1, 2]}
            boot: {command: "true"}
"""


def test_compat_stages_bootconf_and_bootenv(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, COMPAT, {"db.json": '{"port": $port, "who": "${user}",'
                                                         ' "cost": "$$5"}\n'}))
    (node,) = render_service(plan, "db", "r1")
    assert node.compat == "cloudinitd" and node.local_exe and not node.needs_ssh
    files = dict(node.stage_files)
    assert set(files) == {"bootconf.json", "db.json", "bootenv.sh"}
    assert json.loads(files["bootconf.json"]) == {"port": 5432, "who": "o'neil", "cost": "$5"}
    assert files["db.json"] == files["bootconf.json"]
    script = tmp_path / "show.sh"
    script.write_text(files["bootenv.sh"] + 'printf "%s|%s|%s|%s" "$port" "$user" "$who" '
                                            '"$list"\n')
    shown = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=30)
    assert shown.stdout == "5432|o'neil|o'neil|[1, 2]"  # deps, then bootconf's keys
    assert "bad-name" not in files["bootenv.sh"]
    env = node_environment(node, "/stage")
    assert env["CEI_OUTPUT"] == "/stage/bootout.json"


def test_compat_without_bootconf_still_exports_deps(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, COMPAT.replace("            bootconf: db.json\n", "")))
    (node,) = render_service(plan, "db", "r1")
    assert set(node.stage_files) == {"bootenv.sh"}
    assert "export port=5432" in node.stage_files["bootenv.sh"]


def test_without_compat_nothing_is_staged(tmp_path: Path) -> None:
    text = COMPAT.replace("            compat: cloudinitd\n", "").replace(
        "            bootconf: db.json\n", "")
    (node,) = render_service(load_plan(write(tmp_path, text)), "db", "r1")
    assert node.stage_files == {} and node.compat is None
    assert node_environment(node, "/stage")["CEI_OUTPUT"] == "/stage/output.json"


@pytest.mark.parametrize(("change", "files", "where", "message"), [
    (("            compat: cloudinitd\n", ""), {"db.json": "{}"}, "plan.yml:4",
     "bootconf is only used with compat: cloudinitd"),
    (("", ""), {"db.json": '{\n"a": "$nope"}'}, "db.json:2",
     "$nope is not a key of the service's config"),
    (("", ""), {}, "plan.yml:5", "file not found"),
    (("local_exe: true", "local_exe: true\n            agent: true"), {"db.json": "{}"},
     "plan.yml:6", "local_exe runs programs on this machine"),
])
def test_compat_checks_before_launch(tmp_path: Path, change: tuple[str, str],
                                     files: dict[str, str], where: str, message: str) -> None:
    text = COMPAT.replace(*change) if change[0] else COMPAT
    with pytest.raises(PlanError) as info:
        load_plan(write(tmp_path, text, files))
    assert where in str(info.value) and message in str(info.value)


# ----------------------------------------------------------------- LocalSession


def test_local_argv_is_never_resplit(tmp_path: Path) -> None:
    tricky = ["with space", "it's", "$HOME", "`id`", "a;b", "", "*", "-n"]
    script = "import json, os, sys; print(json.dumps([sys.argv[1:], os.getcwd(), os.environ['X']]))"
    result = LocalSession().run_argv(["python3", "-c", script, *tricky], cwd=str(tmp_path),
                                     env={"X": "$(id)"}, timeout=30)
    assert result.status == 0
    assert json.loads(result.stdout_tail) == [tricky, str(tmp_path), "$(id)"]


def test_local_exit_status_output_and_missing_program(tmp_path: Path) -> None:
    seen: list[tuple[str, bytes]] = []
    result = LocalSession().run_argv(["sh", "-c", "echo out; echo err >&2; exit 3"],
                                     timeout=30, on_output=lambda s, c: seen.append((s, c)))
    assert (result.status, result.stdout_tail, result.stderr_tail) == (3, "out\n", "err\n")
    assert ("stdout", b"out\n") in seen and ("stderr", b"err\n") in seen
    missing = LocalSession().run_argv([str(tmp_path / "nope")], timeout=30)
    assert missing.status == 127 and "nope" in missing.stderr_tail


def test_local_timeout_stops_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        LocalSession().run_argv(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"],
                                timeout=1)
    assert time.monotonic() - started < 30
    child = int(pidfile.read_text())
    assert _gone(child)


def test_local_cancel_interrupts(tmp_path: Path) -> None:
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    try:
        with pytest.raises(Interrupted):
            LocalSession().run_argv(["sleep", "60"], timeout=60, cancel=cancel)
    finally:
        timer.cancel()


def test_local_files(tmp_path: Path) -> None:
    here = LocalSession()
    stage = tmp_path / "a" / "b"
    here.makedirs(str(stage), 0o700)
    assert stage.is_dir() and (stage.stat().st_mode & 0o777) == 0o700
    here.put(b"data", str(stage / "f"), 0o600)
    assert here.get(str(stage / "f")) == b"data" and here.get(str(stage / "none")) is None
    src = tmp_path / "prog"
    src.write_text("#!/bin/sh\n")
    here.upload(src, str(stage / "p"), 0o700)
    assert os.access(stage / "p", os.X_OK)
    assert sorted(p.name for p in stage.iterdir()) == ["f", "p"]  # no temporary files left


def _gone(pid: int, bound: float = 10.0) -> bool:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return True
        if "\nState:\tZ" in status:
            return True
        time.sleep(0.1)
    return False
