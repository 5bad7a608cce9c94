"""Process identity and atomic status files, as the provider uses them."""

from __future__ import annotations

import os
from pathlib import Path

from launchplan.providers.local import node_hostname, node_slug
from launchplan.providers.localnode.procinfo import (
    cwd_is,
    is_alive,
    is_node_process,
    read_json,
    starttime,
    write_json_atomic,
)


def test_identity_of_this_process() -> None:
    me = os.getpid()
    started = starttime(me)
    assert started is not None and started > 0
    assert is_alive(me, started)
    assert not is_alive(me, started + 1)
    assert not is_alive(me, None)
    assert cwd_is(me, Path.cwd().resolve())
    assert not cwd_is(me, Path("/no/such/dir"))
    assert not is_node_process(me, started, Path("/no/such/node/dir"))
    assert not is_node_process(None, started, Path("/"))


def test_gone_process_has_no_identity() -> None:
    assert starttime(2**22 + 12345) is None
    assert not is_alive(2**22 + 12345, 1)


def test_atomic_json(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    assert read_json(path) is None
    write_json_atomic(path, {"state": "running"})
    assert read_json(path) == {"state": "running"}
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
    path.write_text("[1, 2]")
    assert read_json(path) is None


def test_node_names() -> None:
    assert node_slug("db/1") == "db-1"
    assert node_hostname("demo", "db", "db/1") == "db-1.demo.cei.local"
