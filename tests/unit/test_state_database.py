"""The databases under the store: migrations run once however many upgrade at once, and a
PostgreSQL server that goes away (a clear error; what was done is written once it is back)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launchplan.errors import StateUnavailableError
from launchplan.state import Store
from launchplan.state.schema import SCHEMA_VERSION, statements
from launchplan.state.sqlite import SQLiteDatabase
from tests.pgserver import PostgresServer

REPO = Path(__file__).resolve().parents[2]
OPENER = """
import os, sys, time
from launchplan.state import Store
deadline = time.monotonic() + 60
while not os.path.exists(sys.argv[3]) and time.monotonic() < deadline:
    time.sleep(0.005)
with Store(sys.argv[1], sys.argv[2]) as store:
    store.append_event("r", "opened", None, {"pid": os.getpid()})
"""


def test_processes_upgrading_one_database_at_once_agree(cei_home: Path, state_url: str,
                                                        tmp_path: Path) -> None:
    url = state_url or f"sqlite://{tmp_path}/race.db"  # empty: the racers make the schema
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    racers = [subprocess.Popen([sys.executable, "-c", OPENER, str(cei_home), url, str(go)],
                               env=env, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(1.0)  # every racer is waiting at the line
    go.touch()
    errors = [racer.communicate(timeout=120)[1] for racer in racers]
    assert [racer.returncode for racer in racers] == [0] * 4, errors
    with Store(cei_home, url) as store, store._write("tests") as conn:
        assert store._db.schema_version(conn) == SCHEMA_VERSION
        seqs = [e.seq for e in store.events("r")]
    assert seqs == [1, 2, 3, 4]


def test_a_version_3_sqlite_store_keeps_its_locks_through_the_upgrade(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    conn = sqlite3.connect(str(home / "cei.db"))
    for version in range(3):
        for sql in statements(version, SQLiteDatabase.autoid, SQLiteDatabase.text):
            conn.execute(sql)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO runs VALUES ('old', 'p', 'p.yml', 'ready', 't', 't', '{}')")
    conn.execute("INSERT INTO locks VALUES ('old', 1, 1, 'far-host', 't')")
    conn.commit()
    conn.close()
    with Store(home, "") as store:
        record = store.lock_record("old")
        assert record is not None and (record.host, record.expires) == ("far-host", None)
        assert store.run_keys("old") == []


def test_writes_while_the_database_is_down_are_written_once_it_is_back(
        own_postgres: PostgresServer, cei_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", own_postgres.password)
    url = own_postgres.create_database()
    with Store(cei_home, url) as store:
        store.create_run("r1", "demo", "demo.yml")
        intent = store.record_intent("r1", "web/0", "ec2", {}, "tok")
        own_postgres.stop()
        with pytest.raises(StateUnavailableError, match=f"{url} is unreachable"):
            store.record_resource_id(intent, "i-1")  # made in the cloud: must not be lost
        with pytest.raises(StateUnavailableError):
            store.append_event("r1", "resource", "web/0", {"state": "created"})
        with pytest.raises(StateUnavailableError):
            store.record_intent("r1", "web/1", "ec2", {}, "tok-1")  # stops a create: not kept
        with pytest.raises(StateUnavailableError):
            store.nodes("r1")
        assert store.pending_writes == 2
        assert store.flush_pending(wait=0.3, interval=0.1) == 2  # still down
        own_postgres.start()
        assert store.flush_pending(wait=60) == 0
        assert [(r.node, r.resource_id, r.state) for r in store.resources("r1")] == [
            ("web/0", "i-1", "created")]
        assert [e.kind for e in store.events("r1")] == ["resource"]
    with Store(cei_home, url) as again:
        assert again.get_run("r1").name == "r1"


def test_a_store_on_a_database_that_is_down_is_one_clear_error(
        own_postgres: PostgresServer, cei_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", own_postgres.password)
    url = own_postgres.create_database()
    own_postgres.stop()
    with pytest.raises(StateUnavailableError,
                       match=f"cannot connect to the state database {url}: .*refused"):
        Store(cei_home, url)
    monkeypatch.setenv("PGPASSWORD", "wrong")
    own_postgres.start()
    with pytest.raises(StateUnavailableError, match="password authentication failed"):
        Store(cei_home, url)
