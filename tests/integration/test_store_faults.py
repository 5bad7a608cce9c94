"""The real `cei` and its $CEI_HOME: on a broken or full one, one clear message, exit 1, no
traceback, and a run that `cei terminate` finishes once space returns; on a sound one, one
database file left between commands."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cli_helpers import PLANS, REPO, cei, node_processes

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("args", [["list"], ["status", "x"], ["launch", str(PLANS / "counted.yml")],
                                  ["terminate", "x"], ["history", "x"]])
def test_a_home_that_cannot_be_written_is_one_clear_error(tmp_path: Path,
                                                          args: list[str]) -> None:
    (tmp_path / "file").write_text("not a directory\n")
    proc = cei(tmp_path / "file" / "home", *args, check=1)
    assert proc.stderr.startswith("error: the state store in ") and "Not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_full_disk_fails_the_launch_cleanly_and_terminate_finishes_it_later(
        home: Path) -> None:
    cei(home, "list", check=0)  # the store exists; now it may not grow much

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = (home / "cei.db").stat().st_size + 64 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(REPO)}
    launch = subprocess.run(
        [sys.executable, "-m", "launchplan", "launch", str(PLANS / "counted.yml"), "--name",
         "full", "--var", "n=2"], env=env, capture_output=True, text=True, timeout=180,
        preexec_fn=small_disk)
    assert launch.returncode == 1, launch.stdout + launch.stderr
    assert f"error: the state store in {home} cannot write: disk I/O error (is the disk " \
        "full?" in launch.stderr
    assert "Traceback" not in launch.stderr
    cei(home, "terminate", "full", check=0)
    status = json.loads(cei(home, "status", "full", "--cached", "--json").stdout)
    assert status["status"] == "terminated"
    assert node_processes(home) == []


def test_each_command_leaves_its_state_in_the_one_database_file(home: Path) -> None:
    """A user may copy cei.db alone: every command folds its -wal file back in as it exits
    (it closes its stores before it skips the interpreter's last collections)."""
    for args in (["launch", str(PLANS / "counted.yml"), "--name", "one", "--var", "n=2"],
                 ["status", "one"], ["terminate", "one"]):
        cei(home, *args, check=0)
        assert sorted(p.name for p in home.glob("cei.db*")) == ["cei.db"], args
