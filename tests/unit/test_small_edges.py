"""Small rough edges: each line of a program's output tagged in the node log, the embedded
bus private, counts in words."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from launchplan.cli.main import cli
from launchplan.cli.output import run_cli
from launchplan.demo.messaging import connect, filesystem_url
from launchplan.levels.nodelog import NodeLog


def test_every_line_of_a_chunk_gets_its_prefix(tmp_path: Path) -> None:
    log = NodeLog(tmp_path / "n.log")
    write = log.stream("ready")
    write("stderr", b"one\ntwo\nthree")
    write("stdout", b"four\n")
    log.close()
    assert (tmp_path / "n.log").read_text().splitlines() == [
        "[ready stderr] one", "[ready stderr] two", "[ready stderr] three", "[ready stdout] four"]


def test_the_embedded_bus_is_private(tmp_path: Path) -> None:
    folder = tmp_path / "home" / "bus"
    with connect(filesystem_url(folder)) as bus:
        bus.publish("q", {"secret": 1})
        assert bus.get("q", 5) == {"secret": 1}
        for path in (folder, folder / "holders"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
        files = [*folder.glob("queues.db*"), *(folder / "holders").iterdir()]
        assert {p.name for p in files} >= {"queues.db", "queues.db-wal", "queues.db-shm"}
        assert len(files) == 4  # and this consumer's lock
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_counts_are_in_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "one.yml"
    plan.write_text("plan: one\nlevels:\n  - services:\n      a: {}\n")
    monkeypatch.setattr("sys.argv", ["cei", "validate", str(plan)])
    assert run_cli(cli) == 0
    assert capsys.readouterr().out == f"{plan}: valid (1 level, 1 service, 1 node)\n"
