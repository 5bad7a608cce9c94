"""The header every remote command prints first (remote.session's wrapper), run by this
machine's own sh: found after whatever a login shell's rc files printed, never output."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from launchplan.remote.results import Tail
from launchplan.remote.session import _WRAPPER, _Stdout


def run_wrapped(command: str, cwd: Path, before: str = "") -> bytes:
    """stdout of `command` run the way a Session runs it, after a login shell printed
    `before`."""
    login = f"printf %s {shlex.quote(before)}; exec sh -c {shlex.quote(_WRAPPER)} cei-run " \
            f"{shlex.quote(command)}"
    return subprocess.run(["sh", "-c", login], cwd=cwd, capture_output=True, check=True,
                          timeout=30).stdout


@pytest.mark.parametrize("size", [1, 2, 5, 13, 4096])
@pytest.mark.parametrize("before", ["", "rc says hi\n", "no newline \x1ecei-head"])
def test_the_header_is_read_off_at_any_chunk_boundary(tmp_path: Path, size: int,
                                                      before: str) -> None:
    data = run_wrapped('echo "pid $$"; printf tail', tmp_path, before)
    tail = Tail()
    stdout = _Stdout(tail, None, None)
    for i in range(0, len(data), size):
        stdout.add(data[i:i + size])
    stdout.finish()
    assert tail.text() == f"{before}pid {stdout.group}\ntail"
    assert stdout.group is not None and stdout.group.isdigit()
    assert stdout.login_dir == str(tmp_path)


def test_a_login_directory_may_hold_a_newline(tmp_path: Path) -> None:
    odd = tmp_path / "two\nlines \u00e9"
    odd.mkdir()
    tail = Tail()
    stdout = _Stdout(tail, None, None)
    stdout.add(run_wrapped("echo out", odd))
    stdout.finish()
    assert (stdout.login_dir, tail.text()) == (str(odd), "out\n")


def test_the_command_leads_its_own_process_group(tmp_path: Path) -> None:
    """Started by a shell that is not a group leader, the wrapper goes through setsid."""
    inner = f"exec sh -c {shlex.quote(_WRAPPER)} cei-run " \
            + shlex.quote('read -r s </proc/$$/stat; set -- ${s##*) }; echo "$3 $$"')
    # a child of a non-interactive shell is not a group leader: the wrapper must move
    data = subprocess.run(["sh", "-c", f"sh -c {shlex.quote(inner)}; :"], cwd=tmp_path,
                          capture_output=True, check=True, timeout=30,
                          start_new_session=True).stdout
    tail = Tail()
    stdout = _Stdout(tail, None, None)
    stdout.add(data)
    stdout.finish()
    group, pid = tail.text().split()
    assert group == pid == stdout.group != str(os.getpgrp())
