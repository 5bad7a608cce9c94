"""Storage faults are one clear message (exit 1), never a traceback; a merely busy database is
waited for."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from launchplan.errors import EXIT_FAILED, StoreError
from launchplan.state import Store


def test_first_commands_racing_on_a_fresh_home_all_open_it(tmp_path: Path) -> None:
    """Switching a new database to WAL is refused at once to all but one of the connections
    that race to do it (no busy timeout applies): each must try again, not fail."""
    failures: list[BaseException] = []
    for trial in range(60):
        home = tmp_path / f"home{trial}"
        start = threading.Barrier(6)

        def open_store(home: Path = home, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                Store(home).close()
            except BaseException as exc:  # collected, asserted below
                failures.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert failures == []


def test_a_home_that_cannot_be_created_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory\n")
    with pytest.raises(StoreError) as info:
        Store(tmp_path / "file" / "home")
    assert info.value.exit_code == EXIT_FAILED
    assert str(info.value) == (f"the state store in {tmp_path / 'file' / 'home'} cannot open: "
                               f"Not a directory: {tmp_path / 'file' / 'home'}")


def test_a_damaged_database_is_one_clear_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    (tmp_path / "cei.db").write_bytes(b"this is not an SQLite database, not at all" * 100)
    (tmp_path / "cei.db").chmod(0o600)
    with pytest.raises(StoreError, match="cannot open: file is not a database"):
        Store(tmp_path)
